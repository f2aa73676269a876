"""The Qt-free apply loop: events, outcomes and checkpoints, cancel, failures, undo, reopening."""

from __future__ import annotations


import pytest
import torch

from test_engine import TINY_SETTINGS, requests_from
from tiny_model import tiny_loaded
from wise_gui.core.wise.memory import WiseLayer
from wise_gui.store import EditStatus, FingerprintMismatch, import_requests, open_store
from wise_gui.store.runner import (
    EditApplied,
    EditCancelledEvent,
    EditFailed,
    EditStarted,
    EditStep,
    RunFinished,
    apply_queued,
    open_for_model,
    restore_workspace,
    undo_last,
)

SETTINGS = TINY_SETTINGS.replace(n_iter=15)


@pytest.fixture
def workspace(tmp_path, tokenizer, records):
    """A database with three queued edits, opened for a tiny model; yields (store, editor, edit ids)."""
    db = tmp_path / "ws.sqlite"
    with open_store(db) as store:
        import_requests(store, requests_from(records, 3), status=EditStatus.QUEUED)
    store, editor = open_for_model(db, tiny_loaded(tokenizer=tokenizer), SETTINGS)
    with store:
        yield store, editor, [row.id for row in store.edit_page()]


def weights(editor):
    state = editor.state
    return [m.weight.clone() for m in state.merged + state.saved + [state.shard]]


def same_weights(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_each_edit_is_reported_measured_and_saved(workspace):
    store, editor, ids = workspace
    events = []
    finished = apply_queued(store, editor, on_event=events.append)
    assert finished == RunFinished(applied=ids, failed=[], cancelled=False)
    started = [e for e in events if isinstance(e, EditStarted)]
    assert [(e.edit_id, e.position, e.total) for e in started] == [(ids[0], 1, 3), (ids[1], 2, 3), (ids[2], 3, 3)]
    assert sum(isinstance(e, EditStep) for e in events) == 3 * SETTINGS.n_iter
    applied = [e for e in events if isinstance(e, EditApplied)]
    assert [e.apply_order for e in applied] == [1, 2, 3]
    first = applied[0]
    assert [row.kind for row in first.answers] == ["prompt", "paraphrase", "locality"]
    assert first.answers[0].routed_to.startswith("side memory") and first.answers[2].routed_to == "main memory"
    assert first.answers[2].passed and first.answers[2].before == first.answers[2].after
    assert set(first.metrics) == {"rel", "gen", "loc", "gen_success"}

    outcome = store.latest_outcome(ids[0]).fields
    assert outcome.rel == first.metrics["rel"] and outcome.answers[0]["after"] == first.answers[0].after
    assert len(outcome.loss_curve) == SETTINGS.n_iter and outcome.shard_index == 1
    assert [row.status for row in store.edit_page()] == ["applied"] * 3
    assert store.latest_checkpoint().apply_order == 3


def test_cancel_mid_edit_puts_it_back_in_the_queue_with_the_state_unchanged(workspace):
    store, editor, ids = workspace
    apply_queued(store, editor, edit_ids=ids[:1])
    before = weights(editor)
    events = []

    def steps() -> int:
        return sum(isinstance(event, EditStep) for event in events)

    finished = apply_queued(store, editor, on_event=events.append, should_stop=lambda: steps() >= 3)
    assert finished == RunFinished(applied=[], failed=[], cancelled=True)
    assert steps() == 3 and EditCancelledEvent(ids[1]) in events
    assert same_weights(before, weights(editor)) and editor.state.total_edits == 1
    second, third = store.get_edit(ids[1]), store.get_edit(ids[2])
    assert (second.status, second.error, second.outcome) == ("queued", None, None)
    assert third.status == "queued"
    assert store.latest_checkpoint().edit_id == ids[0]


def test_a_failing_edit_is_marked_failed_and_the_next_one_is_applied(workspace, monkeypatch):
    store, editor, ids = workspace
    real_margins = editor.margins
    calls = []

    def margins_failing_once():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("out of memory (simulated)")
        return real_margins()

    monkeypatch.setattr(editor, "margins", margins_failing_once)
    events = []
    finished = apply_queued(store, editor, edit_ids=ids[:2], on_event=events.append)
    assert finished == RunFinished(applied=[ids[1]], failed=[ids[0]], cancelled=False)
    assert EditFailed(ids[0], "RuntimeError: out of memory (simulated)") in events
    failed = store.get_edit(ids[0])
    assert (failed.status, failed.error) == ("failed", "RuntimeError: out of memory (simulated)")
    second = store.get_edit(ids[1]).request
    assert editor.state.total_edits == 1 and editor.edit_log == [(second.prompt, second.target)]


def test_undo_restores_the_previous_state_and_then_the_unedited_one(workspace):
    store, editor, ids = workspace
    unedited = weights(editor)
    apply_queued(store, editor, edit_ids=ids[:1])
    after_first = weights(editor)
    apply_queued(store, editor, edit_ids=ids[1:2])
    assert undo_last(store, editor) == ids[1]
    assert store.get_edit(ids[1]).status == "rolled_back"
    assert same_weights(after_first, weights(editor)) and editor.state.total_edits == 1
    assert undo_last(store, editor) == ids[0]
    assert same_weights(unedited, weights(editor)) and editor.edit_log == [] and editor.state.total_edits == 0
    assert undo_last(store, editor) is None


def test_reopening_restores_the_last_applied_state_and_requeues_an_interrupted_edit(workspace, tokenizer):
    store, editor, ids = workspace
    apply_queued(store, editor, edit_ids=ids[:2])
    expected = weights(editor)
    store.mark_applying(ids[2])  # as a crash in the middle of the third edit leaves it
    editor.detach()

    reopened_store, reopened = open_for_model(store.path, tiny_loaded(tokenizer=tokenizer))
    with reopened_store:
        assert same_weights(expected, weights(reopened)) and reopened.edit_log == editor.edit_log
        assert reopened.settings == editor.settings  # the workspace's settings, without passing them
        assert reopened_store.get_edit(ids[2]).status == "queued"
        assert restore_workspace(reopened_store, reopened).edit_id == ids[1]


def test_another_model_is_refused_and_left_without_an_editor(workspace, tokenizer):
    store, _, _ = workspace
    other = tiny_loaded(seed=1, tokenizer=tokenizer)
    with pytest.raises(FingerprintMismatch, match="belongs to the model"):
        open_for_model(store.path, other, SETTINGS)
    assert not any(isinstance(module, WiseLayer) for module in other.model.modules())
