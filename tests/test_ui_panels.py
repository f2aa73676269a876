"""Panels on their own: WISE settings with tooltips and reference values, run progress and ETA, the
before/after highlighting, the plots' coalesced redraws."""

from __future__ import annotations

from wise_gui.core.wise.editor import ShardStatus
from wise_gui.core.wise.settings import WiseSettings, reference_settings
from wise_gui.ui.answers_panel import AFTER_COLUMN, HTML_ROLE, AnswersPanel, highlight_changes
from wise_gui.ui.model_panel import SETTING_GROUPS, ModelPanel
from wise_gui.ui.plot_data import applied_edit_points
from wise_gui.ui.plots import PlotPanel
from wise_gui.ui.run_progress import RunProgress


def test_every_setting_has_an_editor_a_tooltip_and_its_reference_value(qtbot):
    panel = ModelPanel()
    qtbot.addWidget(panel)
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

    settings = WiseSettings(layer=3, n_iter=120, lr=0.5, margin_scale="relative", retrieve=True, save_freq=4)
    panel.show_editor(settings, n_layers=4, default=3, module_name="model.layers.3.mlp.down_proj", locked=False)
    assert panel.settings() == settings
    panel.layer.setValue(2)
    form.editors["n_iter"].setValue(80)
    assert panel.settings() == settings.replace(layer=2, n_iter=80)
    panel.show_editor(settings, n_layers=4, default=3, module_name="m", locked=True)
    assert not panel.layer.isEnabled() and "Fixed" in panel.layer_note.text()


def test_run_progress_and_eta():
    now = [0.0]
    progress = RunProgress(total=4, iterations_per_edit=100, clock=lambda: now[0])
    progress.edit_started()
    assert progress.eta_seconds() is None
    now[0] = 1.0
    progress.step(50)  # 50 steps per second: 2 s per edit
    assert progress.fraction() == 0.5 / 4
    assert progress.eta_seconds() == 1.0 + 3 * 2.0
    progress.edit_finished(seconds=3.0)
    progress.edit_started()
    assert progress.fraction() == 1 / 4
    assert progress.eta_seconds() == 3.0 + 2 * 3.0  # measured edits take over from the step rate


def test_before_after_marks_what_changed(qtbot):
    assert highlight_changes("Paris is nice", "Canberra is nice").startswith("<span")
    assert "is nice" in highlight_changes("Paris is nice", "Canberra is nice")
    assert "<span" not in highlight_changes("same words", "same words")
    panel = AnswersPanel()
    qtbot.addWidget(panel)
    panel.show_answers("edit", [
        {"kind": "prompt", "prompt": "The capital of Australia is", "expected": "Canberra", "before": "Sydney",
         "after": "Canberra", "routed_to": "side memory 1", "score": 4.2, "threshold": 3.0, "passed": True},
        {"kind": "locality", "prompt": "Who wrote Hamlet?", "expected": "", "before": "Shakespeare",
         "after": "Shakespeare", "routed_to": "main memory", "score": 1.0, "threshold": 3.0, "passed": True},
    ])
    assert panel.after_answers() == ["Canberra", "Shakespeare"]
    assert "Canberra" in panel.table.item(0, AFTER_COLUMN).data(HTML_ROLE)  # changed: highlighted
    assert panel.table.item(1, AFTER_COLUMN).data(HTML_ROLE) is None  # unchanged
    assert panel.table.item(1, 2).text() == "same as before"
    assert [panel.table.item(r, 7).text() for r in (0, 1)] == ["✓ pass", "✓ pass"]


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
    plots.shards.set_status(ShardStatus(save_freq=2, merge_freq=4, shard_number=3, shard_edits=1, saved_shards=[],
                                        merged_memories=[4], merge_events=[4], total_edits=5))
    plots.redraw_dirty()
    assert list(plots.router.scatters["unrelated"].getData()[1]) == [0.5]
    assert plots.router.threshold_line.value() == 3.0
    assert plots.shards.shard_heights() == {"merged": [(1, 2), (2, 2)], "saved": [], "current": [(3, 1)], "training": []}
