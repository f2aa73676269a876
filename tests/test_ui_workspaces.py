"""Workspaces as a user moves between them (issue 15.3, 15.8, 15.9): a new workspace shows nothing of the
previous one, is named from the base name, a workspace in use opens read-only; undoing asks first and
forgets the old probe; typing mistakes get a message and the row counter stays right."""

from __future__ import annotations

import json
import os

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QMessageBox
from test_ui_window import RECORDS, accept, add_edits, click, probe, request, status_shown, wait_idle

from wise_gui.resources_path import SAMPLE_EDITS, resource_path
from wise_gui.store import EditStatus, WorkspaceLock, open_store
from wise_gui.ui.edit_table import PROMPT_COLUMN, TARGET_COLUMN
from wise_gui.ui.main_window import fresh_workspace_path


def test_a_new_workspace_shows_nothing_of_the_previous_one(qtbot, open_window, tmp_path):
    window = open_window(db=tmp_path / "first.sqlite")
    add_edits(window, 0)
    click(qtbot, window, window.apply_queued_action)
    wait_idle(qtbot, window)
    window.table.select_row(0)
    probe(qtbot, window, RECORDS[0]["src"])
    # What the first workspace shows: its loss, its probe, its run, its answers, an undoable edit.
    assert window.plots.loss.values("ce") and window.probe_panel.result is not None
    assert window.run_label.text().startswith("Run finished") and window.answers_panel.table.rowCount() == 3
    assert window.undo_last_action.isEnabled() and window.export_memory_action.isEnabled()

    assert window.open_workspace(tmp_path / "second.sqlite", new=True)
    wait_idle(qtbot, window)
    window.plots.redraw_dirty()
    loss = window.plots.loss
    assert all(not loss.values(name) for name in ("ce", "margin", "total")) and loss.edit_id is None
    assert all(len(s.getData()[0]) == 0 for s in window.plots.router.scatters.values())
    assert window.plots.shards.status.total_edits == 0
    assert window.probe_panel.result is None and window.probe_panel.route_label.text() == "—"
    assert window.probe_panel.edited_answer.toPlainText() == ""
    assert window.probe_panel.question.count() == 0  # no earlier probes of the other workspace
    assert window.run_label.text() == ""
    assert window.answers_panel.table.rowCount() == 0
    assert not window.undo_last_action.isEnabled() and not window.export_memory_action.isEnabled()
    assert window.status_applied.text() == "0 applied edits" and window.windowTitle().endswith("second.sqlite")


def test_a_new_workspace_is_named_from_the_base_name(qtbot, open_window, tmp_path, monkeypatch):
    for name in ("workspace.sqlite", "workspace-2.sqlite"):
        open_store(tmp_path / name).close()
    assert fresh_workspace_path(tmp_path / "workspace-2.sqlite").name == "workspace-3.sqlite"
    assert fresh_workspace_path(tmp_path / "other.sqlite").name == "other.sqlite"

    window = open_window(db=tmp_path / "workspace-2.sqlite")
    suggested = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        lambda parent, title, suggestion, filter: (suggested.append(suggestion), ("", ""))[1])
    window.new_workspace_action.trigger()
    assert [os.path.basename(s) for s in suggested] == ["workspace-3.sqlite"]


def test_a_workspace_in_use_says_by_whom_and_opens_read_only(qtbot, open_window, tmp_path):
    db = tmp_path / "busy.sqlite"
    with open_store(db) as store:
        store.add_edit(request(0), status=EditStatus.QUEUED)
    lock = WorkspaceLock(db.resolve())
    lock.acquire()  # another writer holds the workspace (a second file lock conflicts like another process's)
    try:
        window = open_window(db=db, ready=False)
        qtbot.waitUntil(lambda: not window.busy and window.message_box is not None, timeout=60_000)
        box = window.message_box
        assert f"in use by process {os.getpid()}" in box.text() and ", since " in box.text()
        assert "open it read-only" in box.text()
        accept(qtbot, box)
        qtbot.waitUntil(lambda: window.service.editor is not None and not window.busy, timeout=60_000)

        assert window.store.read_only and window.windowTitle().endswith("(read-only)")
        assert "read-only" in window.statusBar().currentMessage() and "read-only" in window.status_workspace.text()
        for action in (window.apply_queued_action, window.undo_last_action, window.import_edits_action,
                       window.import_memory_action, window.new_edit_action, window.delete_action):
            assert not action.isEnabled(), action.text()
        window.table.select_row(0)
        assert not window.apply_selected_action.isEnabled()
        assert not window.table_model.flags(window.table_model.index(0, PROMPT_COLUMN)) & Qt.ItemIsEditable
        assert window.table_model.index(0, PROMPT_COLUMN).data() == RECORDS[0]["src"]
        # Browsing and probing still work; the probe is not written into the other program's workspace.
        assert not probe(qtbot, window, RECORDS[5]["loc"]).to_side_memory
        assert window.store.recent_probes() == []
    finally:
        lock.release()


def test_undo_last_applied_edit_asks_first_and_forgets_the_old_probe(qtbot, open_window):
    window = open_window()
    [edit_id] = add_edits(window, 0)
    assert not window.undo_last_action.isEnabled()  # nothing is applied yet
    click(qtbot, window, window.apply_queued_action)
    wait_idle(qtbot, window)
    assert window.undo_last_action.isEnabled()
    assert probe(qtbot, window, RECORDS[0]["src"]).to_side_memory

    click(qtbot, window, window.undo_last_action)
    box = window.message_box
    assert box.isVisible() and RECORDS[0]["src"] in box.text() and "rolled back" in box.text()
    qtbot.mouseClick(box.button(QMessageBox.Cancel), Qt.LeftButton)
    assert not window.busy and window.store.get_edit(edit_id).status == EditStatus.APPLIED

    click(qtbot, window, window.undo_last_action)
    accept(qtbot, window.message_box)
    wait_idle(qtbot, window)
    assert window.store.get_edit(edit_id).status == EditStatus.ROLLED_BACK and status_shown(window, 0) == "rolled back"
    assert window.probe_panel.result is None and window.probe_panel.edited_answer.toPlainText() == ""
    assert not window.undo_last_action.isEnabled() and not window.export_memory_action.isEnabled()


def test_typing_mistakes_get_a_message_and_the_counter_stays_right(qtbot, open_window):
    window = open_window()
    window.load_sample_edits()
    assert window.filter_bar.count.text() == "10 edits"
    window.table.start_new_edit()
    assert window.table_model.rowCount() == 11
    assert window.filter_bar.count.text() == "10 edits"  # the row being typed is no edit yet

    # A target without a prompt: the user is told what is missing.
    model = window.table_model
    assert model.setData(model.index(10, TARGET_COLUMN), "Canberra")
    assert "no prompt yet" in window.message_box.text() and window.store.count_edits() == 10
    window.message_box.close()
    model.discard_new_row()

    # An edit saved with an empty prompt is refused with the reason.
    window.table.select_row(0)
    window.show_panel(window.detail_panel)
    window.detail_panel.prompt.setText("   ")
    qtbot.mouseClick(window.detail_panel.save_button, Qt.LeftButton)
    assert "the prompt is empty" in window.message_box.text()
    first_sample = json.loads(resource_path(SAMPLE_EDITS).read_text())[0]["src"]
    assert window.store.get_edit(model.edit_id(0)).request.prompt == first_sample
