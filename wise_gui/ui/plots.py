"""The live plots: loss of the edit training now, router activation scores, and the side memory's shape.

Events only append to plain buffers and mark a plot dirty; a timer redraws the dirty plots, so a fast
stream of training steps costs one redraw per frame, not one per step.

Every plot zooms and pans with the mouse, resets with its ⟲ button, exports as PNG or SVG (its ⤓ button
or right-click menu) and names the point under the mouse in a read-out line. The router plot stays
readable with thousands of edits: the newest RECENT_EXACT edits (and the selected one) are drawn
exactly, older ones averaged in at most OLDER_BINS bins per kind of prompt. The memory plot shows bars
per knowledge shard; where a bar per shard would say nothing (one memory per edit, or MEMOIR's single
residual memory) it shows a summary instead.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from pyqtgraph import exporters
from PySide6.QtCore import QPointF, QRectF, Qt, QTimer
from PySide6.QtGui import QAction, QPainter, QTextDocumentFragment
from PySide6.QtSvg import QSvgGenerator
from PySide6.QtWidgets import (
    QFileDialog,
    QGraphicsItem,
    QLabel,
    QMenu,
    QProgressBar,
    QSplitter,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from wise_gui.app.views import AppliedEditPoints, RoutedPoint
from wise_gui.core.wise.editor import MemoryStatus
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
    format_bytes,
    format_score,
    shorten,
)

REDRAW_MS = 50
LIVE_MARKER_TICKS = 4  # the router's training star moves every 4th redraw: it costs a whole plot repaint
FEW_TICKS = 20  # up to this many edits or shards, one tick per integer
RECENT_EXACT = 200  # the newest edits drawn one point each
OLDER_BINS = 100  # the older ones averaged into at most this many points per kind
LOG_FLOOR = 1e-4  # a loss of 0 on a log axis
EXPORT_FILTER = "PNG image (*.png);;SVG drawing (*.svg)"
pg.setConfigOptions(antialias=True, background="w", foreground="#374151")

# Prompt kinds on the router plot: legend label, colour, symbol, x offset from the edit's position.
ROUTER_SERIES = {
    "prompt": ("edit prompt", EDIT_COLOUR, "o", 0.0),
    "paraphrase": ("paraphrase", PARAPHRASE_COLOUR, "t", 0.18),
    "locality": ("locality", LOCALITY_COLOUR, "s", -0.18),
    "unrelated": ("unrelated", UNRELATED_COLOUR, "x", -0.32),
}
KIND_NAMES = {"prompt": "edit prompt", "paraphrase": "paraphrase", "locality": "locality question",
              "unrelated": "unrelated sample"}


class PlotCanvas(pg.GraphicsLayoutWidget):
    """A plot with a title, axis titles, a legend below the data (never covering it), a read-out line of
    the point under the mouse, and tools: reset the zoom, export as PNG or SVG."""

    def __init__(self, title: str, x_label: str, y_label: str, legend_columns: int = 2):
        super().__init__()
        self.plot_item = self.addPlot(row=0, col=0)
        self.plot_item.setLabel("bottom", x_label)
        self.plot_item.setLabel("left", y_label)
        self.plot_item.showGrid(x=True, y=True, alpha=0.15)
        self.plot_item.setMenuEnabled(False)
        for name in ("left", "bottom"):  # no "(x0.001)" beside an axis title
            self.plot_item.getAxis(name).enableAutoSIPrefix(False)
        # Compact: the legend's width is the plot's minimum width (pyqtgraph never shrinks below it).
        self.legend = pg.LegendItem(colCount=legend_columns, labelTextSize="8pt", horSpacing=6, verSpacing=-4)
        self.addItem(self.legend, row=1, col=0)
        # Axes, title and legend change rarely but are repainted with every frame of the data: caching them
        # as pixmaps makes a live redraw a blit plus the curves.
        for item in [self.plot_item.getAxis(name) for name in ("left", "bottom")] + [self.plot_item.titleLabel, self.legend]:
            item.setCacheMode(QGraphicsItem.DeviceCoordinateCache)
        self.ci.layout.setRowStretchFactor(0, 1)
        self.set_title(title)
        self.setMinimumHeight(150)
        self.readout = QLabel(self)
        self.readout.setStyleSheet("background: rgba(255,255,255,220); color: #111827; padding: 1px 4px;"
                                   "border: 1px solid #d1d5db; border-radius: 3px; font-size: 8pt;")
        self.readout.hide()
        self.scene().sigMouseMoved.connect(self.show_readout_at)
        self.reset_action = QAction("Reset zoom", self)
        self.reset_action.triggered.connect(self.reset_view)
        self.export_png_action = QAction("Export as PNG…", self)
        self.export_png_action.triggered.connect(lambda: self.choose_export("png"))
        self.export_svg_action = QAction("Export as SVG…", self)
        self.export_svg_action.triggered.connect(lambda: self.choose_export("svg"))
        self.tool_buttons: list[QToolButton] = []
        self.add_tool(self.reset_action, "⟲", "Reset the zoom (mouse wheel zooms, dragging pans)")
        export = QMenu(self)
        export.addActions([self.export_png_action, self.export_svg_action])
        self.add_tool(None, "⤓", "Export this plot as PNG or SVG", menu=export)
        self.setContextMenuPolicy(Qt.ActionsContextMenu)
        self.addActions([self.reset_action, self.export_png_action, self.export_svg_action])

    def add(self, item, name: str | None = None):
        self.plot_item.addItem(item)
        if name:
            self.legend.addItem(item, name)
        return item

    def add_tool(self, action: QAction | None, text: str, tip: str, menu: QMenu | None = None) -> QToolButton:
        """A small button in the plot's top-left corner."""
        button = QToolButton(self)
        if action is not None:
            button.setDefaultAction(action)
        if menu is not None:
            button.setMenu(menu)
            button.setPopupMode(QToolButton.InstantPopup)
        button.setText(text)
        button.setToolTip(tip)
        button.setAutoRaise(True)
        button.setStyleSheet("QToolButton { padding: 0 3px; } QToolButton::menu-indicator { image: none; }")
        self.tool_buttons.insert(0, button)
        self._place_tools()
        return button

    def _place_tools(self) -> None:
        """Top left, above the y axis: the centred title may run long to the right."""
        x = 2
        for button in reversed(self.tool_buttons):
            button.adjustSize()
            button.move(x, 1)
            x += button.width()
            button.raise_()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if hasattr(self, "tool_buttons"):  # pyqtgraph resizes once before __init__ has made them
            self._place_tools()

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

    # -- read-out, zoom, export -------------------------------------------------------------------

    def describe_at(self, point: QPointF) -> str:
        """What the read-out says about the data at `point` (view coordinates); empty: nothing there."""
        return ""

    def show_readout_at(self, scene_pos: QPointF) -> str:
        """The read-out of the point under the mouse (scene coordinates), shown at the plot's top left."""
        box = self.plot_item.vb
        text = self.describe_at(box.mapSceneToView(scene_pos)) if box.sceneBoundingRect().contains(scene_pos) else ""
        self.readout.setText(text)
        self.readout.setVisible(bool(text))
        if text:
            self.readout.adjustSize()
            corner = self.mapFromScene(box.sceneBoundingRect().topLeft())
            self.readout.move(corner.x() + 4, corner.y() + 2)
            self.readout.raise_()
        return text

    def reset_view(self) -> None:
        self.plot_item.enableAutoRange()

    def choose_export(self, kind: str) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export plot", f"plot.{kind}", EXPORT_FILTER)
        if path:
            self.export(Path(path) if Path(path).suffix else Path(f"{path}.{kind}"))

    def export(self, path: Path) -> Path:
        """The plot (with its legend) as a PNG image or an SVG drawing, by the file's extension."""
        path = Path(path)
        if path.suffix.lower() == ".svg":
            # QSvgGenerator, not pyqtgraph's SVGExporter: that one fails on the paths Qt 6 writes.
            generator = QSvgGenerator()
            generator.setFileName(str(path))
            generator.setSize(self.size())
            generator.setViewBox(self.rect())
            generator.setTitle(self.plot_item.titleLabel.text)
            painter = QPainter(generator)
            try:  # the scene alone: the tool buttons and the read-out are widgets on top of it
                self.scene().render(painter, QRectF(self.rect()), self.sceneRect())
            finally:
                painter.end()
        else:
            exporter = exporters.ImageExporter(self.ci)
            exporter.parameters()["width"] = max(self.width(), 800)
            exporter.export(str(path.with_suffix(".png") if path.suffix.lower() != ".png" else path))
        return path


