"""The Qt-free apply loop and workspace service: events, outcomes and checkpoints, cancel, failures,
undo, reopening, the checkpoint chain, a full disk, and a workspace in use by another process."""

from __future__ import annotations

import errno
import os

import pytest
import torch
from tiny_model import TINY_SETTINGS, requests_from, tiny_loaded

from wise_gui.app.apply_loop import run_to_summary
from wise_gui.app.checkpoints import restore_workspace
from wise_gui.app.events import EditApplied, EditCancelled, EditFailed, EditStarted, EditStep, RunFinished
from wise_gui.app.workspace import WorkspaceService
from wise_gui.cli.labels import route_label
from wise_gui.core.wise.memory import WiseLayer
from wise_gui.store import EditStatus, FingerprintMismatch, import_requests, open_store

SETTINGS = TINY_SETTINGS.replace(n_iter=15)


def open_service(db, tokenizer, settings=SETTINGS, seed=0, **open_options) -> WorkspaceService:
    service = WorkspaceService(loader=lambda *_: tiny_loaded(seed=seed, tokenizer=tokenizer), settings_override=settings)
    service.load_model("tiny")
    service.open(db, **open_options)
    return service


def apply_queued(service: WorkspaceService, edit_ids=None, on_event=lambda event: None, should_stop=lambda: False):
    return run_to_summary(service.apply(edit_ids, abort=should_stop), on_event)


@pytest.fixture
def workspace(tmp_path, tokenizer, records):
    """A database with three queued edits, opened for a tiny model; yields (service, edit ids)."""
    db = tmp_path / "ws.sqlite"
    with open_store(db) as store:
        import_requests(store, requests_from(records, 3), status=EditStatus.QUEUED)
    service = open_service(db, tokenizer)
    yield service, [row.id for row in service.store.edit_page()]
    service.close()


def weights(editor):
    memories = editor.memories
    return [m.weight.clone() for m in memories.merged + memories.saved + [memories.shard]]


