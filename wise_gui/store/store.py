"""Opening a workspace database and the queries the GUI, the CLI and the engine run on it.

Threads: a `Store` may be shared, a session may not. Every method opens its own short session and
returns plain frozen dataclasses, so results can cross from a worker thread to the GUI thread.
One process applies edits at a time (the apply order is read, then written).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import platformdirs
import torch
from sqlalchemy import ColumnElement, Engine, create_engine, delete, event, func, or_, select, update
from sqlalchemy.orm import Session, selectinload, sessionmaker

from wise_gui.core.edits import EditRequest, LocalityCheck
from wise_gui.store import migrations
from wise_gui.store.checkpoints import checkpoint_folder, checkpoint_name, write_checkpoint_atomic
from wise_gui.store.errors import FingerprintMismatch, StoreError
from wise_gui.store.lock import WorkspaceLock
from wise_gui.store.schema import (
    Edit,
    EditOutcome,
    EditStatus,
    LocalityPrompt,
    Paraphrase,
    RoutingProbe,
    Workspace,
)

DB_FILE_NAME = "workspace.sqlite"

# Statuses whose content is in the model: editing or deleting them would make the list lie.
_LOCKED_STATUSES = (EditStatus.APPLYING.value, EditStatus.APPLIED.value)
_QUEUEABLE_STATUSES = (EditStatus.DRAFT.value, EditStatus.FAILED.value, EditStatus.ROLLED_BACK.value)


def default_db_path() -> Path:
    """`workspace.sqlite` in the user data folder; WISE_GUI_DATA_DIR overrides the folder (tests use it)."""
    override = os.environ.get("WISE_GUI_DATA_DIR")
    folder = Path(override) if override else Path(platformdirs.user_data_dir("wise-gui"))
    return folder / DB_FILE_NAME


def next_free_path(path: str | Path) -> Path:
    """`path` if nothing is there, else `name-2.sqlite`, `name-3.sqlite`, ...: where a new workspace can go."""
    path = Path(path)
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    return candidate


# ----------------------------------------------------------------------------------------------
# What the queries return


@dataclass(frozen=True)
class WorkspaceInfo:
    model_source: str
    fingerprint: str
    layer: int
    module_name: str
    settings_json: str
    created_at: datetime


@dataclass(frozen=True)
class EditRow:
    """One line of the edit table: the edit and the scores of its latest outcome, if any."""

    id: int
    position: int
    status: str
    apply_order: int | None
    prompt: str
    target: str
    subject: str
    error: str | None
    source: str
    created_at: datetime
    updated_at: datetime
    rel: float | None = None
    gen: float | None = None
    loc: float | None = None
    gen_success: float | None = None


@dataclass(frozen=True)
class OutcomeFields:
    """What the engine measured while applying one edit."""

    answers: list[dict[str, Any]] = field(default_factory=list)  # QuestionAnswer.to_dict() of each question
    rel: float | None = None
    gen: float | None = None
    loc: float | None = None
    gen_success: float | None = None
    extra_metrics: dict[str, Any] = field(default_factory=dict)
    loss_curve: list[float] = field(default_factory=list)
    activation_score: float | None = None
    threshold: float | None = None
    shard_index: int | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class OutcomeRecord:
    id: int
    edit_id: int
    apply_order: int
    fields: OutcomeFields
    checkpoint_path: Path | None  # absolute; None once pruned or rolled back
    checkpoint_kind: str
    created_at: datetime


@dataclass(frozen=True)
class EditDetail:
    id: int
    position: int
    status: str
    apply_order: int | None
    error: str | None
    request: EditRequest
    outcome: OutcomeRecord | None  # the latest one


@dataclass(frozen=True)
class CheckpointRef:
    apply_order: int
    edit_id: int
    path: Path
    kind: str = "full"  # "full": the whole state after the edit; "delta": what the edit changed


@dataclass(frozen=True)
class ProbeRecord:
    id: int
    prompt: str
    form: str
    memory_index: int  # -1: the main memory
    memory_kind: str
    score: float | None
    threshold: float | None
    answer: str
    created_at: datetime


@dataclass(frozen=True)
class StoreSummary:
    path: Path
    workspace: WorkspaceInfo | None
    total: int
    by_status: dict[str, int]
    latest_checkpoint: CheckpointRef | None


# ----------------------------------------------------------------------------------------------
# Conversions between rows and plain data


def parse_statuses(status: str | Iterable[str] | None) -> list[str] | None:
    if status is None:
        return None
    names = [status] if isinstance(status, str) else list(status)
    known = {s.value for s in EditStatus}
    for name in names:
        if name not in known:
            raise StoreError(f"Unknown edit status {name!r}: choose one of {', '.join(sorted(known))}.")
    return names


def _edit_filter(text: str, status: str | Iterable[str] | None) -> list[ColumnElement[bool]]:
    conditions = []
    if text:
        conditions.append(
            or_(*(column.contains(text, autoescape=True) for column in (Edit.prompt, Edit.target, Edit.subject)))
        )
    names = parse_statuses(status)
    if names is not None:
        conditions.append(Edit.status.in_(names))
    return conditions


def _request(edit: Edit) -> EditRequest:
    return EditRequest(
        prompt=edit.prompt,
        target=edit.target,
        subject=edit.subject,
        paraphrases=tuple(p.text for p in edit.paraphrases),
        locality=tuple(LocalityCheck(c.prompt, c.answer) for c in edit.locality),
        portability=tuple((p, a) for p, a in edit.portability),
        ood=tuple((p, a) for p, a in edit.ood),
        source=edit.source,
    )


def edit_columns(request: EditRequest) -> dict[str, Any]:
    """The edit table's columns for `request` (children excluded)."""
    return {
        "prompt": request.prompt,
        "target": request.target,
        "subject": request.subject,
        "source": request.source,
        "portability": [list(pair) for pair in request.portability],
        "ood": [list(pair) for pair in request.ood],
    }


