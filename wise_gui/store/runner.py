"""The apply loop shared by `wise-gui apply` and the GUI worker: no Qt, plain-data events.

For each edit: mark it applying, answer its prompts with the unedited model, train it (forwarding every
step), answer again and route, measure Rel / Gen / Loc, then write the checkpoint and the outcome in one
transaction. A cancelled edit goes back to the queue and a failing one is marked failed; either way the
editor holds exactly the state from before that edit, and the loop goes on (or stops, when cancelled).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from wise_gui.core.edits import EditRequest
from wise_gui.core.errors import WiseGuiError
from wise_gui.core.evaluation import evaluate, generation_matches
from wise_gui.core.memory_file import apply_to_editor, editor_state
from wise_gui.core.models import LoadedModel
from wise_gui.core.wise.editor import EditCancelled, EditOutcome, WiseEditor
from wise_gui.core.wise.settings import WiseSettings
from wise_gui.core.wise.training import StepEvent
from wise_gui.store.errors import StoreError
from wise_gui.store.schema import EditStatus
from wise_gui.store.store import CheckpointRef, OutcomeFields, Store, open_store, open_workspace

# ----------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True)
class AnswerRow:
    kind: str  # "prompt", "paraphrase" or "locality"
    prompt: str
    expected: str  # the target; for locality the dataset's answer (may be empty)
    before: str  # greedy answer of the unedited model
    after: str  # greedy answer with the side memory, routed on the prompt
    routed_to: str  # label of the memory that answered
    score: float
    threshold: float
    passed: bool  # locality: unchanged answer; prompt and paraphrase: the target was generated


@dataclass(frozen=True)
class EditStarted:
    edit_id: int
    position: int  # 1-based, in this run
    total: int
    prompt: str
    target: str


@dataclass(frozen=True)
class EditStep:
    edit_id: int
    step: StepEvent


@dataclass(frozen=True)
class EditApplied:
    edit_id: int
    outcome: EditOutcome
    answers: list[AnswerRow]
    metrics: dict[str, float | None]  # rel, gen, loc, gen_success
    apply_order: int
    seconds: float  # the whole edit: answers, training, measuring, saving


@dataclass(frozen=True)
class EditFailed:
    edit_id: int
    message: str


@dataclass(frozen=True)
class EditCancelledEvent:
    edit_id: int


@dataclass(frozen=True)
class RunFinished:
    applied: list[int]
    failed: list[int]
    cancelled: bool


RunEvent = EditStarted | EditStep | EditApplied | EditFailed | EditCancelledEvent | RunFinished


# ----------------------------------------------------------------------------------------------
# Applying


def _questions(request: EditRequest) -> list[tuple[str, str, str]]:
    """(kind, prompt, expected answer) of every prompt whose answer the user checks."""
    return (
        [("prompt", request.prompt, request.target)]
        + [("paraphrase", p, request.target) for p in request.paraphrases]
        + [("locality", check.prompt, check.answer) for check in request.locality]
    )


def _answer_budget(editor: WiseEditor, questions: list[tuple[str, str, str]]) -> int:
    """New tokens for the answers: the longest expected answer and a few more, as generation_success uses."""
    tokenizer = editor.tokenizer
    lengths = [len(tokenizer(" " + expected, add_special_tokens=False)["input_ids"]) for _, _, expected in questions]
    return max(lengths) + 4


def _answer_rows(editor: WiseEditor, questions: list[tuple[str, str, str]], before: list[str],
                 budget: int) -> list[AnswerRow]:
    prompts = [prompt for _, prompt, _ in questions]
    after = editor.generate(prompts, max_new_tokens=budget)
    rows = []
    for (kind, prompt, expected), old, new, route in zip(questions, before, after, editor.route(prompts)):
        passed = new == old if kind == "locality" else generation_matches(new, expected)
        rows.append(AnswerRow(kind, prompt, expected, old, new, route.label, route.score, route.threshold, passed))
    return rows


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON columns hold no NaN


def _outcome_fields(outcome: EditOutcome, answers: list[AnswerRow], metrics) -> OutcomeFields:
    extra = {
        "iterations": outcome.iterations, "irrelevant_score": _finite(outcome.irrelevant_score),
        "shard_full": outcome.shard_full, "merged": outcome.merged,
    }  # fmt: skip
    for name in ("portability", "ood"):
        if getattr(metrics, name) is not None:
            extra[name] = getattr(metrics, name)
    return OutcomeFields(
        answers=[dataclasses.asdict(row) for row in answers],
        rel=metrics.rel, gen=metrics.gen, loc=metrics.loc, gen_success=metrics.gen_success,
        extra_metrics=extra,
        loss_curve=[ce + margin for ce, margin in zip(outcome.ce_curve, outcome.margin_curve)],
        activation_score=outcome.edit_score, threshold=outcome.threshold, shard_index=outcome.shard_number,
        seconds=outcome.seconds,
    )  # fmt: skip


def _apply_one(store: Store, editor: WiseEditor, edit_id: int, position: int, total: int,
               emit: Callable[[RunEvent], None], should_stop: Callable[[], bool]) -> RunEvent:
    try:
        store.mark_applying(edit_id)
    except StoreError as exc:  # missing or already applied: its status stays as it is
        return EditFailed(edit_id, str(exc))
    request = store.get_edit(edit_id).request
    emit(EditStarted(edit_id, position, total, request.prompt, request.target))
    started = time.perf_counter()
    # The engine restores its own state when training fails; this covers failures after it (measuring, saving).
    snapshot = editor.snapshot()
    try:
        questions = _questions(request)
        budget = _answer_budget(editor, questions)
        before = editor.generate([prompt for _, prompt, _ in questions], max_new_tokens=budget, use_side_memory=False)
        outcome = None
        training_started = time.perf_counter()
        for item in editor.apply(request, should_stop):
            if isinstance(item, StepEvent):
                emit(EditStep(edit_id, item))
            else:
                outcome = item
        outcome.seconds = time.perf_counter() - training_started
        answers = _answer_rows(editor, questions, before, budget)
        metrics = evaluate(editor, [request])
        tensors, metadata = editor_state(editor)
        checkpoint = store.save_applied(edit_id, _outcome_fields(outcome, answers, metrics), tensors, metadata)
    except EditCancelled:
        store.return_to_queue(edit_id)
        return EditCancelledEvent(edit_id)
    except Exception as exc:
        editor.restore(snapshot)
        message = str(exc) if isinstance(exc, WiseGuiError) else f"{type(exc).__name__}: {exc}"
        store.mark_failed(edit_id, message)
        return EditFailed(edit_id, message)
    scores = {"rel": metrics.rel, "gen": metrics.gen, "loc": metrics.loc, "gen_success": metrics.gen_success}
    return EditApplied(edit_id, outcome, answers, scores, checkpoint.apply_order, time.perf_counter() - started)


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


def apply_queued(store: Store, editor: WiseEditor, edit_ids: list[int] | None = None,
                 on_event: Callable[[RunEvent], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> RunFinished:
    """Applies the queued edits in queue order (or `edit_ids`, in that order); every event goes to `on_event`.

    `should_stop()` is checked between optimisation steps and between edits: the current edit is
    cancelled (back to the queue, the editor as before it) and no further edit starts.
    """
    emit = on_event or (lambda event: None)
    stop = should_stop or (lambda: False)
    applied: list[int] = []
    failed: list[int] = []
    cancelled = False
    for position, (edit_id, total) in enumerate(_pending(store, edit_ids), start=1):
        if stop():
            cancelled = True
            break
        event = _apply_one(store, editor, edit_id, position, total, emit, stop)
        emit(event)
        if isinstance(event, EditApplied):
            applied.append(edit_id)
        elif isinstance(event, EditFailed):
            failed.append(edit_id)
        else:
            cancelled = True
            break
    finished = RunFinished(applied, failed, cancelled)
    emit(finished)
    return finished


# ----------------------------------------------------------------------------------------------
# Opening, restoring, undoing


def restore_workspace(store: Store, editor: WiseEditor) -> CheckpointRef | None:
    """Puts the editor in the exact state after the workspace's last applied edit (unedited when none).

    The editor keeps its current settings: they are the workspace's now, whatever a checkpoint was saved with.
    """
    checkpoint = store.latest_checkpoint()
    settings = editor.settings
    if checkpoint is not None:
        apply_to_editor(editor, checkpoint.path)
    elif store.count_edits(status=EditStatus.APPLIED):
        raise StoreError(f"The workspace {store.path} has applied edits but no checkpoint of their state.")
    else:
        editor.reset()
    editor.update_settings(settings)
    return checkpoint


def undo_last(store: Store, editor: WiseEditor) -> int | None:
    """Rolls back the last applied edit, in the store and in the editor; returns its id (None: nothing applied)."""
    edit_id = store.roll_back_last()
    if edit_id is not None:
        restore_workspace(store, editor)
    return edit_id


def _stored_settings(db_path: str | Path | None) -> WiseSettings | None:
    """The settings a workspace was last used with; None for a new one (or one only filled by import)."""
    with open_store(db_path) as store:
        workspace = store.workspace
    values = json.loads(workspace.settings_json) if workspace is not None else {}
    if not values:
        return None
    try:
        return WiseSettings.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"The workspace's stored settings cannot be used: {exc}") from None


def open_for_model(db_path: str | Path | None, loaded: LoadedModel, settings: WiseSettings | None = None,
                   new_workspace: bool = False) -> tuple[Store, WiseEditor]:
    """An editor on `loaded` and its workspace, restored to the last applied edit and ready to apply more.

    `settings=None`: the workspace's own settings (the model's preset for a new workspace).
    """
    if settings is None and not new_workspace:
        settings = _stored_settings(db_path)
    editor = WiseEditor(loaded, settings)
    try:
        store = open_workspace(
            db_path, model_source=loaded.source, fingerprint=editor.fingerprint(), layer=editor.layer_index,
            module_name=editor.module_name, settings_json=editor.settings.to_json(), new_workspace=new_workspace,
        )  # fmt: skip
        try:
            store.requeue_interrupted()
            restore_workspace(store, editor)
        except BaseException:
            store.close()
            raise
    except BaseException:
        editor.detach()  # leaves the model free for another editor
        raise
    return store, editor
