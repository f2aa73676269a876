"""The main window driven as a user drives it, on the tiny random Llama: type an edit, apply it, read the
table, plots, answers and probe; cancel; a failing worker; reopen; undo; side-memory files."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QLineEdit, QMessageBox
from tiny_model import FIXTURES, TINY_SETTINGS

from wise_gui.core.edits import EditRequest, LocalityCheck
from wise_gui.store import EditStatus, open_store
from wise_gui.ui.answers_panel import RESULT_COLUMN
from wise_gui.ui.edit_table import PROMPT_COLUMN, TARGET_COLUMN

RUN_MS = 180_000  # generous: the machine may be busy with other work
RECORDS = json.loads((FIXTURES / "zsre_engine_30.json").read_text())
UNRELATED = RECORDS[5]["loc"]  # the engine tests show the tiny model routes it to the main memory


def request(i: int) -> EditRequest:
    r = RECORDS[i]
    return EditRequest(r["src"], r["alt"], paraphrases=(r["rephrase"],), locality=(LocalityCheck(r["loc"], r["loc_ans"]),))


def click(qtbot, window, action) -> None:
    """Clicks the toolbar button of `action`, as a user would."""
    qtbot.mouseClick(window.toolbar.widgetForAction(action), Qt.LeftButton)


def wait_idle(qtbot, window) -> None:
    qtbot.waitUntil(lambda: not window.busy, timeout=RUN_MS)


def focused_editor() -> QLineEdit:
    editor = QApplication.focusWidget()
    assert isinstance(editor, QLineEdit), editor
    return editor


def type_into_focus(qtbot, text: str, then=Qt.Key_Return) -> None:
    """Types into the open cell editor and ends with `then`; Qt commits a Return a moment later."""
    editor = focused_editor()
    qtbot.keyClicks(editor, text)
    qtbot.keyClick(editor, then)
    qtbot.waitUntil(lambda: QApplication.focusWidget() is not editor)


def add_edits(window, *indexes: int, status=EditStatus.QUEUED) -> list[int]:
    ids = [window.store.add_edit(request(i), status=status) for i in indexes]
    window.table_model.reload()
    return ids


def status_shown(window, row: int) -> str:
    return window.table_model.index(row, 1).data()


def accept(qtbot, box: QMessageBox) -> None:
    """Clicks the dialog's button that goes ahead (not Cancel)."""
    [button] = [b for b in box.buttons() if box.buttonRole(b) == QMessageBox.AcceptRole]
    qtbot.mouseClick(button, Qt.LeftButton)


def probe(qtbot, window, question: str):
    window.probe_panel.question.setEditText(question)
    qtbot.mouseClick(window.probe_panel.button, Qt.LeftButton)
    wait_idle(qtbot, window)
    assert window.probe_panel.result.question == question
    return window.probe_panel.result.decision


