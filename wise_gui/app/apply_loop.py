"""The apply loop shared by `wise-gui apply` and the window: one generator of plain-data events, no Qt.

For each edit: mark it applying, train it (an EditStep per optimisation step), answer its prompts in
the form the user asks (before and after, routed once), measure Rel / Gen / Loc, then write its
checkpoint and its outcome in one transaction. The consumer stops the run by returning true from
`abort`, which is asked between steps: the edit in training is rolled back exactly and goes back to
the queue. A failing edit is marked failed, the editor keeps the state from before it, and the loop
goes on. The generator's return value is the RunFinished summary.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Iterator

from wise_gui.app.checkpoints import ChainSizes, next_checkpoint, record_written
from wise_gui.app.events import EditApplied, EditCancelled, EditFailed, EditStarted, EditStep, RunEvent, RunFinished
from wise_gui.core.edits import EditRequest
from wise_gui.core.errors import WiseGuiError
from wise_gui.core.evaluation import EditEvaluation, evaluate
from wise_gui.core.tokens import QueryForm
from wise_gui.core.wise.editor import EditOutcome, WiseEditor
from wise_gui.core.wise.state import StateDict
from wise_gui.store import EditStatus, OutcomeFields, Store, StoreError

Abort = Callable[[], bool]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON columns hold no NaN


def answer_cap(editor: WiseEditor, request: EditRequest) -> int:
    """New tokens for the answers: the longest expected answer and some more for the words around it."""
    expected = [request.target] + [c.answer for c in request.locality]
    longest = max(len(editor.tokenizer(" " + text, add_special_tokens=False)["input_ids"]) for text in expected)
    return max(16, longest + 12)


def measure_edit(editor: WiseEditor, request: EditRequest, outcome: EditOutcome, form: QueryForm) -> EditEvaluation:
    """The edit's answers before and after (in `form`, each question routed once) and its scores."""
    return evaluate(editor, [request], forms=(form,), edit_indices=[outcome.edit_index], answers_before=True,
                    answer_cap=answer_cap(editor, request)).edits[0]


def outcome_fields(outcome: EditOutcome, measured: EditEvaluation, form: QueryForm) -> OutcomeFields:
    scores = measured.scores
    extra = {"iterations": outcome.iterations, "irrelevant_score": _finite(outcome.irrelevant_score),
             "shard_full": outcome.shard_full, "merged": outcome.merged, "memory": outcome.memory,
             "live": scores.to_dict()["live"]}
    for name in ("portability", "ood"):
        if getattr(scores, name) is not None:
            extra[name] = getattr(scores, name)
    return OutcomeFields(
        answers=[answer.to_dict() for answer in measured.answers],
        # The stored generation success is the one in the form the user asks in.
        rel=scores.rel, gen=scores.gen, loc=scores.loc, gen_success=scores.live[form].prompt, extra_metrics=extra,
        loss_curve=[ce + margin for ce, margin in zip(outcome.ce_curve, outcome.margin_curve)],
        activation_score=outcome.edit_score, threshold=outcome.threshold, shard_index=outcome.shard_number,
        seconds=outcome.seconds,
    )


def _pending(store: Store, edit_ids: list[int] | None) -> Iterator[tuple[int, int]]:
    """(edit id, total) in turn: the given ids, or the queue's head until the queue is empty."""
    if edit_ids is not None:
        for edit_id in edit_ids:
            yield edit_id, len(edit_ids)
        return
    done = 0
    while (head := store.next_queued()) is not None:
        # Edits queued while the run goes on are applied too, so the total is recounted each time.
        yield head.id, done + store.count_edits(status=EditStatus.QUEUED)
        done += 1


