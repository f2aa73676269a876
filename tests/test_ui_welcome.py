"""The first run as a new user sees it: an empty workspace shows the welcome state, whose button queues the
ten sample ZsRE edits shipped in resources/, ready for Apply all queued."""

from __future__ import annotations

import json

from PySide6.QtCore import Qt

from wise_gui.resources_path import SAMPLE_EDITS, resource_path
from wise_gui.store import EditStatus
from wise_gui.ui.edit_table import PROMPT_COLUMN, TARGET_COLUMN

RUN_MS = 60_000


def test_welcome_state_loads_the_sample_edits_and_they_apply(qtbot, open_window):
    samples = json.loads(resource_path(SAMPLE_EDITS).read_text())
    window = open_window()

    assert window.store.count_edits() == 0
    assert window.welcome.isVisible()
    assert "Apply all queued" in window.welcome.text.text()
    assert window.welcome.sample_button.text() == "Load 10 sample ZsRE edits" and window.welcome.sample_button.isEnabled()

    qtbot.mouseClick(window.welcome.sample_button, Qt.LeftButton)

    assert window.table_model.rowCount() == 10
    assert not window.welcome.isVisible()
    assert [window.table_model.index(r, 1).data() for r in range(10)] == ["queued"] * 10
    assert [window.table_model.index(r, PROMPT_COLUMN).data() for r in range(10)] == [s["src"] for s in samples]
    assert [window.table_model.index(r, TARGET_COLUMN).data() for r in range(10)] == [s["alt"] for s in samples]
    assert window.store.count_edits(status=EditStatus.QUEUED) == 10
    first = window.store.get_edit(window.table_model.edit_id(0)).request
    assert first.paraphrases == (samples[0]["rephrase"],) and first.locality[0].prompt == samples[0]["loc"]

    # What the welcome text says next: applying (here only the first, to keep the test short) plots it.
    window.table.select_row(0)
    qtbot.mouseClick(window.toolbar.widgetForAction(window.apply_selected_action), Qt.LeftButton)
    qtbot.waitUntil(lambda: not window.busy, timeout=RUN_MS)
    window.plots.redraw_dirty()
    assert window.table_model.index(0, 1).data() == "applied"
    assert len(window.plots.router.scatters["prompt"].getData()[0]) == 1
    assert not window.welcome.isVisible()


def test_welcome_state_shows_while_the_model_loads_and_returns_when_the_list_is_empty(qtbot, open_window):
    window = open_window(ready=False)
    assert window.welcome.isVisible()  # the empty workspace is listed before the model is loaded
    # Issue 15.9: no settings are made up while the model loads (no 0.000, no layer 0), and none apply.
    assert not window.model_panel.showing_settings and not window.model_panel.layer.isVisible()
    assert not window.model_panel.apply_settings_button.isEnabled() and not window.apply_queued_action.isEnabled()
    window.load_sample_edits()  # a short write on the GUI thread: works during the load
    assert window.table_model.rowCount() == 10 and not window.welcome.isVisible()
    qtbot.waitUntil(lambda: window.service.editor is not None and not window.busy, timeout=RUN_MS)
    assert window.table_model.rowCount() == 10 and not window.welcome.isVisible()
    assert window.model_panel.showing_settings and window.model_panel.layer.value() == 3

    # Deleting every edit brings the welcome back; typing a new one hides it again.
    window.table.selectAll()
    window.edit_list.delete_selected()
    assert window.store.count_edits() == 0 and window.welcome.isVisible()
    window.table.start_new_edit()
    assert not window.welcome.isVisible()
