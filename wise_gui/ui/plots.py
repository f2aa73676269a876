"""The three live plots: loss of the edit training now, router activation scores, shard occupancy.

Events only append to plain buffers and mark a plot dirty; a 40 ms timer redraws the dirty plots, so
a fast stream of training steps costs one redraw per frame, not one per step.
"""

from __future__ import annotations

import html

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QGraphicsItem, QSplitter

from wise_gui.core.wise.editor import ShardStatus
from wise_gui.ui.plot_data import AppliedEditPoints, RoutedPoint
from wise_gui.ui.style import (
    CURRENT_COLOUR,
    EDIT_COLOUR,
    LOCALITY_COLOUR,
    MARGIN_COLOUR,
    MERGED_COLOUR,
    PARAPHRASE_COLOUR,
    SAVED_COLOUR,
    SHARD_COLOUR,
    THRESHOLD_COLOUR,
    UNRELATED_COLOUR,
    shorten,
)

REDRAW_MS = 50
LIVE_MARKER_TICKS = 4  # the router's training star moves every 4th redraw: it costs a whole plot repaint
FEW_TICKS = 20  # up to this many edits or shards, one tick per integer
pg.setConfigOptions(antialias=True, background="w", foreground="#374151")

# Prompt kinds on the router plot: legend label, colour, symbol, x offset from the edit's position.
ROUTER_SERIES = {
    "prompt": ("edit prompt", EDIT_COLOUR, "o", 0.0),
    "paraphrase": ("paraphrase", PARAPHRASE_COLOUR, "t", 0.18),
    "locality": ("locality", LOCALITY_COLOUR, "s", -0.18),
    "unrelated": ("unrelated", UNRELATED_COLOUR, "x", -0.32),
}


def _hover_tip(x, y, data) -> str:
    return f"{data}\nscore {y:.3g}"


class PlotCanvas(pg.GraphicsLayoutWidget):
    """A plot with a title, axis titles and, below the data, a legend that never covers it."""

    def __init__(self, title: str, x_label: str, y_label: str, legend_columns: int = 3):
        super().__init__()
        self.plot_item = self.addPlot(row=0, col=0)
        self.plot_item.setLabel("bottom", x_label)
        self.plot_item.setLabel("left", y_label)
        self.plot_item.showGrid(x=True, y=True, alpha=0.15)
        self.plot_item.setMenuEnabled(False)
        self.legend = pg.LegendItem(colCount=legend_columns, labelTextSize="8pt", horSpacing=14, verSpacing=-4)
        self.addItem(self.legend, row=1, col=0)
        # Axes, title and legend change rarely but are repainted with every frame of the data: caching them
        # as pixmaps makes a live redraw a blit plus the curves.
        for item in [self.plot_item.getAxis(name) for name in ("left", "bottom")] + [self.plot_item.titleLabel, self.legend]:
            item.setCacheMode(QGraphicsItem.DeviceCoordinateCache)
        self.ci.layout.setRowStretchFactor(0, 1)
        self.set_title(title)
        self.setMinimumHeight(190)

    def add(self, item, name: str | None = None):
        self.plot_item.addItem(item)
        if name:
            self.legend.addItem(item, name)
        return item

    def set_title(self, title: str, note: str = "", colour: str | None = None) -> None:
        colour_style = f"; color:{colour}" if colour else ""
        text = f"<span style='font-size:10pt; font-weight:600{colour_style}'>{html.escape(title)}</span>"
        if note:
            text += f"<span style='font-size:8pt'>&nbsp;&nbsp;{html.escape(note)}</span>"
        self.plot_item.setTitle(text)

    def integer_ticks(self, axis: str, count: int) -> None:
        """One tick per whole number while there are few; automatic ticks beyond."""
        if count <= FEW_TICKS:
            self.plot_item.getAxis(axis).setTickSpacing(1, 1)
        else:
            self.plot_item.getAxis(axis).setTickSpacing()