class LossPlot(PlotCanvas):
    """Loss per iteration of the edit training now: cross-entropy of the target and the router's margin
    loss; for an edit picked in the table, its stored total. Every change lands on screen in redraw()."""

    TITLE = ("Loss per iteration", "", None)

    def __init__(self):
        super().__init__("Loss per iteration", "iteration", "loss")
        self.series = {
            "ce": ([], self.add(pg.PlotDataItem(pen=pg.mkPen(EDIT_COLOUR, width=2)), "cross-entropy")),
            "margin": ([], self.add(pg.PlotDataItem(pen=pg.mkPen(MARGIN_COLOUR, width=2)), "margin")),
            "total": ([], self.add(pg.PlotDataItem(pen=pg.mkPen(UNRELATED_COLOUR, width=1.5, style=Qt.DashLine)), "total")),
        }
        self.log_action = QAction("Log scale", self, checkable=True)
        self.log_action.toggled.connect(self.set_log_scale)
        self.add_tool(self.log_action, "log", "Loss on a logarithmic axis")
        self.addAction(self.log_action)
        self.training = False
        self.dirty = False
        self.edit_id: int | None = None  # the edit whose curves are shown
        self._label = ""
        self._title: tuple = self.TITLE
        self._iterations = 0  # x range while training
        self._y_top = 0.0
        self._state_changed = False  # title, pens or ranges to update in the next redraw
        self._zoomed = False  # the user zoomed: the ranges are left alone until reset
        self.plot_item.vb.sigRangeChangedManually.connect(lambda *_: setattr(self, "_zoomed", True))

    @property
    def log_scale(self) -> bool:
        return self.log_action.isChecked()

    def values(self, name: str) -> list[float]:
        return self.series[name][0]

    def _show(self, training: bool, title: tuple, **curves: list[float]) -> None:
        """Switches what the plot shows; the curves not named keep their values."""
        self.training, self._title, self._state_changed, self.dirty = training, title, True, True
        for name, values in curves.items():
            self.series[name][0][:] = values

    def show_nothing(self) -> None:
        """No curve (another workspace). Not `clear`: GraphicsLayoutWidget.clear empties the layout."""
        self.edit_id, self._label = None, ""
        self._show(False, self.TITLE, ce=[], margin=[], total=[])

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

    def set_log_scale(self, on: bool) -> None:
        self.plot_item.setLogMode(y=on)
        self.reset_view()

    def reset_view(self) -> None:
        self._zoomed, self._y_top, self._state_changed, self.dirty = False, 0.0, True, True
        self.plot_item.enableAutoRange()

    def redraw(self) -> None:
        self.dirty = False
        if self._state_changed:
            self._state_changed = False
            self.set_title(*self._title)
            for name in ("ce", "margin"):  # thicker while the edit trains
                curve = self.series[name][1]
                curve.setPen(pg.mkPen(curve.opts["pen"].color(), width=3 if self.training else 2))
            if self.training and not self._zoomed:
                # Fixed ranges while training: the axes are not laid out again on every frame (the costly part).
                self.plot_item.disableAutoRange()
                self.plot_item.setXRange(0, self._iterations + 1, padding=0)
                if self.log_scale:
                    self.plot_item.enableAutoRange(axis="y")
            elif not self._zoomed:
                self.plot_item.enableAutoRange()
        for values, curve in self.series.values():
            y = np.asarray(values, dtype=float)
            curve.setData(np.arange(1, len(values) + 1), np.maximum(y, LOG_FLOOR) if self.log_scale else y)
        highest = max((max(values) for values, _ in self.series.values() if values), default=0.0)
        if not any(values for values, _ in self.series.values()) and not self.training:
            self.plot_item.setRange(xRange=(0, 10), yRange=(0, 1), padding=0)  # nothing: a neutral frame
            self._zoomed = False
        if self.training and not self._zoomed and not self.log_scale and highest > self._y_top:
            self._y_top = highest * 1.1  # the loss falls: the range grows rarely
            self.plot_item.setYRange(0, self._y_top, padding=0)

    def describe_at(self, point: QPointF) -> str:
        step = round(point.x())
        parts = [f"{name} {format_score(values[step - 1])}" for name, (values, _) in self.series.items()
                 if 1 <= step <= len(values)]
        return f"iteration {step}: " + ", ".join(parts) if parts else ""


