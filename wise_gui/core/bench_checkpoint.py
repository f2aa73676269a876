"""A long benchmark run that can be stopped and continued: every few edits and before each evaluation
the run writes one file holding the side memory (as a memory file does) and the run's progress (edit
times, rows evaluated so far); started again with the same file, the same run carries on after the
last edit saved there, with that edit's evaluation when it had none yet.

The file is written atomically, so a run killed at any moment (SIGKILL, a machine going away) leaves
the previous checkpoint or the new one. What must match for a run to be "the same" is recorded in the
file: the method and its settings, the records, the irrelevant pool, the evaluation points and forms.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from wise_gui.core.bench import Method, RunProgress, method_name
from wise_gui.core.edits import EditRequest
from wise_gui.core.errors import WiseGuiError
from wise_gui.core.files import write_safetensors_atomic
from wise_gui.core.memory_file import MemoryFileDamaged, editor_identity, encode, parse, read_container
from wise_gui.core.tokens import QueryForm
from wise_gui.core.wise.editor import WiseEditor

PROGRESS_KEY = "bench_progress"
CHECKPOINT_EVERY = 25  # edits: a stopped run redoes at most this many


class CheckpointMismatch(WiseGuiError):
    """The checkpoint file holds another run than the one asked for."""


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def run_identity(method: WiseEditor, requests: list[EditRequest], start: int, points: list[int],
                 forms: tuple[QueryForm, ...] | None) -> dict:
    """What a continued run must share with the stopped one to give the same result."""
    return {
        "method": method_name(method), "settings": json.loads(method.settings.to_json()),
        "records": _digest([asdict(r) for r in requests]), "n_records": len(requests), "start": start,
        "irrelevant_pool": _digest(method.irrelevant_pool), "eval_at": points,
        "query_forms": list(forms) if forms is not None else None,
    }


@dataclass
class RunCheckpoint:
    """The checkpoint file of one sequential run (`run_benchmark` calls `resume` once, then `save`).
    The code is not part of what must match: continue a run with the code that started it."""

    path: Path
    every: int = CHECKPOINT_EVERY

    def __post_init__(self):
        self.path = Path(self.path).expanduser()
        if self.every < 1:
            raise ValueError("a checkpoint is written every 1 or more edits")
        self._identity: dict | None = None

    @property
    def source(self) -> str:
        return f"The benchmark checkpoint {self.path}"

    def resume(self, method: Method, requests: list[EditRequest], start: int, points: list[int],
               forms: tuple[QueryForm, ...] | None) -> RunProgress | None:
        """Restores the state saved for this run into `method` and returns the progress to go on from;
        None when there is no checkpoint yet. Raises CheckpointMismatch for another run's file and
        MemoryFileError for a damaged one."""
        if not isinstance(method, WiseEditor):
            raise WiseGuiError(f"A benchmark checkpoint holds a WISE side memory; {method_name(method)} has none.")
        self._identity = run_identity(method, requests, start, points, forms)
        if not self.path.exists():
            return None
        tensors, metadata = read_container(self.path, self.source)
        memory = parse(tensors, metadata, self.source)  # format and checksum, which covers the progress too
        try:
            saved = json.loads(metadata[PROGRESS_KEY])
            identity, progress = saved["run"], RunProgress.from_json(saved["progress"])
        except (KeyError, TypeError, ValueError) as exc:
            raise MemoryFileDamaged(f"{self.source} holds no readable run progress ({type(exc).__name__}).") from None
        differences = [key for key in sorted(set(identity) | set(self._identity))
                       if identity.get(key) != self._identity.get(key)]
        if differences:
            raise CheckpointMismatch(f"{self.source} belongs to another run (its {', '.join(differences)} differ); "
                                     f"give another checkpoint file, or delete this one to start again.")
        if memory.total_edits != progress.done:
            raise MemoryFileDamaged(f"{self.source} is inconsistent: {memory.total_edits} edits in the memory, "
                                    f"{progress.done} in the progress.")
        memory.restore_into(method)
        progress.resumed_at.append(progress.done)
        return progress

    def save(self, method: WiseEditor, progress: RunProgress) -> None:
        if self._identity is None:
            raise RuntimeError("resume() names the run before its first save()")
        extra = {"identity": editor_identity(method).to_json(), "settings": method.settings.to_json(),
                 PROGRESS_KEY: json.dumps({"run": self._identity, "progress": progress.to_json()})}
        write_safetensors_atomic(self.path, *encode(method.state_dict(), extra))
