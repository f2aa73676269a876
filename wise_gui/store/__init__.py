"""The SQLite edit store (SQLAlchemy): persistence only, no Qt, no engine.

One database file is one workspace: the edits, what applying them did, and (in a folder next to it)
safetensors checkpoints of the edited state.
"""

from wise_gui.store.bulk import ImportReport, import_requests
from wise_gui.store.checkpoints import read_checkpoint, write_checkpoint_atomic
from wise_gui.store.errors import FingerprintMismatch, StoreError
from wise_gui.store.lock import LockHolder, WorkspaceInUse, WorkspaceLock
from wise_gui.store.migrations import SCHEMA_VERSION
from wise_gui.store.schema import EditStatus
from wise_gui.store.store import (
    CheckpointRef,
    EditDetail,
    EditRow,
    OutcomeFields,
    OutcomeRecord,
    ProbeRecord,
    Store,
    StoreSummary,
    WorkspaceInfo,
    default_db_path,
    next_apply_order,
    next_free_path,
    open_store,
    open_workspace,
    record_applied,
)

__all__ = [
    "SCHEMA_VERSION",
    "CheckpointRef",
    "EditDetail",
    "EditRow",
    "EditStatus",
    "FingerprintMismatch",
    "ImportReport",
    "LockHolder",
    "WorkspaceInUse",
    "WorkspaceLock",
    "OutcomeFields",
    "OutcomeRecord",
    "ProbeRecord",
    "Store",
    "StoreError",
    "StoreSummary",
    "WorkspaceInfo",
    "default_db_path",
    "import_requests",
    "next_apply_order",
    "next_free_path",
    "open_store",
    "open_workspace",
    "read_checkpoint",
    "record_applied",
    "write_checkpoint_atomic",
]