def _children(request: EditRequest) -> tuple[list[Paraphrase], list[LocalityPrompt]]:
    return (
        [Paraphrase(position=i, text=text) for i, text in enumerate(request.paraphrases)],
        [LocalityPrompt(position=i, prompt=c.prompt, answer=c.answer) for i, c in enumerate(request.locality)],
    )


def next_position(session: Session) -> int:
    return session.scalar(select(func.coalesce(func.max(Edit.position), 0))) + 1


def next_apply_order(session: Session) -> int:
    return session.scalar(select(func.coalesce(func.max(Edit.apply_order), 0))) + 1


def record_applied(
    session: Session,
    edit_id: int,
    outcome: OutcomeFields,
    checkpoint_relpath: str | None,
    *,
    apply_order: int | None = None,
    checkpoint_kind: str = "full",
) -> int:
    """Marks `edit_id` applied, with its outcome and checkpoint, in `session`'s transaction; returns its apply order.

    The caller commits (or rolls back) everything at once; the checkpoint file must already be on disk,
    named for `apply_order` (default: next_apply_order(session)).
    """
    if apply_order is None:
        apply_order = next_apply_order(session)
    edit = session.get(Edit, edit_id)
    if edit is None:
        raise StoreError(f"Edit {edit_id} does not exist (deleted meanwhile?).")
    if edit.status == EditStatus.APPLIED:
        raise StoreError(f"Edit {edit_id} is already applied (as number {edit.apply_order}).")
    edit.status = EditStatus.APPLIED.value
    edit.apply_order = apply_order
    edit.error = None
    session.add(
        EditOutcome(
            edit_id=edit_id,
            apply_order=apply_order,
            answers=list(outcome.answers),
            rel=outcome.rel,
            gen=outcome.gen,
            loc=outcome.loc,
            gen_success=outcome.gen_success,
            extra_metrics=dict(outcome.extra_metrics),
            loss_curve=[float(x) for x in outcome.loss_curve],
            activation_score=outcome.activation_score,
            threshold=outcome.threshold,
            shard_index=outcome.shard_index,
            seconds=outcome.seconds,
            checkpoint_path=checkpoint_relpath,
            checkpoint_kind=checkpoint_kind,
        )
    )
    session.flush()  # constraint violations surface here, inside the caller's transaction
    return apply_order


def _set_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (the GUI list) never wait for the applying worker
    cursor.execute("PRAGMA foreign_keys=ON")  # SQLite leaves them off unless asked, per connection
    cursor.close()