@dataclass(frozen=True)
class BinnedPoint:
    """Older edits' scores of one kind, averaged into one point of the router plot."""

    first: int  # apply orders covered
    last: int
    kind: str
    count: int
    score: float  # mean
    low: float
    high: float
    threshold: float | None  # mean of the thresholds they were compared with


def _bins(orders: list[int], bins: int) -> list[list[int]]:
    size = max(1, math.ceil(len(orders) / bins))
    return [orders[i:i + size] for i in range(0, len(orders), size)]


def describe_point(data) -> str:
    """The read-out of a router point: which edit, its score and threshold."""
    if isinstance(data, BinnedPoint):
        threshold = f" · mean threshold {format_score(data.threshold)}" if data.threshold is not None else ""
        return (f"edits {data.first}–{data.last}: {KIND_NAMES[data.kind]}s, mean score {format_score(data.score)} "
                f"(min {format_score(data.low)}, max {format_score(data.high)}, {data.count} points){threshold}")
    if not isinstance(data, RoutedPoint):
        return ""
    name = "training now" if data.edit_id < 0 else f"edit {data.order}"
    text = f"{name} · {KIND_NAMES[data.kind]} “{shorten(data.prompt, 60)}” · score {format_score(data.score)}"
    if data.threshold is not None:
        side = "side memory answers" if data.score > data.threshold else "main memory answers"
        text += f" vs threshold {format_score(data.threshold)} ({side})"
    return text


