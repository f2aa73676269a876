"""Routing probe: type any question, see which memory answers it and why, and both models' answers."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from wise_gui.store import ProbeRecord
from wise_gui.ui.engine_jobs import ProbeResult
from wise_gui.ui.plots import PlotCanvas
from wise_gui.ui.style import (
    EDIT_COLOUR,
    MAIN_MEMORY_COLOUR,
    SIDE_MEMORY_COLOUR,
    THRESHOLD_COLOUR,
    UNRELATED_COLOUR,
    format_score,
    is_side_memory,
)

PROBE_TIP = "Route the question and generate answers with and without the side memory (Enter)"


def _token_label(token: str) -> str:
    """A readable tick label: visible whitespace and control characters escaped, long tokens cut."""
    return repr(token.strip() or token)[1:-1][:12]


class ProbePanel(QWidget):
    probe_requested = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        # An editable combo box: type a new question, or pick an earlier probe from its list.
        self.question = QComboBox()
        self.question.setEditable(True)
        self.question.setInsertPolicy(QComboBox.NoInsert)
        self.question.setMaxVisibleItems(15)
        self.question.lineEdit().setPlaceholderText("Ask the edited model anything, e.g. a paraphrase of an edit… "
                                                    "(the list holds earlier probes)")
        # Enter on the text of a listed probe also emits `activated`: request once, from there.
        self.question.lineEdit().returnPressed.connect(
            lambda: self._request() if self.question.findText(self.question.currentText()) < 0 else None)
        self.question.activated.connect(lambda _: self._request())
        self.button = QPushButton("Probe")
        self.button.setToolTip(PROBE_TIP)
        self.button.clicked.connect(self._request)

        self.route_label = QLabel("—")
        self.route_label.setStyleSheet("font-size: 11pt; font-weight: 600;")
        self.score_label = QLabel("Probe a question to see where the router sends it.")
        self.score_label.setWordWrap(True)

        self.tokens_plot = PlotCanvas("Why: distance per token", "token", "distance")
        self.tokens_plot.setMinimumHeight(170)
        self.token_bars = self.tokens_plot.add(pg.BarGraphItem(x=[], height=[], width=0.7, brush=EDIT_COLOUR, pen=None),
                                               "‖act(W′a) − act(Wa)‖")
        self.mean_curve = self.tokens_plot.add(pg.PlotDataItem(pen=pg.mkPen(UNRELATED_COLOUR, width=2)), "score = mean")
        self.threshold_curve = self.tokens_plot.add(
            pg.PlotDataItem(pen=pg.mkPen(THRESHOLD_COLOUR, width=2, style=Qt.DashLine)), "threshold")

        self.edited_title = QLabel("<b>Edited model</b>")
        self.edited_title.setWordWrap(True)
        self.edited_answer = QPlainTextEdit(readOnly=True)
        self.original_answer = QPlainTextEdit(readOnly=True)
        answers = QGroupBox("Answers")
        answers_layout = QVBoxLayout(answers)
        answers_layout.addWidget(self.edited_title)
        answers_layout.addWidget(self.edited_answer)
        answers_layout.addWidget(QLabel("<b>Original model</b> (no side memory)"))
        answers_layout.addWidget(self.original_answer)

        ask = QHBoxLayout()
        ask.addWidget(QLabel("Question:"))
        ask.addWidget(self.question, 1)
        ask.addWidget(self.button)
        splitter = QSplitter(Qt.Horizontal)
        splitter.addWidget(self.tokens_plot)
        splitter.addWidget(answers)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.addLayout(ask)
        layout.addWidget(self.route_label)
        layout.addWidget(self.score_label)
        layout.addWidget(splitter, 1)
        self.result: ProbeResult | None = None

    def _request(self) -> None:
        text = self.question.currentText().strip()
        if text and self.button.isEnabled():
            self.probe_requested.emit(text)

    def ask(self, question: str) -> None:
        self.question.setEditText(question)
        self._request()

    def set_available(self, available: bool, reason: str = "") -> None:
        self.button.setEnabled(available)
        self.button.setToolTip(reason or PROBE_TIP)

    def show_busy(self, question: str) -> None:
        self.route_label.setText("Probing…")
        self.route_label.setStyleSheet("font-size: 11pt; font-weight: 600;")
        self.score_label.setText(question)

    def show_result(self, result: ProbeResult) -> None:
        self.result = result
        decision = result.decision
        side = decision.to_side_memory
        colour = SIDE_MEMORY_COLOUR if side else MAIN_MEMORY_COLOUR
        self.route_label.setText(f"→ {decision.label}")
        self.route_label.setStyleSheet(f"font-size: 11pt; font-weight: 600; color: {colour};")
        has_memory = decision.threshold != float("inf")
        if not has_memory:
            self.score_label.setText("No edit is applied yet: every question is answered by the main memory.")
        else:
            relation = "above" if decision.score > decision.threshold else "below"
            self.score_label.setText(
                f"Activation score {format_score(decision.score)} is {relation} the threshold "
                f"{format_score(decision.threshold)}, so the {'side' if side else 'main'} memory answers. "
                "The score is the mean of the per-token distances plotted below.")
        x = np.arange(len(decision.tokens))
        self.token_bars.setOpts(x=x, height=np.asarray(decision.token_distances, dtype=float))
        self.tokens_plot.plot_item.getAxis("bottom").setTicks([[(i, _token_label(t)) for i, t in enumerate(decision.tokens)]])
        span = [-0.5, len(x) - 0.5] if len(x) else []
        self.mean_curve.setData(span, [decision.score] * len(span))
        threshold_span = span if has_memory else []
        self.threshold_curve.setData(threshold_span, [decision.threshold] * len(threshold_span))
        self.edited_title.setText(f"<b>Edited model</b> (routed to {decision.label})")
        self.edited_answer.setPlainText(result.edited_answer.strip())
        self.original_answer.setPlainText(result.original_answer.strip())

    def show_history(self, probes: list[ProbeRecord]) -> None:
        """Earlier probes, newest first, in the question box's list; each says where it was routed."""
        text = self.question.currentText()
        self.question.clear()
        seen = set()
        for probe in probes:
            if probe.prompt in seen:
                continue
            seen.add(probe.prompt)
            side = is_side_memory(probe.memory)
            self.question.addItem(probe.prompt)
            index = self.question.count() - 1
            self.question.setItemData(index, f"{probe.memory}; score {format_score(probe.score)} vs threshold "
                                             f"{format_score(probe.threshold)}\nanswer: {probe.answer.strip()}",
                                      Qt.ToolTipRole)
            self.question.setItemData(index, QColor(SIDE_MEMORY_COLOUR if side else MAIN_MEMORY_COLOUR),
                                      Qt.ForegroundRole)
        self.question.setEditText(text)
