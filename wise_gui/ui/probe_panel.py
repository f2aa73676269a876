"""Routing probe: type any question, see which memory answers it and why, and both models' answers.

A question is asked as the user picks: through the chat template (the default for an instruct model)
or as a raw completion. The probe runs in the background with progress and can be cancelled. The
per-token plot stays readable for long questions: beyond MAX_TOKEN_BARS tokens, neighbouring tokens
share a bar (their mean distance), and at most MAX_TOKEN_LABELS tick labels are written.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QColor, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from wise_gui.app.workspace import ProbeResult, check_question
from wise_gui.core.errors import WiseGuiError
from wise_gui.core.inference import MAIN
from wise_gui.store import ProbeRecord
from wise_gui.ui.labels import FORM_LABELS, answer_text, memory_label, route_label
from wise_gui.ui.plots import PlotCanvas
from wise_gui.ui.style import (
    EDIT_COLOUR,
    FAIL_COLOUR,
    MAIN_MEMORY_COLOUR,
    SIDE_MEMORY_COLOUR,
    THRESHOLD_COLOUR,
    UNRELATED_COLOUR,
    format_score,
)

PROBE_TIP = "Route the question and generate answers with and without the side memory (Enter)"
MAX_TOKEN_BARS = 60
MAX_TOKEN_LABELS = 20
TOKEN_LABEL_PIXELS = 56  # a tick label's room: a short token, or the start of a group's text
ROUTE_STYLE = "font-size: 11pt; font-weight: 600;"


def _token_label(token: str) -> str:
    """A readable tick label: visible whitespace and control characters escaped, long tokens cut."""
    return repr(token.strip() or token)[1:-1][:12]


def token_bars(tokens: list[str], distances: list[float], max_bars: int = MAX_TOKEN_BARS
               ) -> tuple[np.ndarray, list[str], int]:
    """(bar heights, each bar's label, tokens per bar): one bar per token, or neighbouring tokens grouped
    into at most `max_bars` bars of their mean distance."""
    per_bar = max(1, math.ceil(len(tokens) / max_bars))
    heights, labels = [], []
    for start in range(0, len(tokens), per_bar):
        group = slice(start, start + per_bar)
        heights.append(float(np.mean(distances[group])))
        words = "".join(tokens[group]).strip()
        labels.append(_token_label(tokens[start]) if per_bar == 1 else f"{start + 1}: {words[:10]}…")
    return np.asarray(heights, dtype=float), labels, per_bar


class _WindowShortcutsFirst(QObject):
    """Lets the window's shortcuts (Ctrl+E: export) work while a line edit has the focus; a line edit
    would otherwise take some of them for itself (Ctrl+E moves to the end of the line)."""

    def __init__(self, sequences: list[QKeySequence], parent=None):
        super().__init__(parent)
        self.sequences = sequences

    def eventFilter(self, watched, event) -> bool:
        if event.type() == QEvent.ShortcutOverride:
            pressed = QKeySequence(event.keyCombination())
            if any(pressed.matches(s) == QKeySequence.ExactMatch for s in self.sequences if not s.isEmpty()):
                event.ignore()  # not overridden: the shortcut goes to the window's action
                return True
        return False


class ProbePanel(QWidget):
    probe_requested = Signal(str, str)  # question, form ("chat" or "raw")
    cancel_requested = Signal()

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
        self.form = QComboBox()
        self.form.setToolTip("chat: the question goes through the model's chat template, as a chat user asks it; "
                             "raw: the model continues the question as plain text.")
        self.button = QPushButton("Probe")
        self.button.setToolTip(PROBE_TIP)
        self.button.clicked.connect(self._request)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the probe (the answers stop at the next token)")
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.cancel_button.hide()
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setFixedWidth(160)
        self.progress.hide()

        self.route_label = QLabel("—")
        self.route_label.setStyleSheet(ROUTE_STYLE)
        self.score_label = QLabel("Probe a question to see where the router sends it.")
        self.score_label.setWordWrap(True)

        self.tokens_plot = PlotCanvas("Why: distance per token", "token", "distance")
        self.tokens_plot.setMinimumHeight(130)
        self.token_bars = self.tokens_plot.add(pg.BarGraphItem(x=[], height=[], width=0.7, brush=EDIT_COLOUR, pen=None),
                                               "‖act(W′a) − act(Wa)‖")
        self.mean_curve = self.tokens_plot.add(pg.PlotDataItem(pen=pg.mkPen(UNRELATED_COLOUR, width=2)), "score = mean")
        self.threshold_curve = self.tokens_plot.add(
            pg.PlotDataItem(pen=pg.mkPen(THRESHOLD_COLOUR, width=2, style=Qt.DashLine)), "threshold")

        self.edited_title = QLabel("<b>Edited model</b>")
        self.edited_title.setWordWrap(True)
        self.edited_answer = QPlainTextEdit(readOnly=True)
        self.original_answer = QPlainTextEdit(readOnly=True)
        for answer in (self.edited_answer, self.original_answer):
            answer.setMinimumHeight(36)
        # The two answers side by side, each the group's full height: room for a few sentences.
        answers = QGroupBox("Answers")
        answers_layout = QGridLayout(answers)
        answers_layout.addWidget(self.edited_title, 0, 0)
        answers_layout.addWidget(QLabel("<b>Original model</b> (no side memory)"), 0, 1)
        answers_layout.addWidget(self.edited_answer, 1, 0)
        answers_layout.addWidget(self.original_answer, 1, 1)

        ask = QHBoxLayout()
        ask.addWidget(QLabel("Question:"))
        ask.addWidget(self.question, 1)
        ask.addWidget(QLabel("Ask as:"))
        ask.addWidget(self.form)
        ask.addWidget(self.button)
        ask.addWidget(self.cancel_button)
        ask.addWidget(self.progress)
        splitter = QSplitter(Qt.Horizontal)
        splitter.addWidget(self.tokens_plot)
        splitter.addWidget(answers)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.addLayout(ask)
        layout.addWidget(self.route_label)
        layout.addWidget(self.score_label)
        layout.addWidget(splitter, 1)
        self.result: ProbeResult | None = None
        self.set_forms(("raw",), "raw")

    # -- asking -----------------------------------------------------------------------------------

    def let_window_shortcuts_through(self, sequences: list[QKeySequence]) -> None:
        # The combo box has the focus and hands key events straight to its line edit: filter both.
        first = _WindowShortcutsFirst(sequences, self)
        for widget in (self.question, self.question.lineEdit()):
            widget.installEventFilter(first)

    def set_forms(self, forms: tuple[str, ...], default: str) -> None:
        """The forms the loaded model can be asked in; `default` is picked."""
        self.form.clear()
        for form in forms:
            self.form.addItem(form, form)
            self.form.setItemData(self.form.count() - 1, FORM_LABELS.get(form, form), Qt.ToolTipRole)
        self.form.setCurrentIndex(max(0, self.form.findData(default)))
        self.form.setEnabled(len(forms) > 1)
        if len(forms) == 1:
            self.form.setToolTip("This model has no chat template: questions are asked as raw completions.")

    @property
    def asked_form(self) -> str:
        return self.form.currentData() or "raw"

    def _request(self) -> None:
        if not self.button.isEnabled():
            return
        try:
            question = check_question(self.question.currentText())
        except WiseGuiError as exc:
            self._show_message(str(exc))
            return
        self.probe_requested.emit(question, self.asked_form)

    def ask(self, question: str, form: str | None = None) -> None:
        self.question.setEditText(question)
        if form is not None:
            self.form.setCurrentIndex(max(0, self.form.findData(form)))
        self._request()

    def set_available(self, available: bool, reason: str = "") -> None:
        self.button.setEnabled(available)
        self.button.setToolTip(reason or PROBE_TIP)

    def _show_message(self, text: str) -> None:
        self.route_label.setText("Not probed")
        self.route_label.setStyleSheet(f"{ROUTE_STYLE} color: {FAIL_COLOUR};")
        self.score_label.setText(text)

    # -- while it runs ----------------------------------------------------------------------------

    def show_busy(self, question: str) -> None:
        self.route_label.setText("Probing…")
        self.route_label.setStyleSheet(ROUTE_STYLE)
        self.score_label.setText(question)
        self.progress.setValue(0)
        self.progress.show()
        self.cancel_button.show()

    def show_progress(self, message: str, fraction: float) -> None:
        self.route_label.setText(f"Probing… {message.lower()}")
        self.progress.setValue(int(fraction * 100))

    def show_stopped(self, message: str) -> None:
        """The probe ended without a result (cancelled or failed)."""
        self._end_busy()
        self._show_message(message)

    def _end_busy(self) -> None:
        self.progress.hide()
        self.cancel_button.hide()

    # -- results ----------------------------------------------------------------------------------

    def clear(self) -> None:
        """No result shown (another workspace, an undone edit): the last answer no longer holds."""
        self.result = None
        self._end_busy()
        self.route_label.setText("—")
        self.route_label.setStyleSheet(ROUTE_STYLE)
        self.score_label.setText("Probe a question to see where the router sends it.")
        self._draw_tokens([], [], None, None)
        self.edited_title.setText("<b>Edited model</b>")
        self.edited_answer.clear()
        self.original_answer.clear()

    def show_result(self, result: ProbeResult) -> None:
        self._end_busy()
        self.result = result
        decision, route = result.decision, result.decision.route
        colour = SIDE_MEMORY_COLOUR if route.to_side_memory else MAIN_MEMORY_COLOUR
        label = route_label(route)
        self.route_label.setText(f"→ {label}")
        self.route_label.setStyleSheet(f"{ROUTE_STYLE} color: {colour};")
        asked = FORM_LABELS.get(result.form, result.form)
        if route.score is None or route.threshold is None:
            self.score_label.setText(f"No edit is applied yet: every question is answered by the main memory. "
                                     f"Asked as {asked}.")
        else:
            relation = "above" if route.score > route.threshold else "below"
            self.score_label.setText(
                f"Activation score {format_score(route.score)} is {relation} the threshold "
                f"{format_score(route.threshold)}: the {'side' if route.to_side_memory else 'main'} memory answers. "
                f"Asked as {asked}.")
            self.score_label.setToolTip("The score is the mean of the per-token distances plotted below.")
        self._draw_tokens(decision.tokens, decision.token_distances, route.score, route.threshold)
        self.edited_title.setText(f"<b>Edited model</b> ({'side' if route.to_side_memory else 'main'} memory)")
        self.edited_answer.setPlainText(answer_text(result.edited.text))
        self.original_answer.setPlainText(answer_text(result.original.text))

    def _draw_tokens(self, tokens: list[str], distances: list[float], score: float | None,
                     threshold: float | None) -> None:
        heights, labels, per_bar = token_bars(tokens, distances)
        x = np.arange(len(heights))
        self.token_bars.setOpts(x=x, height=heights)
        # At most MAX_TOKEN_LABELS tick labels, and no more than fit the plot's width side by side.
        fitting = max(2, int(self.tokens_plot.plot_item.vb.width()) // TOKEN_LABEL_PIXELS)
        every = max(1, math.ceil(len(labels) / min(MAX_TOKEN_LABELS, fitting)))
        self.tokens_plot.plot_item.getAxis("bottom").setTicks([[(i, labels[i]) for i in range(0, len(labels), every)]])
        self.tokens_plot.plot_item.setLabel("bottom", "token" if per_bar == 1 else f"tokens, {per_bar} per bar (mean)")
        span = [-0.5, len(x) - 0.5] if len(x) else []
        mean = score if score is not None else (float(np.mean(heights)) if len(heights) else 0.0)
        self.mean_curve.setData(span, [mean] * len(span))
        threshold_span = span if threshold is not None else []
        self.threshold_curve.setData(threshold_span, [threshold] * len(threshold_span))
        self.tokens_plot.plot_item.enableAutoRange()

    def show_history(self, probes: list[ProbeRecord]) -> None:
        """Earlier probes, newest first, in the question box's list; each says where it was routed."""
        text = self.question.currentText()
        self.question.clear()
        seen = set()
        for probe in probes:
            if probe.prompt in seen:
                continue
            seen.add(probe.prompt)
            self.question.addItem(probe.prompt)
            index = self.question.count() - 1
            self.question.setItemData(
                index, f"{memory_label(probe.memory_index, probe.memory_kind)}; score {format_score(probe.score)} vs "
                       f"threshold {format_score(probe.threshold)}; asked as {probe.form}\n"
                       f"answer: {answer_text(probe.answer)}", Qt.ToolTipRole)
            side = probe.memory_index != MAIN
            self.question.setItemData(index, QColor(SIDE_MEMORY_COLOUR if side else MAIN_MEMORY_COLOUR),
                                      Qt.ForegroundRole)
        self.question.setEditText(text)