class RouterPlot(PlotCanvas):
    """Activation scores of every applied edit and of its paraphrases, locality and unrelated prompts,
    against the routing threshold: above the line a prompt is answered by the side memory."""

    def __init__(self):
        super().__init__("Router activation scores", "applied edit (order)", "activation score")
        self.scatters: dict[str, pg.ScatterPlotItem] = {}
        for kind, (label, colour, symbol, _) in ROUTER_SERIES.items():
            self.scatters[kind] = self.add(pg.ScatterPlotItem(
                symbol=symbol, size=9, pen=pg.mkPen(colour), brush=pg.mkBrush(colour), hoverable=True, hoverSize=13,
                hoverPen=pg.mkPen("#111827", width=1.5)), label)
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
                                                brush=pg.mkBrush(CURRENT_COLOUR), hoverable=True), "training now")
        self.selection = pg.ScatterPlotItem(symbol="o", size=20, pen=pg.mkPen("#111827", width=2), brush=None)
        self.plot_item.addItem(self.selection)
        self.edits: dict[int, AppliedEditPoints] = {}  # by apply order
        self._history_version = 0  # counts changes of `edits`, for the cache of what is drawn
        self._drawn_cache: dict[str, tuple[int, list[BinnedPoint], dict[int, None]]] = {}
        # WISE-Merge: one threshold for all edits, drawn across the plot. WISE-Retrieve: each memory its own.
        self.shared_threshold = True
        self.live_point: RoutedPoint | None = None
        self.selected_edit: int | None = None
        self.dirty = True  # the first redraw gives the empty plot a sensible frame
        self.live_dirty = False  # only the star moved: redrawn at a slower pace than the history
        self._zoomed = False  # the user zoomed or panned: the view stays until reset
        self.plot_item.vb.sigRangeChangedManually.connect(lambda *_: setattr(self, "_zoomed", True))

    def set_history(self, edits: list[AppliedEditPoints], shared_threshold: bool) -> None:
        self.edits = {e.order: e for e in edits}
        self.shared_threshold = shared_threshold
        self.live_point = None
        self._history_version += 1
        self.dirty = True

    def add_edit(self, edit: AppliedEditPoints) -> None:
        self.edits[edit.order] = edit
        self.live_point = None
        self._history_version += 1
        self.dirty = True

    def set_live(self, order: int, prompt: str, score: float) -> None:
        """The edit training now: its mean score this step, drawn as a star where it will land."""
        self.live_point = RoutedPoint(order, -1, "prompt", prompt, score)
        self.live_dirty = True

    def clear_live(self) -> None:
        self.live_point = None
        self.live_dirty = True

    def select_edit(self, edit_id: int | None) -> None:
        if edit_id != self.selected_edit:
            self.selected_edit = edit_id
            self.dirty = True

    def points(self, kind: str) -> list[RoutedPoint]:
        """Every point of one kind, exact, in apply order."""
        return [p for order in sorted(self.edits) for p in self.edits[order].points if p.kind == kind]

    def drawn(self, kind: str) -> list[RoutedPoint | BinnedPoint]:
        """What the plot draws of one kind: the newest and the selected edit exactly, older ones binned."""
        binned, exact = self._history_drawn(kind)
        selected = [p for e in self.edits.values() if e.edit_id == self.selected_edit and e.order not in exact
                    for p in e.points if p.kind == kind]
        return binned + selected + [p for o in exact for p in self.edits[o].points if p.kind == kind]

    def _history_drawn(self, kind: str) -> tuple[list[BinnedPoint], dict[int, None]]:
        """The bins of the older edits and the orders drawn exactly; computed once per change of the
        history (not per selection: clicking through the table must not re-bin a thousand edits)."""
        cached = self._drawn_cache.get(kind)
        if cached is not None and cached[0] == self._history_version:
            return cached[1], cached[2]
        orders = sorted(self.edits)
        older, exact = orders[:-RECENT_EXACT], orders[-RECENT_EXACT:]
        if len(older) <= OLDER_BINS:  # few enough: no need to average
            older, exact = [], orders
        binned: list[BinnedPoint] = []
        for group in _bins(older, OLDER_BINS):
            points = [p for o in group for p in self.edits[o].points if p.kind == kind]
            if points:
                scores = [p.score for p in points]
                thresholds = [p.threshold for p in points if p.threshold is not None]
                binned.append(BinnedPoint(group[0], group[-1], kind, len(points), sum(scores) / len(scores), min(scores),
                                          max(scores), sum(thresholds) / len(thresholds) if thresholds else None))
        exact_orders = dict.fromkeys(exact)
        self._drawn_cache[kind] = (self._history_version, binned, exact_orders)
        return binned, exact_orders

    def redraw(self) -> None:
        self.dirty = False
        for kind, scatter in self.scatters.items():
            offset = ROUTER_SERIES[kind][3]
            drawn = self.drawn(kind)
            x = [((p.first + p.last) / 2 if isinstance(p, BinnedPoint) else p.order) + offset for p in drawn]
            sizes = [6 if isinstance(p, BinnedPoint) else 9 for p in drawn]
            scatter.setData(x=x, y=[p.score for p in drawn], data=drawn, size=sizes)
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
        selected = [p for e in self.edits.values() if e.edit_id == self.selected_edit for p in e.points
                    if p.kind == "prompt"]
        self.selection.setData(x=[p.order for p in selected], y=[p.score for p in selected])
        if not self.edits:  # empty: a sensible frame instead of pyqtgraph's tiny default range
            self.plot_item.setRange(xRange=(0.5, 3.5), yRange=(0, 1), padding=0)
        elif not self._zoomed:
            self.plot_item.enableAutoRange()
        self.redraw_live()

    def reset_view(self) -> None:
        self._zoomed = False
        self.plot_item.enableAutoRange()

    def redraw_live(self) -> None:
        self.live_dirty = False
        live = [self.live_point] if self.live_point is not None else []
        self.live.setData(x=[p.order for p in live], y=[p.score for p in live], data=live)
        self.integer_ticks("bottom", max(self.edits, default=0) + len(live))

    def describe_at(self, point: QPointF) -> str:
        """The point nearest the mouse among those under it (with 1,000 edits, symbols overlap)."""
        box = self.plot_item.vb
        mouse = box.mapViewToScene(point)
        under = [spot for scatter in [self.live, *self.scatters.values()] for spot in scatter.pointsAt(point)]
        if not under:
            return ""
        nearest = min(under, key=lambda spot: (box.mapViewToScene(spot.pos()) - mouse).manhattanLength())
        return describe_point(nearest.data())


