"""The plots as users of napari or TensorBoard expect them (issue 15.9, 15.10): readable when empty,
labels that do not overlap, a log-scale loss, hover read-outs, zoom and reset, PNG/SVG export, a router
plot that stays readable and fast with 1,000 edits, and a summary instead of a bar per one-edit memory."""

from __future__ import annotations

import itertools
import time

import pyqtgraph as pg
import pytest
from PySide6.QtCore import QPointF

from wise_gui.app.views import applied_edit_points
from wise_gui.core.evaluation import QuestionAnswer
from wise_gui.core.inference import Route
from wise_gui.core.wise.editor import MemoryStatus
from wise_gui.ui.plots import OLDER_BINS, RECENT_EXACT, LossPlot, PlotPanel, RouterPlot, ShardView


def status(**values) -> MemoryStatus:
    fields = dict(method="wise-merge", total_edits=0, save_freq=3, merge_freq=6, shard_number=1, shard_edits=0,
                  saved_shards=[], merged_memories=[], merge_events=[], memory_bytes=0)
    return MemoryStatus(**{**fields, **values})


def shown(qtbot, widget, size=(520, 320)):
    qtbot.addWidget(widget)
    widget.resize(*size)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def tick_texts(plot_item, axis_name: str) -> list[str]:
    """The tick labels an axis draws over the current view."""
    axis = plot_item.getAxis(axis_name)
    low, high = plot_item.vb.viewRange()[1 if axis_name == "left" else 0]
    length = axis.height() if axis_name == "left" else axis.width()
    return [text for spacing, values in axis.tickValues(low, high, max(length, 100))
            for text in axis.tickStrings(values, axis.scale, spacing)]


def edits(count: int, threshold: float = 2.0):
    """`count` applied edits' router points: each with a paraphrase, a locality question and an unrelated sample."""
    for order in range(1, count + 1):
        answers = [QuestionAnswer("paraphrase", "raw", f"p{order}", "t", "", "t", Route(0, "merged", 3.0, threshold), True),
                   QuestionAnswer("locality", "raw", f"l{order}", "", "a", "a", Route(-1, "main", 0.5, threshold), True)]
        yield applied_edit_points(order, 1000 + order, f"question {order}", 4.0 + order / count, threshold, answers,
                                  unrelated_score=1.0)


def test_empty_plots_have_sensible_axes(qtbot):
    plots = shown(qtbot, PlotPanel(), (520, 900))
    plots.redraw_dirty()
    bars = plots.shards.bars_plot.plot_item
    assert bars.vb.viewRange() == [[0.4, 3.6], [0.0, 1.12]]
    for plot_item in (bars, plots.router.plot_item):
        for axis in ("left", "bottom"):
            texts = tick_texts(plot_item, axis)
            assert texts and not any("e-" in t or "e+" in t for t in texts), texts
            assert "x0.001" not in plot_item.getAxis(axis).labelString()


def visible_texts(view: ShardView) -> list:
    """The text items the user sees on the bars (none while the summary is shown)."""
    if view.showing_summary:
        return []
    return [item for item in view.bars_plot.plot_item.vb.allChildren()
            if isinstance(item, pg.TextItem) and item.isVisible() and item.toPlainText()]


def test_the_shard_plot_labels_do_not_overlap(qtbot):
    view = shown(qtbot, ShardView())
    # An empty workspace of one-edit shards with its first edit training: "shard size 1" sat on "0/1 +1".
    view.set_status(status(save_freq=1, merge_freq=1, shard_number=1, shard_edits=0))
    view.set_training(True)
    view.redraw()
    assert view.showing_summary and visible_texts(view) == []
    assert "+1 edit training now" in view.summary.shown_text()
    # A full first shard with an edit training on top: the fill label sits at the shard size's height.
    view.set_status(status(save_freq=2, merge_freq=4, shard_number=1, shard_edits=1, total_edits=1))
    view.set_training(True)
    view.redraw()
    plot = view.bars_plot
    texts = visible_texts(view)
    assert any(item.toPlainText() == "1/2 +1" for item in texts)
    for a, b in itertools.combinations(texts, 2):
        assert not a.sceneBoundingRect().intersects(b.sceneBoundingRect()), (a.toPlainText(), b.toPlainText())
    assert "shard size 2" in plot.plot_item.titleLabel.text


