"""Panels on their own: WISE settings with tooltips, reference values, presets and refusals; run progress
and ETA; the before/after answers (highlighting, never a blank cell); the plots' coalesced redraws."""

from __future__ import annotations

import random

from wise_gui.app.views import applied_edit_points
from wise_gui.core.evaluation import QuestionAnswer
from wise_gui.core.inference import MAIN_ROUTE, Route
from wise_gui.core.wise.editor import MemoryStatus
from wise_gui.core.wise.presets import PRESETS, preset
from wise_gui.core.wise.settings import WiseSettings, reference_settings
from wise_gui.ui.answers_panel import (
    AFTER_COLUMN,
    BEFORE_COLUMN,
    HTML_ROLE,
    RESULT_COLUMN,
    ROUTE_COLUMN,
    AnswersPanel,
    highlight_changes,
)
from wise_gui.ui.labels import NO_ANSWER, NOT_ASKED, memory_label
from wise_gui.ui.model_panel import SETTING_GROUPS, ModelPanel
from wise_gui.ui.plots import PlotPanel
from wise_gui.ui.run_progress import RunProgress


def shown_panel(qtbot) -> ModelPanel:
    panel = ModelPanel()
    qtbot.addWidget(panel)
    return panel


def test_every_setting_has_an_editor_a_tooltip_and_its_reference_value(qtbot):
    panel = shown_panel(qtbot)
    help_text = WiseSettings.field_help()
    reference = reference_settings()
    form = panel.settings_form
    shown = {name for names in SETTING_GROUPS.values() for name in names}
    assert shown | {"layer"} == set(help_text)  # nothing left out, nothing invented
    for name in shown:
        tip = form.editors[name].toolTip()
        assert help_text[name] in tip and "Reference value" in tip
        assert form.reference_labels[name].text().startswith("ref ")
    assert form.reference_labels["n_iter"].text() == f"ref {reference.n_iter}"

    settings = WiseSettings(layer=3, n_iter=120, lr=0.5, margin_scale="relative", method="wise-retrieve", save_freq=4)
    panel.show_editor(settings, n_layers=4, default=3, module_name="model.layers.3.mlp.down_proj", locked=False)
    assert panel.settings() == settings
    panel.layer.setValue(2)
    form.editors["n_iter"].setValue(80)
    assert panel.settings() == settings.replace(layer=2, n_iter=80)
    panel.show_editor(settings, n_layers=4, default=3, module_name="m", locked=True)
    assert not panel.layer.isEnabled() and "Fixed" in panel.layer_note.text()


def test_choices_and_ranges_come_from_the_settings_and_a_preset_fills_the_form(qtbot):
    """Issue 15.10: the new fields, Literal choices and ranges from the settings' metadata, presets."""
    panel = shown_panel(qtbot)
    form = panel.settings_form
    for name in ("method", "mask_kind", "margin_scale", "merge_method"):
        editor = form.editors[name]
        assert [editor.itemText(i) for i in range(editor.count())] == list(WiseSettings.choices(name))
    assert form.editors["overlap_threshold"].maximum() == 1.0 and form.editors["mask_ratio"].maximum() == 1.0
    assert form.editors["n_iter"].minimum() == 1 and form.editors["n_iter"].maximum() == 100_000
    for name in ("route_candidates", "chat_form"):
        assert name in form.editors

    panel.show_editor(WiseSettings(layer=2), n_layers=4, default=3, module_name="m", locked=False)
    assert form.preset.currentText() == "custom"  # the paper's values are none of the presets
    index = form.preset.findText("memoir")
    form.preset.setCurrentIndex(index)
    form.preset.activated.emit(index)
    assert panel.settings() == preset("memoir").replace(layer=2)  # the layer stays the model's
    assert form.editors["method"].currentText() == "memoir"
    assert set(PRESETS) <= {form.preset.itemText(i) for i in range(form.preset.count())}
    form.editors["n_iter"].setValue(31)
    assert form.preset.currentText() == "custom"