class ShardPlot(PlotCanvas):
    """One bar per knowledge shard: edits it holds out of the shard size; merged, full and current shards."""

    def __init__(self):
        super().__init__("Knowledge shards", "shard", "edits held")
        self.bars = {
            "merged": self.add(pg.BarGraphItem(x=[], height=[], width=0.7, brush=MERGED_COLOUR, pen=None),
                               "merged"),
            "saved": self.add(pg.BarGraphItem(x=[], height=[], width=0.7, brush=SAVED_COLOUR, pen=None),
                              "full, to merge"),
            "current": self.add(pg.BarGraphItem(x=[], height=[], width=0.7, brush=SHARD_COLOUR, pen=None),
                                "current shard"),
            "training": self.add(pg.BarGraphItem(x=[], height=[], width=0.7, brush=CURRENT_COLOUR,
                                                 pen=pg.mkPen("#92400e", width=1.5)), "training now"),
        }
        # The shard size is named in the title: a label on this line would sit on the bars' own labels.
        self.capacity_line = self.add(pg.InfiniteLine(angle=0, pen=pg.mkPen("#6b7280", style=Qt.DashLine)))
        self.fill_label = pg.TextItem(color=SHARD_COLOUR, anchor=(0.5, 1))
        self.plot_item.addItem(self.fill_label)
        # All merge events in one item of vertical segments, so thousands of merges stay cheap to draw.
        self.merge_marks = self.add(pg.PlotDataItem(connect="pairs", pen=pg.mkPen(MERGED_COLOUR, width=1.5,
                                                                                 style=Qt.DashDotLine)), "merge")
        self.status: MemoryStatus | None = None
        self.training = False

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
        status = self.status
        heights = self.shard_heights()
        for kind, bar in self.bars.items():
            bars = heights[kind]
            base = status.shard_edits if kind == "training" and status is not None else 0
            bar.setOpts(x=[n for n, _ in bars], height=[h for _, h in bars], y0=[base] * len(bars))
        if status is None:  # no workspace: an empty frame with sensible axes
            self.merge_marks.setData([], [])
            self.fill_label.setText("")
            self.capacity_line.hide()
            self.plot_item.setRange(xRange=(0.4, 3.6), yRange=(0, 1.12), padding=0)
            self.set_title("Knowledge shards")
            return
        self.capacity_line.show()
        self.capacity_line.setValue(status.save_freq)
        held = status.shard_edits + (1 if self.training else 0)
        self.fill_label.setText(f"{status.shard_edits}/{status.save_freq}" + (" +1" if self.training else ""))
        self.fill_label.setPos(status.shard_number, held)
        # A merge happens when the shard holding edit number `edits` closes: marked right after that shard.
        positions = np.repeat(np.asarray(status.merge_events, dtype=float) / status.save_freq + 0.5, 2)
        marks = np.tile([0.0, status.save_freq * 1.05], len(status.merge_events))
        self.merge_marks.setData(positions, marks)
        self.plot_item.setRange(xRange=(0.4, max(status.shard_number, 3) + 0.6), yRange=(0, status.save_freq * 1.2),
                                padding=0)
        self.integer_ticks("bottom", status.shard_number)
        self.set_title("Knowledge shards", f"shard {status.shard_number}: {status.shard_edits}/{status.save_freq} · "
                       f"shard size {status.save_freq} · merge every {status.merge_freq}")

    def reset_view(self) -> None:
        self.redraw()

    def describe_at(self, point: QPointF) -> str:
        number = round(point.x())
        for kind, bars in self.shard_heights().items():
            for shard, edits in bars:
                if shard == number and kind != "training":
                    return f"shard {shard}: {edits} edit{'s' * (edits != 1)}, {kind}"
        return ""


