"""Before/after answers of the selected edit: what the model said, what it says now, which memory answered.

Rows come from the stored outcome (`answers`: one dict per prompt with kind, prompt, expected, before,
after, routed_to, score, threshold, passed). The after-answer's words that differ from the before-answer
are highlighted; the result column says pass/fail against the target (prompt and paraphrases) or against
the old answer (locality prompts).
"""

from __future__ import annotations

import difflib
import html

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QAbstractTextDocumentLayout, QColor, QPalette, QTextDocument
from PySide6.QtWidgets import (
    QApplication,
    QHeaderView,
    QLabel,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from wise_gui.ui.plot_data import answer_dict
from wise_gui.ui.style import (
    CHANGED_BACKGROUND,
    EDIT_COLOUR,
    FAIL_BACKGROUND,
    FAIL_COLOUR,
    LOCALITY_COLOUR,
    MAIN_MEMORY_COLOUR,
    PARAPHRASE_COLOUR,
    PASS_BACKGROUND,
    PASS_COLOUR,
    SIDE_MEMORY_COLOUR,
    format_score,
    is_side_memory,
)

HTML_ROLE = Qt.UserRole + 10
KIND_COLOURS = {"prompt": EDIT_COLOUR, "paraphrase": PARAPHRASE_COLOUR, "locality": LOCALITY_COLOUR}
KIND_LABELS = {"prompt": "Edit prompt", "paraphrase": "Paraphrase", "locality": "Locality"}
HEADERS = ["Kind", "Prompt", "Expected", "Before editing", "After editing", "Routed to", "Score", "Result"]
AFTER_COLUMN = 4


def highlight_changes(before: str, after: str) -> str:
    """`after` as HTML with the words that are not in `before` marked."""
    old, new = before.split(), after.split()
    parts = []
    for tag, _, _, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        words = html.escape(" ".join(new[j1:j2]))
        if not words:
            continue
        parts.append(words if tag == "equal" else f'<span style="background:{CHANGED_BACKGROUND}; font-weight:600">{words}</span>')
    return " ".join(parts)


class HtmlDelegate(QStyledItemDelegate):
    """Paints a cell's HTML_ROLE text as rich text (one line, elided by the cell)."""

    def paint(self, painter, option, index):
        text = index.data(HTML_ROLE)
        if text is None:
            return super().paint(painter, option, index)
        options = QStyleOptionViewItem(option)
        self.initStyleOption(options, index)
        options.text = ""
        style = options.widget.style() if options.widget else QApplication.style()
        style.drawControl(QStyle.CE_ItemViewItem, options, painter, options.widget)
        document = QTextDocument()
        document.setDefaultFont(options.font)
        document.setDocumentMargin(2)
        document.setHtml(text)
        rect = style.subElementRect(QStyle.SE_ItemViewItemText, options, options.widget)
        painter.save()
        painter.translate(rect.left(), rect.top() + max(0, (rect.height() - document.size().height()) / 2))
        painter.setClipRect(QRectF(0, 0, rect.width(), rect.height()))
        context = QAbstractTextDocumentLayout.PaintContext()
        context.palette.setColor(QPalette.Text, options.palette.color(QPalette.Text))
        document.documentLayout().draw(painter, context)
        painter.restore()

    def sizeHint(self, option, index):
        hint = super().sizeHint(option, index)
        return QSize(hint.width(), max(hint.height(), 24))


class AnswersPanel(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.caption = QLabel("Select an applied edit to compare the model's answers before and after it.")
        self.caption.setWordWrap(True)
        self.table = QTableWidget(0, len(HEADERS))
        self.table.setHorizontalHeaderLabels(HEADERS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectRows)
        self.table.setWordWrap(False)
        self.table.setItemDelegateForColumn(AFTER_COLUMN, HtmlDelegate(self.table))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.Interactive)
        for column, width in enumerate((84, 0, 100, 0, 0, 130, 52, 60)):
            if width:
                header.resizeSection(column, width)
        for column in (1, 3, AFTER_COLUMN):  # the texts share what is left
            header.setSectionResizeMode(column, QHeaderView.Stretch)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.caption)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.summary)

    def show_answers(self, title: str, answers: list, summary: str = "") -> None:
        rows = [answer_dict(a) for a in answers]
        self.caption.setText(title)
        self.summary.setText(summary)
        self.table.setRowCount(len(rows))
        for row, answer in enumerate(rows):
            self._fill_row(row, answer)

    def clear(self, message: str) -> None:
        self.show_answers(message, [])

    def _fill_row(self, row: int, answer: dict) -> None:
        kind = answer.get("kind", "")
        before, after = answer.get("before", "") or "", answer.get("after", "") or ""
        routed = answer.get("routed_to", "") or ""
        passed = answer.get("passed")
        expected = answer.get("expected") or ("same as before" if kind == "locality" else "")
        cells = [KIND_LABELS.get(kind, kind), answer.get("prompt", ""), expected, before, after, routed,
                 format_score(answer.get("score")), "–" if passed is None else ("✓ pass" if passed else "✗ fail")]
        for column, text in enumerate(cells):
            item = QTableWidgetItem(str(text))
            item.setToolTip(str(text))
            self.table.setItem(row, column, item)
        self.table.item(row, 0).setForeground(QColor(KIND_COLOURS.get(kind, "#374151")))
        after_item = self.table.item(row, AFTER_COLUMN)
        if " ".join(before.split()) != " ".join(after.split()):
            after_item.setData(HTML_ROLE, highlight_changes(before, after))
            after_item.setToolTip(f"Before: {before}\nAfter: {after}")
        threshold = answer.get("threshold")
        if answer.get("score") is not None and threshold is not None:
            self.table.item(row, 6).setToolTip(f"activation score {format_score(answer['score'])} "
                                               f"vs threshold {format_score(threshold)}")
        self.table.item(row, 5).setForeground(QColor(SIDE_MEMORY_COLOUR if is_side_memory(routed) else MAIN_MEMORY_COLOUR))
        if passed is not None:
            result = self.table.item(row, 7)
            result.setForeground(QColor(PASS_COLOUR if passed else FAIL_COLOUR))
            result.setBackground(QColor(PASS_BACKGROUND if passed else FAIL_BACKGROUND))

    def after_answers(self) -> list[str]:
        return [self.table.item(r, AFTER_COLUMN).text() for r in range(self.table.rowCount())]