class _Run:
    """The loop's state between edits: the state as last stored, and the checkpoint chain's size."""

    def __init__(self, store: Store, editor: WiseEditor, form: QueryForm):
        self.store, self.editor, self.form = store, editor, form
        self.sizes = ChainSizes.of(store)
        # The editor holds the workspace's stored state: what the next delta is taken against.
        self.stored: StateDict | None = editor.state_dict() if self.sizes.full else None

    def apply_one(self, edit_id: int, position: int, total: int, abort: Abort
                  ) -> Generator[RunEvent, None, EditApplied | EditFailed | EditCancelled]:
        store, editor = self.store, self.editor
        try:
            store.mark_applying(edit_id)
        except StoreError as exc:  # missing or already applied: its status stays as it is
            return EditFailed(edit_id, str(exc), None)
        detail = store.get_edit(edit_id)
        request = detail.request
        yield EditStarted(edit_id, position, total, request.prompt, request.target, detail)
        started = time.perf_counter()
        before = editor.snapshot()
        steps = editor.apply(request)
        try:
            while True:
                try:
                    step = next(steps)
                except StopIteration as finished:
                    outcome: EditOutcome = finished.value
                    break
                yield EditStep(edit_id, step, editor.settings.n_iter)
                if abort():
                    steps.close()  # the editor rolls the edit back
                    store.return_to_queue(edit_id)
                    return EditCancelled(edit_id, store.get_edit(edit_id))
            measured = measure_edit(editor, request, outcome, self.form)
            after = editor.state_dict()
            order = store.next_apply_order()
            checkpoint = next_checkpoint(editor, self.stored, after, order, self.sizes)
            written = store.save_applied(edit_id, outcome_fields(outcome, measured, self.form), checkpoint.tensors,
                                         checkpoint.metadata, checkpoint.kind)
        except Exception as exc:
            steps.close()
            editor.restore(before)
            if isinstance(exc, OSError):  # the disk, not the edit: queue it again and stop the run
                message = (f"The checkpoint could not be written ({exc.strerror or exc}); the edit is back in "
                           "the queue and the workspace is as it was before it.")
                store.return_to_queue(edit_id)
                return EditFailed(edit_id, message, store.get_edit(edit_id), write_error=True)
            message = str(exc) if isinstance(exc, WiseGuiError) else f"{type(exc).__name__}: {exc}"
            store.mark_failed(edit_id, message)
            return EditFailed(edit_id, message, store.get_edit(edit_id))
        record_written(self.sizes, checkpoint, written)
        self.stored = after
        return EditApplied(edit_id, outcome, measured.answers, measured.scores, written.apply_order,
                           time.perf_counter() - started, store.get_edit(edit_id), editor.status())


def apply_edits(store: Store, editor: WiseEditor, edit_ids: list[int] | None = None, abort: Abort = lambda: False,
                form: QueryForm = "chat") -> Generator[RunEvent, None, RunFinished]:
    """Applies the queued edits in queue order (or `edit_ids`, in that order), yielding every event;
    answers are asked in `form` (raw for a model without a chat template). Returns the summary."""
    run = _Run(store, editor, editor.prompter.resolve(form))
    applied: list[int] = []
    failed: list[int] = []
    for position, (edit_id, total) in enumerate(_pending(store, edit_ids), start=1):
        if abort():
            return RunFinished(applied, failed, cancelled=True)
        event = yield from run.apply_one(edit_id, position, total, abort)
        yield event
        if isinstance(event, EditApplied):
            applied.append(edit_id)
        elif isinstance(event, EditFailed) and event.write_error:
            return RunFinished(applied, failed, cancelled=False, write_error=event.message)
        elif isinstance(event, EditFailed):
            failed.append(edit_id)
        else:
            return RunFinished(applied, failed, cancelled=True)
    return RunFinished(applied, failed, cancelled=False)


def run_to_summary(events: Generator[RunEvent, None, RunFinished],
                   on_event: Callable[[RunEvent], None] = lambda event: None) -> RunFinished:
    """Iterates a run, handing each event to `on_event`, and returns its summary."""
    while True:
        try:
            on_event(next(events))
        except StopIteration as finished:
            return finished.value