def test_a_refused_setting_is_a_message_not_a_crash(qtbot):
    panel = shown_panel(qtbot)
    panel.show_editor(WiseSettings(layer=2), n_layers=4, default=3, module_name="m", locked=False)
    requested = []
    panel.settings_requested.connect(requested.append)
    panel.settings_form.editors["lr"].setValue(0.0)  # the spin box allows 0, the settings want above 0
    panel.apply_settings_button.click()
    assert requested == []
    assert panel.settings_problem.isVisibleTo(panel) and "lr must be above 0" in panel.settings_problem.text()
    panel.settings_form.editors["lr"].setValue(0.5)
    panel.apply_settings_button.click()
    assert requested == [WiseSettings(layer=2, lr=0.5)] and not panel.settings_problem.isVisibleTo(panel)


def test_no_settings_are_shown_before_a_workspace_is_open(qtbot):
    """Issue 15.9: while the model loads the form shows no made-up values (0.000, layer 0)."""
    panel = shown_panel(qtbot)
    panel.show()
    assert not panel.showing_settings
    assert not panel.layer.isVisible() and not panel.settings_form.isVisible()
    assert "once the model has loaded" in panel.waiting_note.text()
    panel.show_editor(WiseSettings(layer=2), n_layers=4, default=3, module_name="m", locked=False)
    assert panel.showing_settings and panel.layer.isVisible() and panel.layer.value() == 2


def test_run_progress_and_eta():
    progress = RunProgress(total=4, n_iter=100)
    progress.edit_started()
    assert progress.eta_seconds() is None
    progress.steps(50, seconds=1.0)  # 50 steps per second: 2 s per edit
    assert progress.fraction() == 0.5 / 4
    assert progress.eta_seconds() == 1.0 + 3 * 2.0
    progress.edit_finished(seconds=3.0)
    progress.edit_started()
    assert progress.fraction() == 1 / 4
    assert progress.eta_seconds() == 3.0 + 2 * 3.0  # measured edits take over from the step budget


def test_progress_moves_within_an_edit_and_the_eta_settles():
    """Issue 15.5: the bar moves with the steps; the ETA is a smoothed step rate times the steps left,
    with an edit's steps estimated from the finished ones, so it settles instead of jumping."""
    rng = random.Random(0)
    progress = RunProgress(total=10, n_iter=70, settle_steps=5)
    fractions, etas, elapsed = [], [], 0.0
    for _edit in range(10):
        progress.edit_started()
        seconds = 0.0
        for step in range(1, 26):  # every edit learns at step 20 and stops 5 steps later, as the engine does
            seconds += 0.2 * rng.uniform(0.7, 1.3)  # noisy steps of 0.2 s on average
            progress.steps(step, seconds, learnt=step >= 20)
            fractions.append(progress.fraction())
            etas.append((elapsed + seconds, progress.eta_seconds()))
        progress.edit_finished(seconds=seconds + 1.0)  # answering and saving take 1 s more
        elapsed += seconds + 1.0
    assert fractions == sorted(fractions) and fractions[-1] < 1.0 == progress.fraction()
    assert fractions[10] > 0 and fractions[24] < 0.1  # it moves during the first edit, not only at its end
    # After the first edit the estimate stays within 20% of the true time left.
    total = elapsed
    for at, eta in etas[25:-1]:
        truth = total - at
        assert abs(eta - truth) <= 0.2 * truth + 1.0, (at, eta, truth)
    # Once learnt, an edit ends settle_steps later: its own remaining steps say so.
    progress.edit_started()
    progress.steps(3, 0.6, learnt=True)
    assert progress.current_expected() == 3 + 5


def test_before_after_marks_what_changed(qtbot):
    assert highlight_changes("Paris is nice", "Canberra is nice").startswith("<span")
    assert "is nice" in highlight_changes("Paris is nice", "Canberra is nice")
    assert "<span" not in highlight_changes("same words", "same words")
    panel = AnswersPanel()
    qtbot.addWidget(panel)
    panel.show_answers("edit", [
        QuestionAnswer("prompt", "chat", "The capital of Australia is", "Canberra", "Sydney", "Canberra",
                       Route(0, "merged", 4.2, 3.0), True),
        QuestionAnswer("locality", "chat", "Who wrote Hamlet?", "", "Shakespeare", "Shakespeare",
                       Route(-1, "main", 1.0, 3.0), True),
    ])
    assert panel.after_answers() == ["Canberra", "Shakespeare"]
    assert "Canberra" in panel.table.item(0, AFTER_COLUMN).data(HTML_ROLE)  # changed: highlighted
    assert panel.table.item(1, AFTER_COLUMN).data(HTML_ROLE) is None  # unchanged
    assert panel.table.item(1, 2).text() == "same as before"
    assert [panel.table.item(r, RESULT_COLUMN).text() for r in (0, 1)] == ["✓ pass", "✓ pass"]
    assert panel.column_texts(ROUTE_COLUMN) == ["side memory 1 (merged memory)", "main memory"]
    assert "asked as chat" in panel.caption.text()