class LossPlot(PlotCanvas):
    """Loss per iteration of the edit training now: cross-entropy of the target and the router's margin
    loss; for an edit picked in the table, its stored total. Every change lands on screen in redraw()."""

    def __init__(self):
        super().__init__("Loss per iteration", "iteration", "loss")
        self.series = {
            "ce": ([], self.add(pg.PlotDataItem(pen=pg.mkPen(EDIT_COLOUR, width=2)), "cross-entropy (new target)")),
            "margin": ([], self.add(pg.PlotDataItem(pen=pg.mkPen(MARGIN_COLOUR, width=2)), "margin (router)")),
            "total": ([], self.add(pg.PlotDataItem(pen=pg.mkPen(UNRELATED_COLOUR, width=1.5, style=Qt.DashLine)), "total")),
        }
        self.training = False
        self.dirty = False
        self.edit_id: int | None = None  # the edit whose curves are shown
        self._label = ""
        self._title: tuple = ("Loss per iteration", "", None)
        self._iterations = 0  # x range while training
        self._y_top = 0.0
        self._state_changed = False  # title, pens or ranges to update in the next redraw

    def values(self, name: str) -> list[float]:
        return self.series[name][0]

    def _show(self, training: bool, title: tuple, **curves: list[float]) -> None:
        """Switches what the plot shows; the curves not named keep their values."""
        self.training, self._title, self._state_changed, self.dirty = training, title, True, True
        for name, values in curves.items():
            self.series[name][0][:] = values

    def start_edit(self, edit_id: int, label: str, iterations: int) -> None:
        self.edit_id, self._label, self._iterations, self._y_top = edit_id, label, iterations, 0.0
        self._show(True, ("Loss — training now", label, CURRENT_COLOUR), ce=[], margin=[], total=[])

    def add_step(self, ce: float, margin: float, total: float) -> None:
        for name, value in (("ce", ce), ("margin", margin), ("total", total)):
            self.series[name][0].append(value)
        self.dirty = True

    def finish_edit(self) -> None:
        """The edit that just trained stays on screen, no longer highlighted."""
        self._show(False, ("Loss — last trained edit", self._label, None))

    def show_total(self, edit_id: int, label: str, total: list[float]) -> None:
        """A stored edit: the apply loop keeps its total loss per iteration."""
        self.edit_id = edit_id
        self._show(False, ("Loss (total) —", label, None), ce=[], margin=[], total=list(total))

    def redraw(self) -> None:
        self.dirty = False
        if self._state_changed:
            self._state_changed = False
            self.set_title(*self._title)
            for name in ("ce", "margin"):  # thicker while the edit trains
                curve = self.series[name][1]
                curve.setPen(pg.mkPen(curve.opts["pen"].color(), width=3 if self.training else 2))
            if self.training:
                # Fixed ranges while training: the axes are not laid out again on every frame (the costly part).
                self.plot_item.disableAutoRange()
                self.plot_item.setXRange(0, self._iterations + 1, padding=0)
            else:
                self.plot_item.enableAutoRange()
        for values, curve in self.series.values():
            curve.setData(np.arange(1, len(values) + 1), np.asarray(values, dtype=float))
        highest = max((max(values) for values, _ in self.series.values() if values), default=0.0)
        if self.training and highest > self._y_top:  # the loss falls: the range grows rarely
            self._y_top = highest * 1.1
            self.plot_item.setYRange(0, self._y_top, padding=0)