def test_type_an_edit_apply_it_and_see_what_it_did(qtbot, open_window):
    window = open_window()
    record = RECORDS[0]

    # Ctrl+N opens a new row with its prompt cell in edit mode; Tab goes on to the target.
    window.activateWindow()
    window.table.setFocus()
    qtbot.keyClick(window.table, Qt.Key_N, Qt.ControlModifier)
    type_into_focus(qtbot, record["src"], then=Qt.Key_Tab)
    qtbot.waitUntil(lambda: window.table.state() == window.table.State.EditingState)
    type_into_focus(qtbot, record["alt"])
    assert window.table_model.index(0, PROMPT_COLUMN).data() == record["src"]
    assert window.table_model.index(0, TARGET_COLUMN).data() == record["alt"]
    [row] = window.store.edit_page()
    assert (row.prompt, row.target, row.status) == (record["src"], record["alt"], EditStatus.DRAFT)

    # A paraphrase and a locality prompt, typed in the detail pane.
    window.table.select_row(0)
    panel = window.detail_panel
    window.show_panel(panel)
    qtbot.mouseClick(panel.add_paraphrase_button, Qt.LeftButton)
    type_into_focus(qtbot, record["rephrase"])
    qtbot.mouseClick(panel.add_locality_button, Qt.LeftButton)
    type_into_focus(qtbot, record["loc"])
    qtbot.mouseClick(panel.save_button, Qt.LeftButton)
    stored = window.store.get_edit(row.id).request
    assert stored.paraphrases == (record["rephrase"],)
    assert [c.prompt for c in stored.locality] == [record["loc"]]

    # Apply it from the toolbar and wait for the worker.
    click(qtbot, window, window.apply_selected_action)
    assert window.busy and window.cancel_action.isEnabled()
    wait_idle(qtbot, window)
    window.plots.redraw_dirty()

    assert status_shown(window, 0) == "applied"
    assert window.store.get_edit(row.id).status == EditStatus.APPLIED
    assert window.status_applied.text() == "1 applied edit"
    assert "threshold " in window.status_threshold.text()

    loss = window.plots.loss
    assert len(loss.values("ce")) > 1 and len(loss.values("margin")) == len(loss.values("ce"))
    assert len(loss.series["ce"][1].getData()[0]) == len(loss.values("ce"))
    router = window.plots.router
    xs, ys = router.scatters["prompt"].getData()
    assert list(xs) == [1.0] and ys[0] > router.edits[1].threshold
    assert len(router.scatters["paraphrase"].getData()[0]) == 1
    assert len(router.scatters["locality"].getData()[0]) == 1
    assert router.scatters["prompt"].data[0]["data"].prompt == record["src"]  # what hovering the point names
    shards = window.plots.shards  # TINY_SETTINGS: one shard per edit, merged into its own memory at once
    assert shards.shard_heights()["merged"] == [(1, 1)]
    # A bar per one-edit shard would say nothing: the memory is summarised (the bars: test_ui_plots.py).
    assert shards.showing_summary and "1 memory for 1 edit" in shards.summary.shown_text()

    window.table.select_row(0)
    window.show_panel(window.answers_panel)
    after = window.answers_panel.after_answers()
    assert len(after) == 3  # prompt, paraphrase, locality
    assert record["alt"].split()[0] in after[0]
    assert window.answers_panel.table.item(0, RESULT_COLUMN).text() == "✓ pass"

    assert probe(qtbot, window, record["src"]).to_side_memory
    assert window.probe_panel.route_label.text().startswith("→ side memory")
    assert not probe(qtbot, window, UNRELATED).to_side_memory
    assert window.probe_panel.route_label.text() == "→ main memory"
    assert len(window.probe_panel.tokens_plot.plot_item.items[0].opts["height"]) > 1
    assert [p.prompt for p in window.store.recent_probes()] == [UNRELATED, record["src"]]


def test_cancel_rolls_back_the_edit_in_training_and_keeps_the_applied_ones(qtbot, open_window):
    # No early stop and many steps: the second edit is surely still training when Cancel is clicked.
    window = open_window(settings=TINY_SETTINGS.replace(n_iter=400, early_stop_loss=0.0))
    first, second = add_edits(window, 0, 1)
    second_training = []
    window.table_model.dataChanged.connect(
        lambda *_: second_training.append(True) if window.run_presenter.training_edit == second else None)

    click(qtbot, window, window.apply_queued_action)
    qtbot.waitUntil(lambda: bool(second_training) and len(window.plots.loss.values("ce")) > 0, timeout=RUN_MS)
    assert window.run_bar.isVisible() and "edit 2 of 2" in window.run_label.text()
    click(qtbot, window, window.cancel_action)
    wait_idle(qtbot, window)

    assert window.store.get_edit(first).status == EditStatus.APPLIED
    assert window.store.get_edit(second).status == EditStatus.QUEUED
    assert [status_shown(window, r) for r in (0, 1)] == ["applied", "queued"]
    assert window.service.editor.state.total_edits == 1 and len(window.service.editor.edit_log) == 1
    assert "cancelled" in window.run_label.text() and not window.run_bar.isVisible()
    window.plots.redraw_dirty()
    assert len(window.plots.router.scatters["prompt"].getData()[0]) == 1
    assert len(window.plots.router.live.getData()[0]) == 0  # the training star is gone
    assert window.plots.shards.status.total_edits == 1


