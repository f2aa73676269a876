"""The tables of a workspace database, as SQLAlchemy 2 typed models.

The tables are created by the scripted migrations in `migrations.py`, never by `metadata.create_all`,
so that an old database and a new one end up with the same schema; a test checks the two agree.
All timestamps are UTC.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, DateTime, Float, ForeignKey, Integer, String, Text, TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class EditStatus(enum.StrEnum):
    DRAFT = "draft"  # being written, not to be applied yet
    QUEUED = "queued"  # waiting for its turn, in `position` order
    APPLYING = "applying"  # the engine is training it now
    APPLIED = "applied"  # in the model; `apply_order` says when
    FAILED = "failed"  # the engine gave up; `error` says why
    ROLLED_BACK = "rolled_back"  # was applied, then undone


def utc_now() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator):
    """SQLite keeps no time zone: store naive UTC, hand back aware UTC datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UtcDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Workspace(Base):
    """The model the workspace's applied edits belong to; one row per database."""

    __tablename__ = "workspace"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_source: Mapped[str] = mapped_column(String(4096))  # "default" or a path
    fingerprint: Mapped[str] = mapped_column(String(256))
    layer: Mapped[int] = mapped_column(Integer)
    module_name: Mapped[str] = mapped_column(String(512))
    settings_json: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class Edit(Base):
    __tablename__ = "edit"
    __table_args__ = (
        CheckConstraint(
            "status IN ('draft', 'queued', 'applying', 'applied', 'failed', 'rolled_back')", name="edit_status_valid"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    position: Mapped[int] = mapped_column(Integer, index=True)  # stable list order, also the queue order
    prompt: Mapped[str] = mapped_column(Text)
    target: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default=EditStatus.DRAFT.value, index=True)
    apply_order: Mapped[int | None] = mapped_column(Integer, unique=True)  # 1, 2, ... while applied
    error: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text, default="")
    # Lists of [prompt, expected answer]; read whole, never queried, so JSON rather than tables.
    portability: Mapped[list[Any]] = mapped_column(default=list)
    ood: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now, onupdate=utc_now)

    paraphrases: Mapped[list[Paraphrase]] = relationship(
        order_by="Paraphrase.position", cascade="all, delete-orphan", passive_deletes=True
    )
    locality: Mapped[list[LocalityPrompt]] = relationship(
        order_by="LocalityPrompt.position", cascade="all, delete-orphan", passive_deletes=True
    )
    outcomes: Mapped[list[EditOutcome]] = relationship(
        order_by="EditOutcome.id", cascade="all, delete-orphan", passive_deletes=True, back_populates="edit"
    )


class Paraphrase(Base):
    __tablename__ = "paraphrase"

    id: Mapped[int] = mapped_column(primary_key=True)
    edit_id: Mapped[int] = mapped_column(ForeignKey("edit.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)


class LocalityPrompt(Base):
    __tablename__ = "locality_prompt"

    id: Mapped[int] = mapped_column(primary_key=True)
    edit_id: Mapped[int] = mapped_column(ForeignKey("edit.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text, default="")


class EditOutcome(Base):
    """What one application of an edit did; an edit applied, undone and applied again has two rows."""

    __tablename__ = "edit_outcome"

    id: Mapped[int] = mapped_column(primary_key=True)
    edit_id: Mapped[int] = mapped_column(ForeignKey("edit.id", ondelete="CASCADE"), index=True)
    apply_order: Mapped[int] = mapped_column(Integer)
    # [{kind, form, question, expected, before, after, route: {memory, kind, score, threshold}, passed}, ...]
    answers: Mapped[list[Any]] = mapped_column(default=list)
    rel: Mapped[float | None] = mapped_column(Float)
    gen: Mapped[float | None] = mapped_column(Float)
    loc: Mapped[float | None] = mapped_column(Float)
    gen_success: Mapped[float | None] = mapped_column(Float)
    extra_metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)  # e.g. portability, ood by name
    loss_curve: Mapped[list[Any]] = mapped_column(default=list)
    activation_score: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    shard_index: Mapped[int | None] = mapped_column(Integer)
    seconds: Mapped[float | None] = mapped_column(Float)
    # Relative to the database's folder; NULL once the file is pruned or the edit rolled back.
    checkpoint_path: Mapped[str | None] = mapped_column(Text)
    # "full": the whole state after this edit; "delta": what this edit changed since the previous one.
    checkpoint_kind: Mapped[str] = mapped_column(String(8), default="full")
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    edit: Mapped[Edit] = relationship(back_populates="outcomes")


class RoutingProbe(Base):
    """A prompt the user sent through the edited model, and which memory answered it."""

    __tablename__ = "routing_probe"

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt: Mapped[str] = mapped_column(Text)
    form: Mapped[str] = mapped_column(String(8), default="raw")  # how it was asked: raw or chat
    memory_index: Mapped[int] = mapped_column(Integer, default=-1)  # -1: the main memory
    memory_kind: Mapped[str] = mapped_column(String(16), default="main")
    score: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    answer: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
