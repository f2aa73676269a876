"""Before/after answers of the selected edit: what the model said, what it says now, which memory answered.

Rows are the stored outcome's QuestionAnswers, asked in the form the apply run used (the chat template
for an instruct model); the caption names that form. The after-answer's words that differ from the
before-answer are highlighted; the result column says pass/fail against the target (prompt and
paraphrases) or against the old answer (locality prompts). No cell is left empty: an answer the model
ended at once reads "(no answer: ...)", a question not asked before the edit (an imported edit) "–".
Under the table the selected row is written out whole and wrapped, because in a narrow window the text
columns are elided.
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

from wise_gui.app.views import stored_answers
from wise_gui.core.evaluation import QuestionAnswer
from wise_gui.store import EditDetail, EditStatus, OutcomeFields
from wise_gui.ui.labels import FORM_LABELS, NOT_ASKED, answer_text, route_label
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
    format_duration,
    format_fraction,
    format_score,
)

HTML_ROLE = Qt.UserRole + 10
KIND_COLOURS = {"prompt": EDIT_COLOUR, "paraphrase": PARAPHRASE_COLOUR, "locality": LOCALITY_COLOUR}
KIND_LABELS = {"prompt": "Edit prompt", "paraphrase": "Paraphrase", "locality": "Locality"}
# Short headers, so that they stay whole in a narrow panel; the tooltips say them in full.
HEADERS = ["Kind", "Prompt", "Expected", "Before", "After", "Routed to", "Score", "Result"]
BEFORE_COLUMN, AFTER_COLUMN, ROUTE_COLUMN, SCORE_COLUMN, RESULT_COLUMN = 3, 4, 5, 6, 7
HEADER_TIPS = {BEFORE_COLUMN: "The unedited model's answer",
               AFTER_COLUMN: "The answer with the side memory (the new target highlighted)",
               ROUTE_COLUMN: "The side memory the router picked, or the main memory"}


def metrics_line(fields: OutcomeFields) -> str:
    pct = format_fraction
    return (f"Rel {pct(fields.rel)} · Gen {pct(fields.gen)} · Loc {pct(fields.loc)} · generated target "
            f"{pct(fields.gen_success)} · took {format_duration(fields.seconds)}.  Rel/Gen: target tokens predicted; "
            "Loc: unrelated answers unchanged.")


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


def answer_changed(answer: QuestionAnswer) -> bool:
    """Whether the answer after the edit differs in its words from the one before (asked before at all)."""
    return answer.before is not None and answer_text(answer.before).split() != answer_text(answer.after).split()


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
        for column, tip in HEADER_TIPS.items():
            self.table.horizontalHeaderItem(column).setToolTip(tip)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectRows)
        self.table.setWordWrap(False)
        self.table.setItemDelegateForColumn(AFTER_COLUMN, HtmlDelegate(self.table))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.Interactive)
        # The memory's name gets a fixed share (elided, whole in its tooltip), so on a small screen the
        # questions and answers keep room to be read.
        for column, width in enumerate((0, 0, 80, 0, 0, 130, 48, 56)):
            if width:
                header.resizeSection(column, width)
        header.setSectionResizeMode(0, QHeaderView.ResizeToContents)  # the kind, in full
        for column in (1, BEFORE_COLUMN, AFTER_COLUMN):  # the texts share what is left
            header.setSectionResizeMode(column, QHeaderView.Stretch)
        self.selected_text = QLabel()
        self.selected_text.setWordWrap(True)
        self.selected_text.setTextFormat(Qt.RichText)
        self.selected_text.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self._answers: list[QuestionAnswer] = []
        self.table.currentCellChanged.connect(lambda row, *_: self._show_whole(row))
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.caption)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.selected_text)
        layout.addWidget(self.summary)

    def show_edit(self, detail: EditDetail | None) -> None:
        """An edit's answers as stored when it was applied, with its scores."""
        if detail is None:
            self.clear("Select an edit to see its prompts answered before and after editing.")
            return
        outcome = detail.outcome
        if outcome is None or not outcome.fields.answers:
            self.clear(f"“{detail.request.prompt}” has not been applied yet: its answers before and after editing "
                       "appear here once it is.")
            return
        fields = outcome.fields
        undone = "" if detail.status == EditStatus.APPLIED else " (since rolled back)"
        self.show_answers(f"“{detail.request.prompt}” → “{detail.request.target}”, applied as edit "
                          f"{outcome.apply_order}{undone}", stored_answers(detail), metrics_line(fields))

    def show_answers(self, title: str, answers: list[QuestionAnswer], summary: str = "") -> None:
        forms = sorted({a.form for a in answers})
        asked = f" · asked as {', '.join(FORM_LABELS.get(f, f) for f in forms)}" if forms else ""
        self.caption.setText(title + asked)
        self.summary.setText(summary)
        self._answers = list(answers)
        self.table.setRowCount(len(answers))
        for row, answer in enumerate(answers):
            self._fill_row(row, answer)
        if answers:
            self.table.setCurrentCell(0, 1)
        self._show_whole(0)

    def clear(self, message: str) -> None:
        self.show_answers(message, [])

    def _fill_row(self, row: int, answer: QuestionAnswer) -> None:
        kind, route = answer.kind, answer.route
        before, after = answer_text(answer.before), answer_text(answer.after)
        expected = answer.expected or ("same as before" if kind == "locality" else NOT_ASKED)
        cells = [KIND_LABELS.get(kind, kind), answer.question, expected, before, after, route_label(route),
                 format_score(route.score), "✓ pass" if answer.passed else "✗ fail"]
        for column, text in enumerate(cells):
            item = QTableWidgetItem(text)
            item.setToolTip(text)
            self.table.setItem(row, column, item)
        self.table.item(row, 0).setForeground(QColor(KIND_COLOURS.get(kind, "#374151")))
        if answer.before is None:
            self.table.item(row, BEFORE_COLUMN).setToolTip("Not asked: the edit was imported with a side memory, "
                                                           "so there is no answer from before it.")
        after_item = self.table.item(row, AFTER_COLUMN)
        if answer_changed(answer):
            after_item.setData(HTML_ROLE, highlight_changes(before, after))
            after_item.setToolTip(f"Before: {before}\nAfter: {after}")
        if route.score is not None and route.threshold is not None:
            self.table.item(row, SCORE_COLUMN).setToolTip(f"activation score {format_score(route.score)} "
                                                          f"vs threshold {format_score(route.threshold)}")
        colour = SIDE_MEMORY_COLOUR if route.to_side_memory else MAIN_MEMORY_COLOUR
        self.table.item(row, ROUTE_COLUMN).setForeground(QColor(colour))
        result = self.table.item(row, RESULT_COLUMN)
        result.setForeground(QColor(PASS_COLOUR if answer.passed else FAIL_COLOUR))
        result.setBackground(QColor(PASS_BACKGROUND if answer.passed else FAIL_BACKGROUND))

    def _show_whole(self, row: int) -> None:
        if not 0 <= row < len(self._answers):
            self.selected_text.setText("")
            self.selected_text.setVisible(False)
            return
        answer = self._answers[row]
        before, after = answer_text(answer.before), answer_text(answer.after)
        after_html = highlight_changes(before, after) if answer_changed(answer) else html.escape(after)
        expected = answer.expected or ("the same answer as before" if answer.kind == "locality" else NOT_ASKED)
        self.selected_text.setText(
            f"<b>{html.escape(KIND_LABELS.get(answer.kind, answer.kind))}:</b> {html.escape(answer.question)}<br>"
            f"<b>Expected:</b> {html.escape(expected)} · <b>before:</b> {html.escape(before)} · "
            f"<b>after:</b> {after_html} · {html.escape(route_label(answer.route))}")
        self.selected_text.setVisible(True)

    def column_texts(self, column: int) -> list[str]:
        return [self.table.item(r, column).text() for r in range(self.table.rowCount())]

    def after_answers(self) -> list[str]:
        return self.column_texts(AFTER_COLUMN)