def test_an_error_in_the_worker_becomes_a_dialog_and_a_failed_edit(qtbot, open_window, monkeypatch):
    window = open_window()
    [edit_id] = add_edits(window, 0)

    def broken_training(*args, **kwargs):
        raise RuntimeError("simulated device failure")

    monkeypatch.setattr(window.service.editor, "_train_and_store", broken_training)
    window.table.select_row(0)
    click(qtbot, window, window.apply_selected_action)
    wait_idle(qtbot, window)

    box = window.message_box
    assert isinstance(box, QMessageBox) and box.isVisible()
    assert "could not be applied" in box.text() and "simulated device failure" in box.text()
    assert window.store.get_edit(edit_id).status == EditStatus.FAILED
    assert status_shown(window, 0) == "failed"
    assert "simulated device failure" in window.table_model.index(0, 1).data(Qt.ToolTipRole)
    assert window.service.editor.state.total_edits == 0
    box.close()

    # The window goes on working: the same edit, fixed, applies.
    monkeypatch.undo()
    click(qtbot, window, window.apply_selected_action)
    wait_idle(qtbot, window)
    assert window.store.get_edit(edit_id).status == EditStatus.APPLIED


def test_reopening_the_workspace_restores_table_plots_and_side_memory(qtbot, open_window, tmp_path, app_settings):
    db = tmp_path / "kept.sqlite"
    window = open_window(db=db)
    first, second = add_edits(window, 0, 2)
    add_edits(window, 3, status=EditStatus.DRAFT)
    click(qtbot, window, window.apply_queued_action)
    wait_idle(qtbot, window)
    window.plots.redraw_dirty()
    scores = list(window.plots.router.scatters["prompt"].getData()[1])
    window.close()
    assert app_settings.value("recent_workspaces") in ([str(db)], str(db))

    reopened = open_window(db=db)
    reopened.plots.redraw_dirty()
    assert [status_shown(reopened, r) for r in range(3)] == ["applied", "applied", "draft"]
    assert list(reopened.plots.router.scatters["prompt"].getData()[1]) == pytest.approx(scores)
    assert reopened.plots.shards.shard_heights()["merged"] == [(1, 1), (2, 1)]
    assert reopened.status_applied.text() == "2 applied edits"
    assert reopened.model_panel.layer.isEnabled() is False  # the layer is fixed once edits are applied
    assert probe(qtbot, reopened, RECORDS[2]["src"]).to_side_memory

    # Undo last edit (confirmed): the second edit is rolled back in the store, the editor and the plots.
    click(qtbot, reopened, reopened.undo_last_action)
    accept(qtbot, reopened.message_box)
    wait_idle(qtbot, reopened)
    reopened.plots.redraw_dirty()
    assert reopened.store.get_edit(second).status == EditStatus.ROLLED_BACK
    assert status_shown(reopened, 1) == "rolled back"
    assert reopened.service.editor.state.total_edits == 1
    assert len(reopened.plots.router.scatters["prompt"].getData()[0]) == 1
    assert reopened.status_applied.text() == "1 applied edit"


def test_side_memory_export_and_import_into_a_new_workspace(qtbot, open_window, tmp_path):
    window = open_window(db=tmp_path / "source.sqlite")
    add_edits(window, 0, 1)
    click(qtbot, window, window.apply_queued_action)
    wait_idle(qtbot, window)
    window.plots.redraw_dirty()
    source_scores = list(window.plots.router.scatters["prompt"].getData()[1])
    source_thresholds = [window.plots.router.edits[order].threshold for order in (1, 2)]
    memory = tmp_path / "facts.safetensors"
    assert window.export_side_memory_to(memory)
    wait_idle(qtbot, window)
    assert memory.is_file()

    # Importing into a workspace that already has applied edits is refused with a message.
    assert window.import_side_memory_from(memory)
    wait_idle(qtbot, window)
    assert "already has 2 applied edits" in window.message_box.text()
    window.message_box.close()

    assert window.open_workspace(tmp_path / "target.sqlite", new=True)
    wait_idle(qtbot, window)
    assert window.table_model.rowCount() == 0
    assert window.import_side_memory_from(memory)
    wait_idle(qtbot, window)
    window.plots.redraw_dirty()
    assert [status_shown(window, r) for r in range(2)] == ["applied", "applied"]
    assert window.status_applied.text() == "2 applied edits"
    assert len(window.plots.router.scatters["prompt"].getData()[0]) == 2
    decision = probe(qtbot, window, RECORDS[0]["src"])
    assert decision.to_side_memory
    with open_store(tmp_path / "target.sqlite") as store:
        assert store.count_edits(status=EditStatus.APPLIED) == 2

    # Issue 15.4: each imported edit keeps its own numbers: its score and threshold from the file, its
    # Rel and its answers measured on import; the router's threshold is the one the probe meets.
    router = window.plots.router
    assert list(router.scatters["prompt"].getData()[1]) == pytest.approx(source_scores)
    assert [router.edits[order].threshold for order in (1, 2)] == pytest.approx(source_thresholds)
    assert decision.route.threshold == pytest.approx(router.edits[decision.route.memory + 1].threshold)
    assert [window.table_model.index(r, 5).data() for r in range(2)] != ["–", "–"]
    window.table.select_row(0)
    after = window.answers_panel.after_answers()
    assert len(after) == 1 and after[0].strip()  # a memory file holds each edit's prompt and target only
    assert RECORDS[0]["alt"].split()[0] in after[0]
    assert window.answers_panel.table.item(0, 3).text() == "–"  # not asked before the edit: it was imported