class RouterPlot(PlotCanvas):
    """Activation scores of every applied edit and of its paraphrases, locality and unrelated prompts,
    against the routing threshold: above the line a prompt is answered by the side memory."""

    def __init__(self):
        super().__init__("Router activation scores", "applied edit (order)", "activation score")
        self.scatters: dict[str, pg.ScatterPlotItem] = {}
        for kind, (label, colour, symbol, _) in ROUTER_SERIES.items():
            self.scatters[kind] = self.add(pg.ScatterPlotItem(
                symbol=symbol, size=9, pen=pg.mkPen(colour), brush=pg.mkBrush(colour), hoverable=True, hoverSize=13,
                hoverPen=pg.mkPen("#111827", width=1.5), tip=_hover_tip), label)
        self.threshold_curve = self.add(
            pg.PlotDataItem(stepMode="center", pen=pg.mkPen(THRESHOLD_COLOUR, width=2, style=Qt.DashLine)),
            "threshold")
        self.threshold_line = pg.InfiniteLine(
            angle=0, pen=pg.mkPen(THRESHOLD_COLOUR, width=1, style=Qt.DotLine),
            label="threshold {value:.3g}",
            labelOpts={"position": 0.98, "color": THRESHOLD_COLOUR, "anchors": [(1, 1), (1, 1)]})
        self.threshold_line.hide()
        self.plot_item.addItem(self.threshold_line)
        self.live = self.add(pg.ScatterPlotItem(symbol="star", size=22, pen=pg.mkPen("#92400e"),
                                                brush=pg.mkBrush(CURRENT_COLOUR), hoverable=True, tip=_hover_tip),
                             "training now")
        self.selection = pg.ScatterPlotItem(symbol="o", size=20, pen=pg.mkPen("#111827", width=2), brush=None)
        self.plot_item.addItem(self.selection)
        self.edits: dict[int, AppliedEditPoints] = {}  # by apply order
        # WISE-Merge: one threshold for all edits, drawn across the plot. WISE-Retrieve: each memory its own.
        self.shared_threshold = True
        self.live_point: RoutedPoint | None = None
        self.selected_edit: int | None = None
        self.dirty = False
        self.live_dirty = False  # only the star moved: redrawn at a slower pace than the history

    def set_history(self, edits: list[AppliedEditPoints], shared_threshold: bool) -> None:
        self.edits = {e.order: e for e in edits}
        self.shared_threshold = shared_threshold
        self.live_point = None
        self.dirty = True

    def add_edit(self, edit: AppliedEditPoints) -> None:
        self.edits[edit.order] = edit
        self.live_point = None
        self.dirty = True

    def set_live(self, order: int, prompt: str, score: float) -> None:
        """The edit training now: its mean score this step, drawn as a star where it will land."""
        self.live_point = RoutedPoint(order, -1, "prompt", f"training: {prompt}", score)
        self.live_dirty = True

    def clear_live(self) -> None:
        self.live_point = None
        self.live_dirty = True

    def select_edit(self, edit_id: int | None) -> None:
        self.selected_edit = edit_id
        self.dirty = True

    def points(self, kind: str) -> list[RoutedPoint]:
        return [p for order in sorted(self.edits) for p in self.edits[order].points if p.kind == kind]

    def redraw(self) -> None:
        self.dirty = False
        for kind, scatter in self.scatters.items():
            offset = ROUTER_SERIES[kind][3]
            points = self.points(kind)
            scatter.setData(x=[p.order + offset for p in points], y=[p.score for p in points],
                            data=[shorten(p.prompt, 80) for p in points])
        orders = sorted(o for o, e in self.edits.items() if e.threshold is not None)
        thresholds = [self.edits[o].threshold for o in orders]
        if orders:
            # Step curve: the threshold in force after each edit, from the middle of one edit to the next.
            edges = np.append(np.asarray(orders, dtype=float) - 0.5, orders[-1] + 0.5)
            self.threshold_curve.setData(edges, np.asarray(thresholds, dtype=float))
            self.threshold_line.setValue(thresholds[-1])
            self.threshold_line.setVisible(self.shared_threshold)
        else:
            self.threshold_curve.setData([], [])
            self.threshold_line.hide()
        selected = [p for p in self.points("prompt") if p.edit_id == self.selected_edit]
        self.selection.setData(x=[p.order for p in selected], y=[p.score for p in selected])
        self.redraw_live()

    def redraw_live(self) -> None:
        self.live_dirty = False
        live = [self.live_point] if self.live_point is not None else []
        self.live.setData(x=[p.order for p in live], y=[p.score for p in live], data=[p.prompt for p in live])
        self.integer_ticks("bottom", max(self.edits, default=0) + len(live))