class MemorySummary(QWidget):
    """The side memory in words and numbers, where bars per shard would say nothing: one memory per edit
    (WISE-Retrieve with shard size 1) or MEMOIR's one residual memory."""

    def __init__(self):
        super().__init__()
        self.title = QLabel()
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.RichText)
        self.columns = QProgressBar()
        self.columns.setRange(0, 1000)
        self.columns.setFormat("columns written: %p%")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.addWidget(self.title)
        layout.addWidget(self.text)
        layout.addWidget(self.columns)
        layout.addStretch(1)

    def shown_text(self) -> str:
        """The summary as a reader sees it, without its markup."""
        return " ".join(QTextDocumentFragment.fromHtml(f"{self.title.text()}<br>{self.text.text()}").toPlainText().split())

    def show_status(self, status: MemoryStatus, training: bool) -> None:
        edits = status.total_edits
        ram = format_bytes(status.memory_bytes)
        now = "<br><span style='color:#92400e'>+1 edit training now</span>" if training else ""
        if status.method == "memoir":
            self.title.setText("<b>Residual memory</b> (MEMOIR)")
            used = status.columns_used or 0.0
            self.text.setText(f"<span style='font-size:16pt; font-weight:600'>{edits:,}</span> edit{'s' * (edits != 1)} "
                              f"in one residual memory · {ram} of RAM<br>Each edit writes only the columns of its own "
                              f"mask; a question is answered by the memory when its mask overlaps an edit's.{now}")
            self.columns.setValue(round(used * 1000))
            self.columns.setToolTip(f"{used:.1%} of the residual memory's columns hold some edit")
            self.columns.show()
            return
        if edits == 0:
            self.title.setText("<b>Side memories</b> (one per edit)")
            self.text.setText(f"No edit applied yet. Each edit will be trained into its own memory with its own "
                              f"threshold; the router picks the best one above its threshold.{now}")
            self.columns.hide()
            return
        memories = len(status.merged_memories) + len(status.saved_shards) + (1 if status.shard_edits else 0)
        per_memory = f" ({format_bytes(status.memory_bytes / memories)} each)" if memories else ""
        fixed = [f"{format_bytes(size)} {what}" for size, what in
                 ((status.whitening_bytes, "for the router's key whitening"),
                  (status.working_bytes, "for the next edit's training copy")) if size]
        if fixed:
            per_memory += ", and " + " and ".join(fixed)
        self.title.setText("<b>Side memories</b> (one per edit)")
        self.text.setText(f"<span style='font-size:16pt; font-weight:600'>{memories:,}</span> memor"
                          f"{'ies' if memories != 1 else 'y'} for {edits:,} edit{'s' * (edits != 1)} · {ram} of RAM"
                          f"{per_memory}<br>Shard size 1: each edit is trained into its own memory with its own "
                          f"threshold; the router picks the best one above its threshold.{now}")
        self.columns.hide()


