"""The detail pane of the selected edit: prompt, target, subject, paraphrases and locality prompts."""

from __future__ import annotations

import dataclasses

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from wise_gui.core.edits import EditRequest, LocalityCheck
from wise_gui.store import EditDetail, EditStatus
from wise_gui.ui.style import STATUS_LABELS, status_colours

_EDITABLE = Qt.ItemIsEnabled | Qt.ItemIsSelectable | Qt.ItemIsEditable
_EDIT_TRIGGERS = QAbstractItemView.DoubleClicked | QAbstractItemView.EditKeyPressed | QAbstractItemView.AnyKeyPressed


def _list_buttons(add_text: str, on_add, on_remove) -> tuple[QWidget, QPushButton, QPushButton]:
    add, remove = QPushButton(add_text), QPushButton("Remove")
    add.clicked.connect(lambda: on_add())  # not the button's `checked` argument
    remove.clicked.connect(lambda: on_remove())
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(add)
    layout.addWidget(remove)
    layout.addStretch(1)
    return row, add, remove


class EditDetailPanel(QWidget):
    save_requested = Signal(int, object, object)  # edit id, old request, new request

    def __init__(self, parent=None):
        super().__init__(parent)
        self.detail: EditDetail | None = None
        self.title = QLabel("No edit selected")
        self.title.setStyleSheet("font-weight: 600; font-size: 11pt;")
        self.status = QLabel()
        self.status.setContentsMargins(6, 1, 6, 1)
        self.prompt, self.target, self.subject = QLineEdit(), QLineEdit(), QLineEdit()
        self.prompt.setPlaceholderText("the question, e.g. “The capital of Australia is”")
        self.target.setPlaceholderText("the new answer, e.g. “Canberra”")
        self.subject.setPlaceholderText("optional: the entity the fact is about")

        self.paraphrases = QListWidget()
        self.paraphrases.setToolTip("Other wordings of the prompt: they should get the new answer too (Gen).")
        paraphrase_buttons, self.add_paraphrase_button, self.remove_paraphrase_button = _list_buttons(
            "Add paraphrase", self.add_paraphrase, self._remove_selected_paraphrase)

        self.locality = QTableWidget(0, 2)
        self.locality.setHorizontalHeaderLabels(["Unrelated prompt", "Its answer (optional)"])
        self.locality.setToolTip("Prompts the edit must not change (Loc): after editing they should be answered as before.")
        self.locality.verticalHeader().hide()
        self.locality.horizontalHeader().setSectionResizeMode(0, QHeaderView.Stretch)
        self.locality.horizontalHeader().setSectionResizeMode(1, QHeaderView.Stretch)
        locality_buttons, self.add_locality_button, self.remove_locality_button = _list_buttons(
            "Add locality prompt", self.add_locality, self._remove_selected_locality)

        self.save_button = QPushButton("Save changes")
        self.save_button.setShortcut("Ctrl+S")
        self.save_button.setToolTip("Save the prompt, target, paraphrases and locality prompts (Ctrl+S)")
        self.revert_button = QPushButton("Revert")
        self.save_button.clicked.connect(self.save)
        self.revert_button.clicked.connect(lambda: self.show_edit(self.detail))
        self.lock_note = QLabel("Applied edits are locked: undo the edit in the model, or duplicate it and change the copy.")
        self.lock_note.setWordWrap(True)
        self.lock_note.setStyleSheet("color: #6b7280;")

        header = QHBoxLayout()
        header.addWidget(self.title, 1)
        header.addWidget(self.status)
        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignRight)
        form.addRow("Prompt", self.prompt)
        form.addRow("Target", self.target)
        form.addRow("Subject", self.subject)
        buttons = QHBoxLayout()
        buttons.addWidget(self.lock_note, 1)
        buttons.addWidget(self.revert_button)
        buttons.addWidget(self.save_button)

        # Paraphrases and locality prompts side by side: the pane stays low enough to sit below the table.
        lists = QHBoxLayout()
        for title, view, list_buttons in (("Paraphrases", self.paraphrases, paraphrase_buttons),
                                          ("Locality prompts", self.locality, locality_buttons)):
            column = QVBoxLayout()
            column.addWidget(QLabel(title))
            column.addWidget(view, 1)
            column.addWidget(list_buttons)
            lists.addLayout(column, 1)
        for view in (self.paraphrases, self.locality):
            view.setMinimumHeight(60)
        layout = QVBoxLayout(self)
        layout.addLayout(header)
        layout.addLayout(form)
        layout.addLayout(lists, 1)
        layout.addLayout(buttons)
        self.show_edit(None)

    # -- showing ----------------------------------------------------------------------------------

    def show_edit(self, detail: EditDetail | None) -> None:
        self.detail = detail
        request = detail.request if detail is not None else EditRequest("", "")
        self.title.setText(f"Edit {detail.position}" if detail is not None else "No edit selected")
        status = detail.status if detail is not None else ""
        foreground, background = status_colours(status)
        self.status.setText(STATUS_LABELS.get(status, status))
        self.status.setStyleSheet(f"color: {foreground.name()}; background: {background.name()}; border-radius: 3px;")
        self.status.setVisible(detail is not None)
        self.prompt.setText(request.prompt)
        self.target.setText(request.target)
        self.subject.setText(request.subject)
        self.paraphrases.clear()
        for text in request.paraphrases:
            self._append_paraphrase(text)
        self.locality.setRowCount(0)
        for check in request.locality:
            self._append_locality(check.prompt, check.answer)
        locked = detail is None or detail.status in (EditStatus.APPLIED, EditStatus.APPLYING)
        for widget in (self.prompt, self.target, self.subject):
            widget.setReadOnly(locked)
        for widget in (self.add_paraphrase_button, self.remove_paraphrase_button, self.add_locality_button,
                       self.remove_locality_button, self.save_button, self.revert_button):
            widget.setEnabled(not locked)
        for view in (self.paraphrases, self.locality):
            view.setEditTriggers(QAbstractItemView.NoEditTriggers if locked else _EDIT_TRIGGERS)
        self.lock_note.setVisible(detail is not None and locked)

    def _append_paraphrase(self, text: str) -> QListWidgetItem:
        item = QListWidgetItem(text)
        item.setFlags(_EDITABLE)
        self.paraphrases.addItem(item)
        return item

    def _append_locality(self, prompt: str, answer: str) -> int:
        row = self.locality.rowCount()
        self.locality.insertRow(row)
        self.locality.setItem(row, 0, QTableWidgetItem(prompt))
        self.locality.setItem(row, 1, QTableWidgetItem(answer))
        return row

    # -- changing ---------------------------------------------------------------------------------

    def add_paraphrase(self, text: str = "") -> None:
        item = self._append_paraphrase(text)
        if not text:
            self.paraphrases.setCurrentItem(item)
            self.paraphrases.editItem(item)

    def add_locality(self, prompt: str = "", answer: str = "") -> None:
        row = self._append_locality(prompt, answer)
        if not prompt:
            self.locality.setCurrentCell(row, 0)
            self.locality.editItem(self.locality.item(row, 0))

    def _remove_selected_paraphrase(self) -> None:
        for item in self.paraphrases.selectedItems():
            self.paraphrases.takeItem(self.paraphrases.row(item))

    def _remove_selected_locality(self) -> None:
        for row in sorted({i.row() for i in self.locality.selectedIndexes()}, reverse=True):
            self.locality.removeRow(row)

    def edited_request(self) -> EditRequest:
        paraphrases = tuple(t for t in (self.paraphrases.item(i).text().strip() for i in range(self.paraphrases.count())) if t)
        locality = []
        for row in range(self.locality.rowCount()):
            prompt, answer = (self.locality.item(row, c).text().strip() if self.locality.item(row, c) else "" for c in (0, 1))
            if prompt:
                locality.append(LocalityCheck(prompt, answer))
        return dataclasses.replace(
            self.detail.request, prompt=self.prompt.text().strip(), target=self.target.text().strip(),
            subject=self.subject.text().strip(), paraphrases=paraphrases, locality=tuple(locality),
        )

    def save(self) -> None:
        if self.detail is None:
            return
        new = self.edited_request()
        if new != self.detail.request:
            self.save_requested.emit(self.detail.id, self.detail.request, new)
