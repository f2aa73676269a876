"""The schema's history as scripted steps, tracked by SQLite's `PRAGMA user_version`.

`MIGRATIONS[i]` brings a database from version i to version i + 1. To change the schema, append a
function (never edit a released step) and change `schema.py` to match; `test_store` checks that a
database migrated from scratch agrees with the models.

Migrations run on a plain sqlite3 connection in one explicit transaction, so a database is either
fully at the new version or untouched; SQLAlchemy only sees databases at the current version.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Callable

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


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1_initial_schema]
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
