"""The schema's history as scripted steps, tracked by SQLite's `PRAGMA user_version`.

`MIGRATIONS[i]` brings a database from version i to version i + 1. To change the schema, append a
function (never edit a released step) and change `schema.py` to match; `test_store` checks that a
database migrated from scratch agrees with the models.

Migrations run on a plain sqlite3 connection in one explicit transaction, so a database is either
fully at the new version or untouched; SQLAlchemy only sees databases at the current version.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

from wise_gui.store.errors import StoreError

# "WISE" in ASCII: tells our databases apart from other SQLite files a user might point us at.
APPLICATION_ID = 0x57495345

_V1_SCHEMA = """
CREATE TABLE workspace (
    id INTEGER NOT NULL,
    model_source VARCHAR(4096) NOT NULL,
    fingerprint VARCHAR(256) NOT NULL,
    layer INTEGER NOT NULL,
    module_name VARCHAR(512) NOT NULL,
    settings_json TEXT NOT NULL,
    created_at DATETIME NOT NULL,
    PRIMARY KEY (id)
);
CREATE TABLE edit (
    id INTEGER NOT NULL,
    position INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    target TEXT NOT NULL,
    subject TEXT NOT NULL,
    status VARCHAR(16) NOT NULL,
    apply_order INTEGER,
    error TEXT,
    source TEXT NOT NULL,
    portability JSON NOT NULL,
    ood JSON NOT NULL,
    created_at DATETIME NOT NULL,
    updated_at DATETIME NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT edit_status_valid CHECK (status IN ('draft', 'queued', 'applying', 'applied', 'failed', 'rolled_back')),
    UNIQUE (apply_order)
);
CREATE INDEX ix_edit_position ON edit (position);
CREATE INDEX ix_edit_status ON edit (status);
CREATE TABLE paraphrase (
    id INTEGER NOT NULL,
    edit_id INTEGER NOT NULL,
    position INTEGER NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY(edit_id) REFERENCES edit (id) ON DELETE CASCADE
);
CREATE INDEX ix_paraphrase_edit_id ON paraphrase (edit_id);
CREATE TABLE locality_prompt (
    id INTEGER NOT NULL,
    edit_id INTEGER NOT NULL,
    position INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    answer TEXT NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY(edit_id) REFERENCES edit (id) ON DELETE CASCADE
);
CREATE INDEX ix_locality_prompt_edit_id ON locality_prompt (edit_id);
CREATE TABLE edit_outcome (
    id INTEGER NOT NULL,
    edit_id INTEGER NOT NULL,
    apply_order INTEGER NOT NULL,
    answers JSON NOT NULL,
    rel FLOAT,
    gen FLOAT,
    loc FLOAT,
    gen_success FLOAT,
    extra_metrics JSON NOT NULL,
    loss_curve JSON NOT NULL,
    activation_score FLOAT,
    threshold FLOAT,
    shard_index INTEGER,
    seconds FLOAT,
    checkpoint_path TEXT,
    created_at DATETIME NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY(edit_id) REFERENCES edit (id) ON DELETE CASCADE
);
CREATE INDEX ix_edit_outcome_edit_id ON edit_outcome (edit_id);
CREATE TABLE routing_probe (
    id INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    memory VARCHAR(64) NOT NULL,
    score FLOAT,
    threshold FLOAT,
    answer TEXT NOT NULL,
    created_at DATETIME NOT NULL,
    PRIMARY KEY (id)
);
"""


def _v1_initial_schema(db: sqlite3.Connection) -> None:
    # Statement by statement: executescript() would commit the surrounding transaction.
    for statement in _V1_SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")


_SIDE_LABEL = re.compile(r"side(?: memory)? (\d+)(?: \((merged memory|full shard|current shard)\))?")
_KINDS = {"merged memory": "merged", "full shard": "saved", "current shard": "shard"}


def _route_from_label(label: str | None, score=None, threshold=None) -> dict:
    """A first-version memory label ("main memory", "side memory 2 (merged memory)", "side 1") as a route."""
    match = _SIDE_LABEL.fullmatch((label or "").strip())
    if match is None:
        return {"memory": -1, "kind": "main", "score": score, "threshold": threshold}
    number = int(match.group(1))
    index = number - 1 if "memory" in (label or "") else number  # the store's "side N" counted from 0
    return {"memory": index, "kind": _KINDS.get(match.group(2), "merged"), "score": score, "threshold": threshold}


def _v2_routes_and_incremental_checkpoints(db: sqlite3.Connection) -> None:
    """Routes stored as memory index and kind instead of a display label; checkpoints may be deltas."""
    db.execute("ALTER TABLE edit_outcome ADD COLUMN checkpoint_kind VARCHAR(8) NOT NULL DEFAULT 'full'")
    db.execute("ALTER TABLE routing_probe ADD COLUMN memory_index INTEGER NOT NULL DEFAULT -1")
    db.execute("ALTER TABLE routing_probe ADD COLUMN memory_kind VARCHAR(16) NOT NULL DEFAULT 'main'")
    db.execute("ALTER TABLE routing_probe ADD COLUMN form VARCHAR(8) NOT NULL DEFAULT 'raw'")
    for probe_id, label in db.execute("SELECT id, memory FROM routing_probe").fetchall():
        route = _route_from_label(label)
        db.execute("UPDATE routing_probe SET memory_index = ?, memory_kind = ? WHERE id = ?",
                   (route["memory"], route["kind"], probe_id))
    db.execute("ALTER TABLE routing_probe DROP COLUMN memory")
    for outcome_id, answers in db.execute("SELECT id, answers FROM edit_outcome").fetchall():
        rows = json.loads(answers or "[]")
        converted = [{"kind": row.get("kind", "prompt"), "form": "raw", "question": row.get("prompt", ""),
                      "expected": row.get("expected", ""), "before": row.get("before"), "after": row.get("after", ""),
                      "route": _route_from_label(row.get("routed_to"), row.get("score"), row.get("threshold")),
                      "passed": bool(row.get("passed"))} if "route" not in row else row for row in rows]
        db.execute("UPDATE edit_outcome SET answers = ? WHERE id = ?", (json.dumps(converted), outcome_id))


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1_initial_schema, _v2_routes_and_incremental_checkpoints]
SCHEMA_VERSION = len(MIGRATIONS)


def _inspect_read_only(path: Path) -> tuple[int, int, int]:
    """(user_version, application_id, number of tables) read without any chance of writing the file."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            application_id = db.execute("PRAGMA application_id").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a WISE Workbench workspace database ({exc}).") from None
    return version, application_id, tables


def check_openable(path: Path) -> int:
    """The schema version of the existing database at `path`; refuses files this code must not touch."""
    version, application_id, tables = _inspect_read_only(path)
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} was written by a newer WISE Workbench (schema version {version}; this version knows "
            f"up to {SCHEMA_VERSION}). Update WISE Workbench to open it; the file was not changed."
        )
    if tables and application_id != APPLICATION_ID:
        raise StoreError(f"{path} is an SQLite database of another program, not a WISE Workbench workspace.")
    return version


def migrate(path: Path) -> None:
    """Brings the database at `path` (created if absent) up to SCHEMA_VERSION."""
    db = sqlite3.connect(path, isolation_level=None)  # transactions are begun and ended here, explicitly
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=ON")
        # IMMEDIATE takes the write lock before reading the version: two processes never migrate at once.
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:  # upgraded by a newer program since check_openable looked
                raise StoreError(f"{path} was written by a newer WISE Workbench (schema version {version}).")
            for step_version in range(version, SCHEMA_VERSION):
                MIGRATIONS[step_version](db)
            if version < SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise StoreError(f"Cannot prepare the workspace database {path}: {exc}") from None
    finally:
        db.close()