def same_weights(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_each_edit_is_reported_measured_and_saved(workspace):
    service, ids = workspace
    store = service.store
    events = []
    finished = apply_queued(service, on_event=events.append)
    assert finished == RunFinished(applied=ids, failed=[], cancelled=False)
    started = [e for e in events if isinstance(e, EditStarted)]
    assert [(e.edit_id, e.position, e.total) for e in started] == [(ids[0], 1, 3), (ids[1], 2, 3), (ids[2], 3, 3)]
    assert sum(isinstance(e, EditStep) for e in events) == 3 * SETTINGS.n_iter
    applied = [e for e in events if isinstance(e, EditApplied)]
    assert [e.apply_order for e in applied] == [1, 2, 3]
    first = applied[0]
    assert [row.kind for row in first.answers] == ["prompt", "paraphrase", "locality"]
    assert route_label(first.answers[0].route).startswith("side memory")
    assert route_label(first.answers[2].route) == "main memory"
    assert first.answers[2].passed and first.answers[2].before == first.answers[2].after
    assert first.answers[0].before is not None  # the answer before the edit, to compare with
    assert {"rel", "gen", "loc"} <= {k for k, v in first.scores.to_dict().items() if v is not None}
    assert first.scores.live["raw"].prompt is not None  # the tiny model has no chat template: raw form

    outcome = store.latest_outcome(ids[0]).fields
    assert outcome.rel == first.scores.rel and outcome.answers[0]["after"] == first.answers[0].after
    assert len(outcome.loss_curve) == SETTINGS.n_iter and outcome.shard_index == 1
    assert [row.status for row in store.edit_page()] == ["applied"] * 3
    assert store.latest_checkpoint().apply_order == 3


def test_cancel_mid_edit_puts_it_back_in_the_queue_with_the_state_unchanged(workspace):
    service, ids = workspace
    store, editor = service.store, service.editor
    apply_queued(service, edit_ids=ids[:1])
    before = weights(editor)
    events = []

    def steps() -> int:
        return sum(isinstance(event, EditStep) for event in events)

    finished = apply_queued(service, on_event=events.append, should_stop=lambda: steps() >= 3)
    assert finished == RunFinished(applied=[], failed=[], cancelled=True)
    assert steps() == 3 and [e.edit_id for e in events if isinstance(e, EditCancelled)] == [ids[1]]
    assert same_weights(before, weights(editor)) and editor.state.total_edits == 1
    second, third = store.get_edit(ids[1]), store.get_edit(ids[2])
    assert (second.status, second.error, second.outcome) == ("queued", None, None)
    assert third.status == "queued"
    assert store.latest_checkpoint().edit_id == ids[0]


def test_a_failing_edit_is_marked_failed_and_the_next_one_is_applied(workspace, monkeypatch):
    service, ids = workspace
    store, editor = service.store, service.editor
    real_margins = editor.margins
    calls = []

    def margins_failing_once():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("out of memory (simulated)")
        return real_margins()

    monkeypatch.setattr(editor, "margins", margins_failing_once)
    events = []
    finished = apply_queued(service, edit_ids=ids[:2], on_event=events.append)
    assert finished == RunFinished(applied=[ids[1]], failed=[ids[0]], cancelled=False)
    assert [(e.edit_id, e.message) for e in events if isinstance(e, EditFailed)] == [
        (ids[0], "RuntimeError: out of memory (simulated)")]
    failed = store.get_edit(ids[0])
    assert (failed.status, failed.error) == ("failed", "RuntimeError: out of memory (simulated)")
    second = store.get_edit(ids[1]).request
    assert editor.state.total_edits == 1 and editor.edit_log == [(second.prompt, second.target)]


def test_undo_restores_the_previous_state_and_then_the_unedited_one(workspace):
    service, ids = workspace
    store, editor = service.store, service.editor
    unedited = weights(editor)
    apply_queued(service, edit_ids=ids[:1])
    after_first = weights(editor)
    apply_queued(service, edit_ids=ids[1:2])
    assert service.undo_last() == ids[1]
    assert store.get_edit(ids[1]).status == "rolled_back"
    assert same_weights(after_first, weights(editor)) and editor.state.total_edits == 1
    assert service.undo_last() == ids[0]
    assert same_weights(unedited, weights(editor)) and editor.edit_log == [] and editor.state.total_edits == 0
    assert service.undo_last() is None


def test_reopening_restores_the_last_applied_state_and_requeues_an_interrupted_edit(workspace, tokenizer):
    service, ids = workspace
    store, editor = service.store, service.editor
    apply_queued(service, edit_ids=ids[:2])
    expected = weights(editor)
    log, settings = list(editor.edit_log), editor.settings
    store.mark_applying(ids[2])  # as a crash in the middle of the third edit leaves it
    path = store.path
    service.close()

    reopened = open_service(path, tokenizer, settings=None)  # the workspace's settings, without passing them
    try:
        assert same_weights(expected, weights(reopened.editor)) and reopened.editor.edit_log == log
        assert reopened.editor.settings == settings
        assert reopened.store.get_edit(ids[2]).status == "queued"
        assert restore_workspace(reopened.store, reopened.editor).edit_id == ids[1]
    finally:
        reopened.close()


def test_another_model_is_refused_and_left_without_an_editor(workspace, tokenizer):
    service, _ = workspace
    path = service.store.path
    service.close()
    other = WorkspaceService(loader=lambda *_: tiny_loaded(seed=1, tokenizer=tokenizer), settings_override=SETTINGS)
    other.load_model("tiny")
    with pytest.raises(FingerprintMismatch, match="belongs to the model"):
        other.open(path)
    assert not any(isinstance(module, WiseLayer) for module in other.loaded.model.modules())


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS], ids=["full disk", "read-only folder"])
def test_a_checkpoint_that_cannot_be_written_stops_the_run_and_changes_nothing(workspace, monkeypatch, error):
    service, ids = workspace
    store, editor = service.store, service.editor
    assert run_to_summary(service.apply(edit_ids=ids[:1])).applied == ids[:1]
    stored_chain = [(ref.path, ref.path.read_bytes()) for ref in store.checkpoint_chain()]
    in_ram = editor.state_dict()

    def no_space(path, tensors, metadata):
        raise OSError(error, os.strerror(error), str(path))

    monkeypatch.setattr("wise_gui.store.store.write_checkpoint_atomic", no_space)
    finished = run_to_summary(service.apply(edit_ids=ids[1:]))
    assert finished.applied == [] and finished.failed == []
    assert os.strerror(error) in finished.write_error
    # The edit is queued again, the one after it was not tried, the stored chain and the RAM state are as before.
    assert [store.get_edit(i).status for i in ids] == ["applied", "queued", "queued"]
    assert [(ref.path, ref.path.read_bytes()) for ref in store.checkpoint_chain()] == stored_chain
    after = editor.state_dict()
    assert after.tensors.keys() == in_ram.tensors.keys()
    assert all(torch.equal(after.tensors[k], in_ram.tensors[k]) for k in in_ram.tensors)
    assert editor.state.total_edits == 1


def test_the_cli_exits_2_when_the_checkpoint_cannot_be_written(tmp_path, tokenizer, records, monkeypatch, capsys):
    from tiny_model import save_tiny_model

    from wise_gui.entry import main

    model_dir = save_tiny_model(tmp_path / "model", tokenizer=tokenizer)
    db = tmp_path / "ws.sqlite"
    with open_store(db) as store:
        import_requests(store, requests_from(records, 2), status=EditStatus.QUEUED)

    def no_space(path, tensors, metadata):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("wise_gui.store.store.write_checkpoint_atomic", no_space)
    assert main(["apply", "--db", str(db), "--model", str(model_dir), "--settings", SETTINGS.to_json()]) == 2
    assert "No space left on device" in capsys.readouterr().err
    with open_store(db) as store:
        assert [e.status for e in store.edits()] == ["queued", "queued"]
        assert store.checkpoint_chain() == []
