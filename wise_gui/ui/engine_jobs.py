"""The work the window hands to its background thread, as plain functions of the store and the editor.

No Qt here: each function runs on a worker thread and returns plain data for the GUI thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from wise_gui.core.edits import EditRequest
from wise_gui.core.memory_file import editor_state, read_memory_file
from wise_gui.core.wise.editor import RouteDecision, ShardStatus, WiseEditor
from wise_gui.core.wise.training import StepEvent
from wise_gui.store import EditDetail, EditStatus, OutcomeFields, Store, StoreError, import_requests, record_applied
from wise_gui.store.runner import (
    EditApplied,
    EditCancelledEvent,
    EditFailed,
    EditStarted,
    EditStep,
    restore_workspace,
)
from wise_gui.ui.plot_data import AppliedEditPoints, applied_edit_points

STEP_BATCH_SECONDS = 0.03


@dataclass(frozen=True)
class ProbeResult:
    question: str
    decision: RouteDecision
    edited_answer: str
    original_answer: str


@dataclass(frozen=True)
class WorkspaceView:
    """What the window shows of a workspace besides the table: the plots' history and the editor's shards."""

    history: list[AppliedEditPoints]
    shards: ShardStatus
    threshold: float | None  # of the memory the last edit went into
    retrieve: bool  # WISE-Retrieve: each memory has its own threshold


@dataclass(frozen=True)
class StepBatch:
    """The training steps of one edit since the previous batch."""

    edit_id: int
    steps: list[StepEvent]


@dataclass
class RunEventForwarder:
    """The apply loop's `on_event`: passes its events to `report`, with the training steps of each
    STEP_BATCH_SECONDS in one StepBatch, so the GUI thread handles tens of reports a second instead of
    one per optimisation step. When an edit starts or ends it also reports the edit as now stored
    (EditDetail) and, after it, the editor's ShardStatus: read here, on the worker thread, so the GUI
    thread neither queries the database nor touches the editor during a run."""

    report: Callable[[Any], None]
    store: Store
    editor: WiseEditor
    clock: Callable[[], float] = time.perf_counter
    _pending: list[StepEvent] = field(default_factory=list)
    _edit_id: int = -1
    _last_flush: float = 0.0

    def __call__(self, event) -> None:
        if isinstance(event, EditStep):
            if event.edit_id != self._edit_id:
                self.flush()
            self._pending.append(event.step)
            self._edit_id = event.edit_id
            if self.clock() - self._last_flush >= STEP_BATCH_SECONDS:
                self.flush()
            return
        self.flush()
        self.report(event)
        if isinstance(event, (EditStarted, EditApplied, EditCancelledEvent, EditFailed)):
            self.report(self.store.get_edit(event.edit_id))
        if isinstance(event, (EditApplied, EditCancelledEvent, EditFailed)):
            self.report(self.editor.shard_status())

    def flush(self) -> None:
        if self._pending:
            self.report(StepBatch(self._edit_id, self._pending))
            self._pending = []
        self._last_flush = self.clock()


def probe(store: Store, editor: WiseEditor, question: str, max_new_tokens: int = 24) -> ProbeResult:
    decision = editor.route([question])[0]
    edited = editor.generate([question], max_new_tokens=max_new_tokens, use_side_memory=True)[0]
    original = editor.generate([question], max_new_tokens=max_new_tokens, use_side_memory=False)[0]
    has_memory = decision.threshold != float("inf")  # inf: no side memory exists yet
    store.record_probe(question, decision.label, decision.score if has_memory else None,
                       decision.threshold if has_memory else None, edited)
    return ProbeResult(question, decision, edited, original)


def edit_points(detail: EditDetail) -> AppliedEditPoints | None:
    """The router plot's points of an applied edit, from its stored outcome."""
    if detail.outcome is None or detail.apply_order is None:
        return None
    fields = detail.outcome.fields
    return applied_edit_points(detail.apply_order, detail.id, detail.request.prompt, fields.activation_score,
                               fields.threshold, fields.answers, fields.extra_metrics.get("irrelevant_score"))


def workspace_view(store: Store, editor: WiseEditor) -> WorkspaceView:
    history = [p for p in (edit_points(d) for d in store.applied_edits()) if p is not None]
    threshold = history[-1].threshold if history else None
    return WorkspaceView(history, editor.shard_status(), threshold, editor.settings.retrieve)


def import_side_memory(store: Store, editor: WiseEditor, path: str | Path) -> int:
    """Loads a memory file into a workspace without applied edits; its edits are listed as applied.

    Only the last of them gets a checkpoint (the file's state): the edits inside a memory file cannot be
    undone one by one. Returns how many edits the file holds.
    """
    applied = store.count_edits(status=EditStatus.APPLIED)
    if applied:
        raise StoreError(f"This workspace already has {applied} applied edits; a side memory can only be imported "
                         "into a workspace without applied edits (File > New workspace).")
    memory = read_memory_file(path)
    if not memory.edit_log:
        raise StoreError(f"{Path(path).name} holds no edits.")
    memory.restore_into(editor)  # refuses a file made for another model
    scores = {i: s for record in memory.state["memories"] for i, s in zip(record["edit_ids"], record["edit_scores"])}
    requests = [EditRequest(prompt, target, source=f"{Path(path).name}#{i}") for i, (prompt, target) in enumerate(memory.edit_log)]
    edit_ids: list[int] = []
    try:
        edit_ids = import_requests(store, requests, status=EditStatus.DRAFT).edit_ids
        threshold = editor.settings.act_ratio * min(scores.values()) if scores else None
        outcomes = [OutcomeFields(activation_score=scores.get(i), threshold=threshold) for i in range(len(edit_ids))]
        with store.session() as session:
            for edit_id, outcome in zip(edit_ids[:-1], outcomes):
                record_applied(session, edit_id, outcome, None)
        tensors, metadata = editor_state(editor)
        store.save_applied(edit_ids[-1], outcomes[-1], tensors, metadata)
    except BaseException:
        # Back to the workspace as it was: its own state, without the half-imported edits.
        restore_workspace(store, editor)
        if edit_ids:
            store.delete_edits(edit_ids)
        raise
    return len(edit_ids)