def test_the_selected_answer_is_written_out_whole_when_the_columns_are_narrow(qtbot):
    panel = AnswersPanel()
    qtbot.addWidget(panel)
    panel.resize(420, 300)
    question = "When was the inception of IAAF Combined Events Challenge, the athletics series?"
    panel.show_answers("edit", [
        QuestionAnswer("prompt", "chat", question, "2006", "The IAAF Combined Events Challenge began in 1998.",
                       "2006", Route(0, "saved", 103.0, 47.6), True),
        QuestionAnswer("locality", "chat", "Who wrote Hamlet?", "", "Shakespeare", "Shakespeare", MAIN_ROUTE, True),
    ])
    panel.show()
    cell = panel.table.visualItemRect(panel.table.item(0, 1))
    assert panel.table.fontMetrics().horizontalAdvance(question) > cell.width()  # elided in its cell
    whole = panel.selected_text.text()
    assert question in whole and "began in 1998." in whole and "2006" in whole and "side memory 1" in whole
    panel.table.setCurrentCell(1, 1)
    assert "Who wrote Hamlet?" in panel.selected_text.text() and question not in panel.selected_text.text()
    panel.clear("nothing")
    assert panel.selected_text.isHidden()


def test_no_answer_cell_is_ever_blank(qtbot):
    """Issue 15.1: an answer the model ended at once says so; one never asked says so too."""
    panel = AnswersPanel()
    qtbot.addWidget(panel)
    panel.show_answers("edit", [
        QuestionAnswer("prompt", "raw", "Who designed it?", "Chris", "", "   ", MAIN_ROUTE, False),
        QuestionAnswer("paraphrase", "raw", "Designed by?", "Chris", None, "Chris", Route(2, "saved", 5.0, 3.0), True),
    ])
    for column in range(panel.table.columnCount()):
        assert all(text.strip() for text in panel.column_texts(column)), column
    assert panel.column_texts(BEFORE_COLUMN) == [NO_ANSWER, NOT_ASKED]
    assert panel.after_answers() == [NO_ANSWER, "Chris"]
    assert "Not asked" in panel.table.item(1, BEFORE_COLUMN).toolTip()


def test_memory_labels_are_made_from_the_route():
    assert memory_label(-1, "main") == "main memory"
    assert memory_label(2, "merged") == "side memory 3 (merged memory)"
    assert memory_label(0, "shard") == "side memory 1 (current shard)"
    assert memory_label(3, "residual") == "residual memory (mask of edit 4)"


def test_plots_redraw_on_the_timer_not_per_event(qtbot):
    plots = PlotPanel()
    qtbot.addWidget(plots)
    plots.loss.start_edit(1, "edit 1", iterations=200)
    for i in range(200):
        plots.loss.add_step(5.0 - i / 50, 1.0, 6.0 - i / 50)
    assert len(plots.loss.series["ce"][1].getData()[0] or []) == 0  # nothing drawn yet
    qtbot.waitUntil(lambda: not plots.loss.dirty, timeout=1000)
    assert len(plots.loss.series["ce"][1].getData()[0]) == 200

    plots.router.set_history([applied_edit_points(1, 7, "p", 4.0, 3.0, [], unrelated_score=0.5)], shared_threshold=True)
    plots.shards.set_status(MemoryStatus("wise-merge", total_edits=5, save_freq=2, merge_freq=4, shard_number=3,
                                         shard_edits=1, saved_shards=[], merged_memories=[4], merge_events=[4],
                                         memory_bytes=1000))
    plots.redraw_dirty()
    assert list(plots.router.scatters["unrelated"].getData()[1]) == [0.5]
    assert plots.router.threshold_line.value() == 3.0
    assert plots.shards.shard_heights() == {"merged": [(1, 2), (2, 2)], "saved": [], "current": [(3, 1)], "training": []}