def test_shards_of_several_edits_are_bars_and_one_edit_memories_a_summary(qtbot):
    view = shown(qtbot, ShardView())
    # Two edits per shard, merged after two: the first shard merged into the memory.
    view.set_status(status(total_edits=2, save_freq=2, merge_freq=2, shard_number=2, merged_memories=[2], merge_events=[2]))
    view.redraw()
    assert not view.showing_summary
    assert view.shard_heights()["merged"] == [(1, 2)]
    assert list(view.bars_plot.bars["merged"].opts["height"]) == [2]
    assert list(view.bars_plot.merge_marks.getData()[0]) == [1.5, 1.5]

    # A thousand one-edit memories: a summary, not a thousand bars.
    view.set_status(status(method="wise-retrieve", total_edits=1000, save_freq=1, merge_freq=1, shard_number=1001,
                           merged_memories=[1] * 1000, merge_events=list(range(1, 1001)), memory_bytes=33_000_000,
                           working_bytes=3_500_000, whitening_bytes=1_500_000))
    view.redraw()
    assert view.showing_summary
    text = view.summary.shown_text()
    assert "1,000 memories for 1,000 edits" in text and "33.0 MB of RAM" in text and "33.0 KB each" in text
    # The empty shard's training copy and the router's key whitening are said apart: neither is a per-edit cost.
    assert "3.5 MB for the next edit's training copy" in text and "1.5 MB for the router's key whitening" in text

    view.set_status(status(method="memoir", total_edits=40, save_freq=500, columns_used=0.25, memory_bytes=5_000_000))
    view.redraw()
    assert view.showing_summary and "40 edits in one residual memory" in view.summary.shown_text()
    assert view.summary.columns.isVisibleTo(view) and view.summary.columns.value() == 250


def test_the_router_plot_with_a_thousand_edits_stays_readable_and_fast(qtbot):
    router = shown(qtbot, RouterPlot(), (700, 400))
    history = list(edits(1000))
    started = time.perf_counter()
    router.set_history(history, shared_threshold=False)
    router.select_edit(1005)  # an old edit the user picked in the table
    router.redraw()
    qtbot.wait(1)
    assert time.perf_counter() - started < 0.5
    for kind, scatter in router.scatters.items():
        xs = list(scatter.getData()[0])
        assert len(xs) <= RECENT_EXACT + OLDER_BINS + 1, kind
    prompt_x = list(router.scatters["prompt"].getData()[0])
    assert prompt_x[-RECENT_EXACT:] == list(range(801, 1001))  # the newest exactly
    assert 5.0 in prompt_x  # the selected edit exactly, though it is old
    assert len(router.threshold_curve.getData()[0]) == 1001  # the threshold in force after every edit

    # The newest edit's point, hovered: which edit, its score and its threshold.
    newest = history[-1].points[0]
    text = router.show_readout_at(router.plot_item.vb.mapViewToScene(QPointF(newest.order, newest.score)))
    assert text.startswith("edit 1000 · edit prompt “question 1000”") and "score 5" in text
    assert "vs threshold 2 (side memory answers)" in text and router.readout.isVisible()
    # An averaged point says which edits it stands for.
    binned = next(p for p in router.drawn("prompt") if not hasattr(p, "order") and p.first > 5)
    text = router.show_readout_at(router.plot_item.vb.mapViewToScene(QPointF((binned.first + binned.last) / 2,
                                                                             binned.score)))
    assert text.startswith(f"edits {binned.first}–{binned.last}: edit prompts, mean score")
    assert router.show_readout_at(router.plot_item.vb.mapViewToScene(QPointF(500, 100.0))) == ""
    assert not router.readout.isVisible()


def test_zoom_resets_and_plots_export_as_png_and_svg(qtbot, tmp_path):
    router = shown(qtbot, RouterPlot())
    router.redraw()  # empty first, as a new workspace shows it
    router.set_history(list(edits(3)), shared_threshold=True)
    router.redraw()
    router.plot_item.vb.updateAutoRange()
    (x_low, x_high), (y_low, y_high) = router.plot_item.vb.viewRange()
    assert x_low < 1 and x_high > 3 and y_low < 0.5 and y_high > 5  # every point in view, scores of 4 to 5
    router.plot_item.vb.autoRange()
    full = router.plot_item.vb.viewRange()
    router.plot_item.vb.scaleBy((0.2, 0.2))  # the mouse wheel's zoom
    assert router.plot_item.vb.viewRange()[0][1] - router.plot_item.vb.viewRange()[0][0] < (full[0][1] - full[0][0]) / 2
    router.reset_action.trigger()
    router.plot_item.vb.updateAutoRange()
    assert sum(router.plot_item.vb.viewRange(), []) == pytest.approx(sum(full, []), rel=0.05)

    menu = [a.text() for a in router.actions()]
    assert menu == ["Reset zoom", "Export as PNG…", "Export as SVG…"]  # the right-click menu
    png = router.export(tmp_path / "router.png")
    svg = router.export(tmp_path / "router.svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert "<svg" in svg.read_text() and "activation score" in svg.read_text()


def test_the_loss_has_a_log_scale(qtbot):
    loss = shown(qtbot, LossPlot())
    loss.start_edit(1, "edit 1", iterations=50)
    for i in range(50):
        loss.add_step(5.0 * 0.8 ** i, 0.0 if i > 10 else 1.0, 5.0 * 0.8 ** i)
    loss.redraw()
    assert "Log scale" in [a.text() for a in loss.actions()]
    loss.log_action.trigger()
    loss.redraw()
    loss.plot_item.vb.updateAutoRange()
    assert loss.plot_item.getAxis("left").logMode
    low, high = loss.plot_item.vb.viewRange()[1]
    assert low < -3 and high > 0.6  # log10 of the falling loss and of the zero margin (floored)
    text = loss.show_readout_at(loss.plot_item.vb.mapViewToScene(QPointF(2, 0)))
    assert text.startswith("iteration 2: ce 4, margin 1")
