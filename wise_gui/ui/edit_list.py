"""The edit list as the user changes it: typed rows, cell and detail edits, duplicate, delete, queue, the
sample edits, all undoable where it makes sense, and the counter and welcome note above the table.

These are short store writes, done on the GUI thread (a typed edit is one row); nothing here touches the
model. Refusals (an applied edit cannot be deleted, an empty prompt) become `problem` for a dialog.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoStack

from wise_gui.app.transfer import import_file
from wise_gui.core.edits import EditRequest
from wise_gui.core.errors import WiseGuiError
from wise_gui.resources_path import SAMPLE_EDITS, resource_path
from wise_gui.store import Store, StoreError
from wise_gui.ui.edit_commands import AddEdit, ChangeEdit, DeleteEdits, DuplicateEdit
from wise_gui.ui.edit_table import EditTableView, FilterBar
from wise_gui.ui.widgets import WelcomeNote


class EditList(QObject):
    problem = Signal(str)  # a refused change, for a dialog
    message = Signal(str, int)  # a status-bar message and how long it shows (ms)
    changed = Signal()  # the selected edit or what it is may have changed: its panels and the actions follow

    def __init__(self, table: EditTableView, filter_bar: FilterBar, welcome: WelcomeNote, parent: QObject | None = None):
        super().__init__(parent)
        self.table, self.model, self.filter_bar, self.welcome = table, table.model(), filter_bar, welcome
        self.undo_stack = QUndoStack(self)
        self.model.error.connect(self.problem)
        self.model.new_edit_requested.connect(self.add_typed)
        self.model.change_requested.connect(self.change)
        for signal in (self.model.modelReset, self.model.rowsInserted, self.model.rowsRemoved):
            signal.connect(self.update_count)
        self.filter_bar.changed.connect(self.model.set_filter)

    @property
    def store(self) -> Store | None:
        return self.model.store

    def set_store(self, store: Store) -> None:
        self.undo_stack.clear()  # its commands belong to the other workspace
        self.model.set_store(store)

    def update_count(self) -> None:
        if self.store is None:
            self.welcome.hide()
            return
        total = self.store.count_edits()
        self.filter_bar.show_count(self.model.edit_count, total)
        # The welcome state: a workspace without edits, and no new row being typed.
        self.welcome.setVisible(total == 0 and self.model.rowCount() == 0)

    def _push(self, command) -> bool:
        try:
            self.undo_stack.push(command.perform())
        except StoreError as exc:
            self.problem.emit(str(exc))
            return False
        return True

    def add_typed(self, request: EditRequest) -> None:
        if self._push(AddEdit(self.table, request)):
            # The typed row became this edit in place (no row was inserted): the counter and panels follow.
            self.update_count()
            self.changed.emit()

    def change(self, edit_id: int, old: EditRequest, new: EditRequest) -> None:
        if self._push(ChangeEdit(self.table, edit_id, old, new)):
            self.changed.emit()

    def duplicate_selected(self) -> None:
        ids = self.table.selected_edit_ids()
        if len(ids) == 1:
            self._push(DuplicateEdit(self.table, ids[0]))

    def delete_selected(self) -> None:
        if self.model.is_new_row(self.table.currentIndex().row()):
            self.model.discard_new_row()
            return
        ids = self.table.selected_edit_ids()
        if ids and self._push(DeleteEdits(self.table, ids)):
            self.message.emit(f"Deleted {len(ids)} edit{'s' * (len(ids) != 1)} (Ctrl+Z brings them back).", 5000)

    def queue_selected(self) -> None:
        self._set_status(self.store.mark_queued)

    def unqueue_selected(self) -> None:
        self._set_status(self.store.mark_draft)

    def _set_status(self, mark) -> None:
        ids = self.table.selected_edit_ids()
        if ids:
            mark(ids)
            self.refresh(ids)

    def refresh(self, ids: list[int]) -> None:
        for edit_id in ids:
            self.model.refresh_edit(edit_id)
        self.changed.emit()

    def load_samples(self, model_ready: bool) -> None:
        """The welcome button: ten ZsRE edits into the queue. Ten rows are one short write, so it works
        while the model is still loading."""
        if self.store is None:
            return
        try:
            report = import_file(self.store, resource_path(SAMPLE_EDITS))
        except (WiseGuiError, OSError) as exc:
            self.problem.emit(f"The sample edits could not be imported: {exc}")
            return
        self.model.reload()
        self.table.select_row(0)
        ready = "click Apply all queued to apply them" if model_ready else \
            "once the model has loaded, click Apply all queued to apply them"
        self.message.emit(f"Imported {report.imported} sample ZsRE edits into the queue: {ready}.", 15000)