class ShardView(QStackedWidget):
    """The memory plot: bars per knowledge shard, or the summary where bars would say nothing."""

    def __init__(self):
        super().__init__()
        self.bars_plot = ShardPlot()
        self.summary = MemorySummary()
        self.addWidget(self.bars_plot)
        self.addWidget(self.summary)
        self.setMinimumHeight(150)
        self.status: MemoryStatus | None = None
        self.training = False
        self.dirty = True  # the first redraw gives the empty plot a sensible frame

    @staticmethod
    def summarised(status: MemoryStatus | None) -> bool:
        return status is not None and (status.method == "memoir" or status.save_freq == 1)

    @property
    def showing_summary(self) -> bool:
        return self.currentWidget() is self.summary

    def shard_heights(self) -> dict[str, list[tuple[int, int]]]:
        return self.bars_plot.shard_heights()

    def set_status(self, status: MemoryStatus | None) -> None:
        self.status = self.bars_plot.status = status
        self.dirty = True

    def set_training(self, training: bool) -> None:
        self.training = self.bars_plot.training = training
        self.dirty = True

    def redraw(self) -> None:
        self.dirty = False
        if self.summarised(self.status):
            self.summary.show_status(self.status, self.training)
            self.setCurrentWidget(self.summary)
        else:
            self.bars_plot.redraw()
            self.setCurrentWidget(self.bars_plot)


class PlotPanel(QSplitter):
    """The three plots stacked, redrawn together by one coalescing timer."""

    def __init__(self, parent=None):
        super().__init__(Qt.Vertical, parent)
        self.loss = LossPlot()
        self.router = RouterPlot()
        self.shards = ShardView()
        for plot in self.plots:
            self.addWidget(plot)
        self.setChildrenCollapsible(False)
        self._ticks = 0
        self._last_drawn = 0
        self._timer = QTimer(self, interval=REDRAW_MS)
        self._timer.timeout.connect(self._tick)
        self._timer.start()

    @property
    def plots(self) -> tuple[LossPlot, RouterPlot, ShardView]:
        return self.loss, self.router, self.shards

    def clear(self) -> None:
        """Nothing from a workspace: no loss, no router points, no memory."""
        self.loss.show_nothing()
        self.router.set_history([], shared_threshold=True)
        self.router.select_edit(None)
        self.shards.set_status(None)

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