class ShardPlot(PlotCanvas):
    """One bar per knowledge shard: edits it holds out of the shard size; merged, full and current shards."""

    def __init__(self):
        super().__init__("Knowledge shards", "shard", "edits held", legend_columns=3)
        self.bars = {
            "merged": self.add(pg.BarGraphItem(x=[], height=[], width=0.7, brush=MERGED_COLOUR, pen=None),
                               "merged into memory"),
            "saved": self.add(pg.BarGraphItem(x=[], height=[], width=0.7, brush=SAVED_COLOUR, pen=None),
                              "full, waiting for merge"),
            "current": self.add(pg.BarGraphItem(x=[], height=[], width=0.7, brush=SHARD_COLOUR, pen=None),
                                "current shard"),
            "training": self.add(pg.BarGraphItem(x=[], height=[], width=0.7, brush=CURRENT_COLOUR,
                                                 pen=pg.mkPen("#92400e", width=1.5)), "edit training now"),
        }
        self.capacity_line = pg.InfiniteLine(angle=0, pen=pg.mkPen("#6b7280", style=Qt.DashLine),
                                             label="shard size {value:g}",
                                             labelOpts={"position": 0.02, "color": "#374151", "anchors": [(0, 1), (0, 1)]})
        self.plot_item.addItem(self.capacity_line)
        self.fill_label = pg.TextItem(color=SHARD_COLOUR, anchor=(0.5, 1))
        self.plot_item.addItem(self.fill_label)
        # All merge events in one item of vertical segments, so thousands of merges stay cheap to draw.
        self.merge_marks = self.add(pg.PlotDataItem(connect="pairs", pen=pg.mkPen(MERGED_COLOUR, width=1.5,
                                                                                 style=Qt.DashDotLine)), "merge")
        self.status: ShardStatus | None = None
        self.training = False
        self.dirty = False

    def set_status(self, status: ShardStatus | None) -> None:
        self.status = status
        self.dirty = True

    def set_training(self, training: bool) -> None:
        self.training = training
        self.dirty = True

    def shard_heights(self) -> dict[str, list[tuple[int, int]]]:
        """(shard number, edits) per kind of bar, derived from the status: every shard before the current
        one is full; the oldest of them are the merged ones."""
        heights: dict[str, list[tuple[int, int]]] = {"merged": [], "saved": [], "current": [], "training": []}
        status = self.status
        if status is None:
            return heights
        size = status.save_freq
        merged_shards = sum(status.merged_memories) // size if size else 0
        for number in range(1, status.shard_number):
            heights["merged" if number <= merged_shards else "saved"].append((number, size))
        heights["current"].append((status.shard_number, status.shard_edits))
        if self.training:
            heights["training"].append((status.shard_number, 1))
        return heights

    def redraw(self) -> None:
        self.dirty = False
        status = self.status
        heights = self.shard_heights()
        for kind, bar in self.bars.items():
            bars = heights[kind]
            base = status.shard_edits if kind == "training" and status is not None else 0
            bar.setOpts(x=[n for n, _ in bars], height=[h for _, h in bars], y0=[base] * len(bars))
        if status is None:
            self.merge_marks.setData([], [])
            return
        self.capacity_line.setValue(status.save_freq)
        held = status.shard_edits + (1 if self.training else 0)
        self.fill_label.setText(f"{status.shard_edits}/{status.save_freq}" + (" +1" if self.training else ""))
        self.fill_label.setPos(status.shard_number, held)
        # A merge happens when the shard holding edit number `edits` closes: marked right after that shard.
        positions = np.repeat(np.asarray(status.merge_events, dtype=float) / status.save_freq + 0.5, 2)
        heights = np.tile([0.0, status.save_freq * 1.05], len(status.merge_events))
        self.merge_marks.setData(positions, heights)
        self.plot_item.setYRange(0, status.save_freq * 1.12, padding=0)
        self.plot_item.setXRange(0.4, max(status.shard_number, 3) + 0.6, padding=0)
        self.integer_ticks("bottom", status.shard_number)
        self.set_title("Knowledge shards", f"shard {status.shard_number}: {status.shard_edits}/{status.save_freq} · "
                       f"merge every {status.merge_freq}")


class PlotPanel(QSplitter):
    """The three plots stacked, redrawn together by one coalescing timer."""

    def __init__(self, parent=None):
        super().__init__(Qt.Vertical, parent)
        self.loss = LossPlot()
        self.router = RouterPlot()
        self.shards = ShardPlot()
        for plot in self.plots:
            self.addWidget(plot)
        self.setChildrenCollapsible(False)
        self._ticks = 0
        self._last_drawn = 0
        self._timer = QTimer(self, interval=REDRAW_MS)
        self._timer.timeout.connect(self._tick)
        self._timer.start()

    @property
    def plots(self) -> tuple[LossPlot, RouterPlot, ShardPlot]:
        return self.loss, self.router, self.shards

    def _tick(self) -> None:
        """Redraws at most one plot per tick, taking turns: when an edit ends and all three change, their
        repaints land in three frames instead of one long stall of the event loop."""
        self._ticks += 1
        plots = self.plots
        for offset in range(1, len(plots) + 1):
            plot = plots[(self._last_drawn + offset) % len(plots)]
            if plot.dirty:
                plot.redraw()
                self._last_drawn = plots.index(plot)
                return
        if self.router.live_dirty and self._ticks % LIVE_MARKER_TICKS == 0:
            self.router.redraw_live()

    def redraw_dirty(self) -> None:
        """Everything that changed, now (tests and screenshots read the plots right after)."""
        for plot in self.plots:
            if plot.dirty:
                plot.redraw()
        if self.router.live_dirty:
            self.router.redraw_live()