def test_import_edits_delete_with_undo_and_menus(qtbot, open_window):
    window = open_window()
    assert window.import_edits_from(FIXTURES / "zsre_sample.json")
    wait_idle(qtbot, window)
    imported = window.table_model.rowCount()
    assert imported > 0 and status_shown(window, 0) == "queued"

    window.table.select_row(0)
    prompt = window.table_model.index(0, PROMPT_COLUMN).data()
    qtbot.keyClick(window.table, Qt.Key_Delete)
    assert window.table_model.rowCount() == imported - 1
    assert window.table_model.index(0, PROMPT_COLUMN).data() != prompt
    window.undo_action.trigger()
    assert window.table_model.rowCount() == imported
    assert window.table_model.index(0, PROMPT_COLUMN).data() == prompt
    assert status_shown(window, 0) == "queued"

    menus = {a.text().replace("&", ""): a.menu() for a in window.menuBar().actions()}
    assert list(menus) == ["File", "Edit", "View", "Help"]
    file_actions = [a.text().replace("&", "") for a in menus["File"].actions() if a.text()]
    for name in ("New workspace…", "Open workspace…", "Import edits…", "Export side memory…", "Quit"):
        assert name in file_actions
    assert window.new_edit_action.shortcut().toString() == "Ctrl+N"
    assert window.apply_selected_action.shortcut().toString() == "Ctrl+Return"


def test_a_workspace_of_another_model_offers_a_new_one(qtbot, open_window, tmp_path):
    db = tmp_path / "first.sqlite"
    open_window(db=db).close()

    # A model with other weights cannot use the workspace's edits: a new workspace is offered instead.
    window = open_window(db=db, seed=1, ready=False)
    qtbot.waitUntil(lambda: not window.busy and window.message_box is not None, timeout=RUN_MS)
    box = window.message_box
    assert "belongs to the model" in box.text() and window.service.editor is None
    accept(qtbot, box)
    qtbot.waitUntil(lambda: window.service.editor is not None and not window.busy, timeout=RUN_MS)
    assert window.store.path == tmp_path / "first-2.sqlite"


def test_a_failed_model_load_is_a_dialog_and_the_window_goes_on(qtbot, open_window, monkeypatch):
    from wise_gui.core.models import ModelLoadError

    window = open_window()

    def broken_loader(*_):
        raise ModelLoadError("No model found in /nowhere: expected config.json")

    monkeypatch.setattr(window.service, "loader", broken_loader)
    assert window.load_model("/nowhere")
    wait_idle(qtbot, window)
    assert "No model found" in window.message_box.text()
    assert "Still using tiny-llama" in window.model_panel.progress_text.text()
    assert window.service.editor is not None and window.apply_queued_action.isEnabled()


def test_the_window_opens_with_the_model_in_the_status_bar(open_window):
    window = open_window()
    assert window.windowTitle().startswith("WISE Workbench")
    shown = window.status_model.text()
    assert "tiny-llama" in shown and "cpu" in shown and "K parameters" in shown