# ----------------------------------------------------------------------------------------------
# The store


class Store:
    """One workspace database: the engine, a session factory and the queries on top.

    `lock`: held while this store's process may apply edits (see `open_workspace`); a store opened
    read-only lists, exports and probes, and refuses to apply or undo."""

    def __init__(self, path: Path, lock: WorkspaceLock | None = None, read_only: bool = False):
        self.path = path
        self.folder = path.parent
        self.checkpoint_dir = checkpoint_folder(path)
        self.lock = lock
        self.read_only = read_only
        # A connection factory rather than a URL: any path works (spaces, '#', '?', unicode). Not bound to the
        # creating thread: the pool hands a connection to one thread at a time, not always the same one.
        self.engine: Engine = create_engine(
            "sqlite://", creator=lambda: sqlite3.connect(str(path), check_same_thread=False))
        event.listen(self.engine, "connect", _set_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed when the block ends, rolled back if it raises."""
        with self._sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()
        if self.lock is not None:
            self.lock.release()

    def _writable(self, action: str) -> None:
        if self.read_only:
            raise StoreError(f"The workspace {self.path.name} is open read-only (another program applies edits "
                             f"to it): it cannot {action} here.")

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- workspace ---------------------------------------------------------------------------

    @property
    def workspace(self) -> WorkspaceInfo | None:
        with self.session() as session:
            row = session.scalar(select(Workspace).order_by(Workspace.id).limit(1))
            return None if row is None else _workspace_info(row)

    def _checkpoint_abspath(self, relpath: str | None) -> Path | None:
        return None if relpath is None else self.folder / relpath

    # -- reading edits -----------------------------------------------------------------------

    def count_edits(self, text: str = "", status: str | Iterable[str] | None = None) -> int:
        with self.session() as session:
            return session.scalar(select(func.count(Edit.id)).where(*_edit_filter(text, status)))

    def edit_page(
        self,
        offset: int = 0,
        limit: int = 200,
        *,
        text: str = "",
        status: str | Iterable[str] | None = None,
        order_by: str = "position",
        descending: bool = False,
    ) -> list[EditRow]:
        """Rows `offset` .. `offset + limit` of the filtered, sorted list, for a lazily filled table."""
        latest = (
            select(EditOutcome.edit_id, func.max(EditOutcome.id).label("outcome_id"))
            .group_by(EditOutcome.edit_id)
            .subquery()
        )
        sortable = {
            "id": Edit.id, "position": Edit.position, "status": Edit.status, "apply_order": Edit.apply_order,
            "prompt": Edit.prompt.collate("NOCASE"), "target": Edit.target.collate("NOCASE"),
            "subject": Edit.subject.collate("NOCASE"),
            "created_at": Edit.created_at, "updated_at": Edit.updated_at,
            "rel": EditOutcome.rel, "gen": EditOutcome.gen, "loc": EditOutcome.loc,
            "gen_success": EditOutcome.gen_success,
        }
        if order_by not in sortable:
            raise StoreError(f"Cannot sort edits by {order_by!r}: choose one of {', '.join(sortable)}.")
        column = sortable[order_by]
        # Empty values (no apply order, no score yet) sort last either way; id breaks ties for a stable order.
        ordering = (column.desc() if descending else column.asc()).nulls_last()
        query = (
            select(Edit, EditOutcome.rel, EditOutcome.gen, EditOutcome.loc, EditOutcome.gen_success)
            .outerjoin(latest, latest.c.edit_id == Edit.id)
            .outerjoin(EditOutcome, EditOutcome.id == latest.c.outcome_id)
            .where(*_edit_filter(text, status))
            .order_by(ordering, Edit.id)
            .offset(offset)
            .limit(limit)
        )
        with self.session() as session:
            return [
                EditRow(
                    id=e.id, position=e.position, status=e.status, apply_order=e.apply_order, prompt=e.prompt,
                    target=e.target, subject=e.subject, error=e.error, source=e.source, created_at=e.created_at,
                    updated_at=e.updated_at, rel=rel, gen=gen, loc=loc, gen_success=gen_success,
                )
                for e, rel, gen, loc, gen_success in session.execute(query)
            ]

    def _details(self, session: Session, query) -> list[EditDetail]:
        edits = session.scalars(
            query.options(selectinload(Edit.paraphrases), selectinload(Edit.locality), selectinload(Edit.outcomes))
        ).all()
        return [
            EditDetail(
                id=e.id,
                position=e.position,
                status=e.status,
                apply_order=e.apply_order,
                error=e.error,
                request=_request(e),
                outcome=self._outcome_record(e.outcomes[-1]) if e.outcomes else None,
            )
            for e in edits
        ]

    def _outcome_record(self, o: EditOutcome) -> OutcomeRecord:
        return OutcomeRecord(
            id=o.id,
            edit_id=o.edit_id,
            apply_order=o.apply_order,
            fields=OutcomeFields(
                answers=list(o.answers), rel=o.rel, gen=o.gen, loc=o.loc, gen_success=o.gen_success,
                extra_metrics=dict(o.extra_metrics), loss_curve=list(o.loss_curve),
                activation_score=o.activation_score, threshold=o.threshold, shard_index=o.shard_index,
                seconds=o.seconds,
            ),
            checkpoint_path=self._checkpoint_abspath(o.checkpoint_path),
            checkpoint_kind=o.checkpoint_kind,
            created_at=o.created_at,
        )

    def get_edit(self, edit_id: int) -> EditDetail:
        with self.session() as session:
            found = self._details(session, select(Edit).where(Edit.id == edit_id))
        if not found:
            raise StoreError(f"Edit {edit_id} does not exist.")
        return found[0]

    def edits(self, status: str | Iterable[str] | None = None) -> list[EditDetail]:
        """Every edit (with the given status) in list order, with its children: for export."""
        with self.session() as session:
            return self._details(session, select(Edit).where(*_edit_filter("", status)).order_by(Edit.position, Edit.id))

    def next_queued(self) -> EditDetail | None:
        """The queued edit whose turn it is (lowest position)."""
        with self.session() as session:
            found = self._details(
                session,
                select(Edit).where(Edit.status == EditStatus.QUEUED).order_by(Edit.position, Edit.id).limit(1),
            )
        return found[0] if found else None

    def applied_edits(self) -> list[EditDetail]:
        """The edits that are in the model, in the order they were applied."""
        with self.session() as session:
            return self._details(
                session, select(Edit).where(Edit.status == EditStatus.APPLIED).order_by(Edit.apply_order)
            )

    def latest_outcome(self, edit_id: int) -> OutcomeRecord | None:
        with self.session() as session:
            row = session.scalar(
                select(EditOutcome).where(EditOutcome.edit_id == edit_id).order_by(EditOutcome.id.desc()).limit(1)
            )
            return None if row is None else self._outcome_record(row)

    def latest_checkpoint(self) -> CheckpointRef | None:
        """The checkpoint of the last applied edit; None when no edit is applied (the model is unedited)."""
        with self.session() as session:
            return self._latest_checkpoint(session)

    def _latest_checkpoint(self, session: Session) -> CheckpointRef | None:
        refs = self._checkpoints(session, limit=1)
        return refs[0] if refs and refs[0].path is not None else None

    def _checkpoints(self, session: Session, limit: int | None = None,
                     up_to: int | None = None) -> list[CheckpointRef]:
        """The applied edits' checkpoints, newest first (path None where it is no longer kept)."""
        query = (
            select(Edit.apply_order, Edit.id, EditOutcome.checkpoint_path, EditOutcome.checkpoint_kind)
            .join(EditOutcome, (EditOutcome.edit_id == Edit.id) & (EditOutcome.apply_order == Edit.apply_order))
            .where(Edit.status == EditStatus.APPLIED)
            .order_by(Edit.apply_order.desc())
        )
        if up_to is not None:
            query = query.where(Edit.apply_order <= up_to)
        if limit is not None:
            query = query.limit(limit)
        return [CheckpointRef(row.apply_order, row.id, self._checkpoint_abspath(row.checkpoint_path),
                              row.checkpoint_kind) for row in session.execute(query)]

    def checkpoint_chain(self, up_to: int | None = None) -> list[CheckpointRef]:
        """The checkpoints that rebuild the state after apply order `up_to` (default: the last applied
        edit), oldest first: the latest full checkpoint at or before it and every delta after that.
        Empty when no edit is applied; StoreError when a needed file is gone."""
        with self.session() as session:
            refs = self._checkpoints(session, up_to=up_to)
        chain = []
        for ref in refs:
            if ref.path is None or not ref.path.is_file():
                raise StoreError(f"The state after edit number {ref.apply_order} of {self.path.name} is not kept any "
                                 "more (its checkpoint file is missing).")
            chain.append(ref)
            if ref.kind == "full":
                return chain[::-1]
        if chain:
            raise StoreError(f"{self.path.name} has applied edits but no full checkpoint of their state.")
        return []

    def summary(self) -> StoreSummary:
        with self.session() as session:
            counts = dict(session.execute(select(Edit.status, func.count(Edit.id)).group_by(Edit.status)).all())
            latest = self._latest_checkpoint(session)
        return StoreSummary(
            path=self.path,
            workspace=self.workspace,
            total=sum(counts.values()),
            by_status={s.value: counts.get(s.value, 0) for s in EditStatus},
            latest_checkpoint=latest,
        )

    # -- changing edits ----------------------------------------------------------------------

    def add_edit(self, request: EditRequest, status: str = EditStatus.DRAFT) -> int:
        problems = request.validate()
        if problems:
            raise StoreError(f"This edit cannot be saved: {'; '.join(problems)}.")
        parse_statuses(status)
        with self.session() as session:
            paraphrases, locality = _children(request)
            edit = Edit(
                **edit_columns(request), position=next_position(session), status=str(status),
                paraphrases=paraphrases, locality=locality,
            )
            session.add(edit)
            session.flush()
            return edit.id

    def _locked_edit(self, session: Session, edit_id: int, action: str) -> Edit:
        edit = session.get(Edit, edit_id)
        if edit is None:
            raise StoreError(f"Edit {edit_id} does not exist.")
        if edit.status in _LOCKED_STATUSES:
            raise StoreError(
                f"Edit {edit_id} is {edit.status}: it cannot be {action}. Undo it first, or duplicate it and change the copy."
            )
        return edit

    def update_edit(self, edit_id: int, request: EditRequest) -> None:
        """Replaces the content of an edit that is not in the model; its status and position stay."""
        problems = request.validate()
        if problems:
            raise StoreError(f"This edit cannot be saved: {'; '.join(problems)}.")
        with self.session() as session:
            edit = self._locked_edit(session, edit_id, "changed")
            for name, value in edit_columns(request).items():
                setattr(edit, name, value)
            edit.paraphrases, edit.locality = _children(request)

    def delete_edits(self, edit_ids: Iterable[int], including_applied: bool = False) -> int:
        """Deletes the edits, all or none: applied ones are refused (their content is in the model) unless
        `including_applied` (an import being undone)."""
        ids = list(edit_ids)
        with self.session() as session:
            locked = session.scalars(select(Edit.id).where(Edit.id.in_(ids), Edit.status.in_(_LOCKED_STATUSES))).all()
            if locked and not including_applied:
                raise StoreError(
                    f"{len(locked)} of the selected edits are applied (e.g. edit {locked[0]}); undo them before deleting."
                )
            # Children and outcomes go with them through ON DELETE CASCADE.
            return session.execute(delete(Edit).where(Edit.id.in_(ids))).rowcount

    def restore_edits(self, deleted: list[EditDetail]) -> list[int]:
        """Puts deleted edits back (an undone delete): their content, their status (an edit that was being
        applied is queued again) and their place in the list; returns their new ids, in order."""
        ids = []
        with self.session() as session:
            for detail in deleted:
                status = EditStatus.QUEUED if detail.status == EditStatus.APPLYING else detail.status
                if status in _LOCKED_STATUSES:
                    raise StoreError(f"Edit {detail.id} was applied; an applied edit cannot be restored by undo.")
                paraphrases, locality = _children(detail.request)
                edit = Edit(**edit_columns(detail.request), position=detail.position, status=str(status),
                            paraphrases=paraphrases, locality=locality)
                session.add(edit)
                session.flush()
                ids.append(edit.id)
        return ids

    def duplicate_edit(self, edit_id: int) -> int:
        """A draft copy placed right below the original; returns the copy's id."""
        with self.session() as session:
            original = session.get(Edit, edit_id)
            if original is None:
                raise StoreError(f"Edit {edit_id} does not exist.")
            request = _request(original)
            # Moving rows down is not a change of their content: updated_at stays.
            session.execute(
                update(Edit)
                .where(Edit.position > original.position)
                .values(position=Edit.position + 1, updated_at=Edit.updated_at)
            )
            paraphrases, locality = _children(request)
            copy = Edit(
                **edit_columns(request), position=original.position + 1, status=EditStatus.DRAFT.value,
                paraphrases=paraphrases, locality=locality,
            )
            session.add(copy)
            session.flush()
            return copy.id

    def _set_status(self, edit_ids: Iterable[int], status: EditStatus, allowed_from: tuple[str, ...]) -> int:
        with self.session() as session:
            return session.execute(
                update(Edit)
                .where(Edit.id.in_(list(edit_ids)), Edit.status.in_(allowed_from))
                .values(status=status.value, error=None)
            ).rowcount

    def mark_queued(self, edit_ids: Iterable[int]) -> int:
        """Queues drafts, failed and rolled-back edits (others are left alone); returns how many changed."""
        return self._set_status(edit_ids, EditStatus.QUEUED, _QUEUEABLE_STATUSES)

    def mark_draft(self, edit_ids: Iterable[int]) -> int:
        """Takes edits out of the queue (and failed ones back to drafts)."""
        return self._set_status(edit_ids, EditStatus.DRAFT, (EditStatus.QUEUED.value, EditStatus.FAILED.value))

    def mark_applying(self, edit_id: int) -> None:
        if not self._set_status([edit_id], EditStatus.APPLYING, _QUEUEABLE_STATUSES + (EditStatus.QUEUED.value,)):
            raise StoreError(f"Edit {edit_id} cannot be applied now (missing, or already applied).")

    def return_to_queue(self, edit_id: int) -> None:
        """An edit whose application was cancelled goes back to the queue, at its old place."""
        self._set_status([edit_id], EditStatus.QUEUED, (EditStatus.APPLYING.value,))

    def mark_failed(self, edit_id: int, error: str) -> None:
        with self.session() as session:
            edit = session.get(Edit, edit_id)
            if edit is not None and edit.status != EditStatus.APPLIED:
                edit.status, edit.error = EditStatus.FAILED.value, error

    def requeue_interrupted(self) -> int:
        """Edits left 'applying' by a crash go back to the queue; call once when the engine starts."""
        with self.session() as session:
            return session.execute(
                update(Edit)
                .where(Edit.status == EditStatus.APPLYING)
                .values(status=EditStatus.QUEUED.value, error="interrupted before it finished; queued again")
            ).rowcount

    # -- applying and undoing ----------------------------------------------------------------

    def save_applied(
        self, edit_id: int, outcome: OutcomeFields, tensors: dict[str, torch.Tensor], metadata: dict[str, str],
        kind: str = "full",
    ) -> CheckpointRef:
        """Writes the checkpoint of `edit_id` (the whole state after it, or its delta), then records the edit
        applied, all or nothing. The file is on disk before the transaction commits; if the transaction
        fails, the file is removed. After a full checkpoint, the files before the previous full one go."""
        self._writable("apply edits")
        if kind not in ("full", "delta"):
            raise StoreError(f"Unknown checkpoint kind {kind!r}.")
        path: Path | None = None
        try:
            with self.session() as session:
                order = next_apply_order(session)
                if kind == "delta" and not self._checkpoints(session, limit=1):
                    raise StoreError("The first applied edit needs a full checkpoint, not a delta.")
                path = self.checkpoint_dir / checkpoint_name(order, kind)
                write_checkpoint_atomic(path, tensors, metadata)
                record_applied(session, edit_id, outcome, path.relative_to(self.folder).as_posix(), apply_order=order,
                               checkpoint_kind=kind)
        except BaseException:
            if path is not None:
                path.unlink(missing_ok=True)
            raise
        if kind == "full":
            self._prune_checkpoints()
        return CheckpointRef(order, edit_id, path, kind)

    def _prune_checkpoints(self) -> None:
        """Keeps the two newest full checkpoints and the deltas after the older one (so the edits since it
        can be undone one by one); deletes the references to older files first, then the files."""
        with self.session() as session:
            fulls = session.scalars(
                select(EditOutcome.apply_order)
                .join(Edit, (EditOutcome.edit_id == Edit.id) & (EditOutcome.apply_order == Edit.apply_order))
                .where(Edit.status == EditStatus.APPLIED, EditOutcome.checkpoint_kind == "full",
                       EditOutcome.checkpoint_path.is_not(None))
                .order_by(EditOutcome.apply_order.desc()).limit(2)
            ).all()
            if len(fulls) < 2:
                return
            old = session.execute(
                select(EditOutcome.id, EditOutcome.checkpoint_path).where(
                    EditOutcome.checkpoint_path.is_not(None), EditOutcome.apply_order < fulls[1])
            ).all()
            session.execute(
                update(EditOutcome).where(EditOutcome.id.in_([r.id for r in old])).values(checkpoint_path=None)
            )
        for row in old:
            (self.folder / row.checkpoint_path).unlink(missing_ok=True)

    def next_apply_order(self) -> int:
        """The number the next applied edit gets."""
        with self.session() as session:
            return next_apply_order(session)

    def chain_bytes(self) -> tuple[int, int]:
        """(bytes of the current chain's full checkpoint, bytes of the deltas after it)."""
        chain = self.checkpoint_chain()
        if not chain:
            return 0, 0
        return chain[0].path.stat().st_size, sum(ref.path.stat().st_size for ref in chain[1:])

    def roll_back_last(self) -> int | None:
        """Undoes the last applied edit in the store; returns its id, or None when nothing is applied.

        Afterwards `checkpoint_chain()` rebuilds the state to load ([]: the unedited model). Refused when
        that earlier state is no longer kept."""
        self._writable("undo edits")
        with self.session() as session:
            applied = session.scalars(
                select(Edit).where(Edit.status == EditStatus.APPLIED).order_by(Edit.apply_order.desc()).limit(2)
            ).all()
            if not applied:
                return None
            last = applied[0]
            if len(applied) > 1:
                try:
                    self.checkpoint_chain(up_to=applied[1].apply_order)
                except StoreError:
                    raise StoreError(
                        f"Edit {last.id} cannot be undone: the state before it (after edit {applied[1].id}) is no "
                        "longer kept; only the edits since the last two full checkpoints can be undone."
                    ) from None
            outcome = self._latest_outcome_of(session, last)
            stale = outcome.checkpoint_path
            outcome.checkpoint_path = None
            last.status, last.apply_order = EditStatus.ROLLED_BACK.value, None
            edit_id = last.id
        if stale is not None:
            (self.folder / stale).unlink(missing_ok=True)
        return edit_id

    @staticmethod
    def _latest_outcome_of(session: Session, edit: Edit) -> EditOutcome:
        return session.scalars(
            select(EditOutcome)
            .where(EditOutcome.edit_id == edit.id, EditOutcome.apply_order == edit.apply_order)
            .order_by(EditOutcome.id.desc())
            .limit(1)
        ).one()

    # -- routing probes ----------------------------------------------------------------------

    def record_probe(self, prompt: str, form: str, memory_index: int, memory_kind: str, score: float | None,
                     threshold: float | None, answer: str) -> int | None:
        """Keeps a probe in the history (not in a workspace open read-only); returns its id."""
        if self.read_only:
            return None
        with self.session() as session:
            probe = RoutingProbe(prompt=prompt, form=form, memory_index=memory_index, memory_kind=memory_kind,
                                 score=score, threshold=threshold, answer=answer)
            session.add(probe)
            session.flush()
            return probe.id

    def recent_probes(self, limit: int = 100) -> list[ProbeRecord]:
        """The newest probes first."""
        with self.session() as session:
            rows = session.scalars(select(RoutingProbe).order_by(RoutingProbe.id.desc()).limit(limit)).all()
            return [ProbeRecord(p.id, p.prompt, p.form, p.memory_index, p.memory_kind, p.score, p.threshold, p.answer,
                                p.created_at) for p in rows]


def _workspace_info(row: Workspace) -> WorkspaceInfo:
    return WorkspaceInfo(row.model_source, row.fingerprint, row.layer, row.module_name, row.settings_json, row.created_at)


# ----------------------------------------------------------------------------------------------
# Opening


def _prepared(path: str | Path | None, create: bool) -> Path:
    """The database path, checked (read-only) and migrated to the current schema."""
    path = Path(path).expanduser() if path is not None else default_db_path()
    path = path.resolve()  # one lock and one checkpoint folder however the file is reached (symlinks)
    if path.exists():
        if path.is_dir():
            raise StoreError(f"{path} is a folder; a workspace is a .sqlite file.")
        migrations.check_openable(path)
    elif not create:
        raise StoreError(f"No workspace database at {path}.")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    migrations.migrate(path)
    return path


def open_store(path: str | Path | None = None, *, create: bool = True) -> Store:
    """The store at `path` (default: default_db_path()) without checking any model: for listing and import."""
    return Store(_prepared(path, create))


def open_workspace(
    path: str | Path | None = None,
    *,
    model_source: str,
    fingerprint: str,
    layer: int,
    module_name: str,
    settings_json: str = "{}",
    create: bool = True,
    new_workspace: bool = False,
    read_only: bool = False,
) -> Store:
    """The store at `path` for edits on the given model, locked for this process (WorkspaceInUse when
    another process holds it; read_only=True opens it without the lock, to browse, export and probe).

    - A database without a workspace row (new, or filled by `wise-gui import`) is claimed for this model.
    - Same fingerprint: the settings are updated; the layer and module may change only while no edit is applied.
    - Other fingerprint: FingerprintMismatch, since the applied edits and checkpoints fit the other model only.
    - new_workspace=True: start over for this model, but only in a database without edits; a database that
      holds edits is never cleared, pick a new path (see next_free_path) instead.
    """
    try:
        json.loads(settings_json)
    except (TypeError, json.JSONDecodeError) as exc:
        raise StoreError(f"The workspace settings are not valid JSON: {exc}") from None
    prepared = _prepared(path, create and not read_only)
    lock = None
    if not read_only:
        lock = WorkspaceLock(prepared)
        lock.acquire()
    store = Store(prepared, lock=lock, read_only=read_only)
    try:
        _claim(store, model_source, fingerprint, layer, module_name, settings_json, new_workspace)
    except BaseException:
        store.close()
        raise
    return store


def _claim(
    store: Store, model_source: str, fingerprint: str, layer: int, module_name: str, settings_json: str, new: bool
) -> None:
    with store.session() as session:
        row = session.scalar(select(Workspace).order_by(Workspace.id).limit(1))
        if store.read_only:
            if row is not None and row.fingerprint != fingerprint:
                raise FingerprintMismatch(f"The workspace {store.path} belongs to the model {row.model_source!r}, not "
                                          f"to the loaded model {model_source!r}.")
            return
        if new and row is not None:
            edits = session.scalar(select(func.count(Edit.id)))
            if edits:
                raise StoreError(
                    f"{store.path} already holds {edits} edits; a new workspace needs a new file "
                    f"(for example {next_free_path(store.path).name})."
                )
            session.execute(delete(RoutingProbe))
            session.delete(row)
            row = None
        if row is None:
            session.add(
                Workspace(
                    model_source=model_source, fingerprint=fingerprint, layer=layer,
                    module_name=module_name, settings_json=settings_json,
                )
            )
            return
        if row.fingerprint != fingerprint:
            raise FingerprintMismatch(
                f"The workspace {store.path} belongs to the model {row.model_source!r} (fingerprint "
                f"{row.fingerprint}), but the loaded model is {model_source!r} (fingerprint {fingerprint}). "
                "Its applied edits and checkpoints only fit that model: load it again, or start a new "
                "workspace for this model."
            )
        if (row.layer, row.module_name) != (layer, module_name):
            applied = session.scalar(select(func.count(Edit.id)).where(Edit.status == EditStatus.APPLIED))
            if applied:
                raise StoreError(
                    f"The workspace {store.path} edits layer {row.layer} ({row.module_name}) and holds {applied} "
                    f"applied edits; it cannot switch to layer {layer} ({module_name}). Undo them or start a new workspace."
                )
        row.model_source, row.layer, row.module_name, row.settings_json = model_source, layer, module_name, settings_json
