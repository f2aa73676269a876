"""One writer per workspace: a lock file beside the database, held while an editor is attached to it.

The lock is an OS file lock (flock) on `<workspace>.lock`, so a process that dies, even by SIGKILL,
releases it: the next process finds the file but not the lock, and takes it over. The file also says
who holds it (process id, host, program, since when) so a second process can tell the user.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from wise_gui.store.errors import StoreError

try:
    import fcntl
except ImportError:  # Windows: no flock; the holder's process id is checked instead
    fcntl = None


@dataclass(frozen=True)
class LockHolder:
    pid: int
    host: str
    program: str
    since: float  # seconds since the epoch

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"process {self.pid} ({self.program}) on {self.host}, since {when}"


class WorkspaceInUse(StoreError):
    """Another process applies edits to this workspace; it can still be opened read-only."""

    def __init__(self, path: Path, holder: LockHolder | None):
        self.path, self.holder = path, holder
        who = holder.describe() if holder is not None else "another process"
        super().__init__(f"The workspace {path} is in use by {who}. Only one program at a time may apply edits "
                         "to it: close that one, or open the workspace read-only (browse, export, probe).")


def lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


def _read_holder(path: Path) -> LockHolder | None:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        return LockHolder(int(values["pid"]), str(values["host"]), str(values["program"]), float(values["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkspaceLock:
    """Held from `acquire()` to `release()`; the previous holder, if the lock was taken over, in `stale`."""

    def __init__(self, db_path: Path):
        self.path = lock_path(db_path)
        self.db_path = db_path
        self._handle = None
        self.stale: LockHolder | None = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self) -> None:
        previous = _read_holder(self.path)
        try:
            handle = open(self.path, "a+", encoding="utf-8")
        except OSError as exc:
            raise StoreError(f"Cannot create the lock file {self.path}: {exc.strerror or exc}") from None
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                raise WorkspaceInUse(self.db_path, previous) from None
        elif previous is not None and previous.pid != os.getpid() and _alive(previous.pid):
            handle.close()
            raise WorkspaceInUse(self.db_path, previous)
        self.stale = previous if previous is not None and previous.pid != os.getpid() else None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "program": Path(sys.argv[0]).name or "python",
                  "since": time.time()}
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(holder))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        try:
            handle.seek(0)
            handle.truncate()
        except OSError:
            pass
        handle.close()  # closing drops the flock
