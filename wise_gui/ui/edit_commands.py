"""Undoable changes to the edit list (Edit > Undo / Redo), each a store call plus an in-place table update.

A command does its first store change in `perform()`, before it is pushed, so a refusal (an applied edit
cannot be deleted) reaches the user as a message and nothing lands on the undo stack. Later undo/redo
calls that the store refuses are reported through `view.model().error`.
"""

from __future__ import annotations

from PySide6.QtGui import QUndoCommand

from wise_gui.core.edits import EditRequest
from wise_gui.store import EditDetail, StoreError
from wise_gui.ui.edit_table import EditTableView
from wise_gui.ui.style import shorten


class _EditCommand(QUndoCommand):
    def __init__(self, view: EditTableView, text: str):
        super().__init__(text)
        self.view = view
        self._first_redo = True

    @property
    def model(self):
        return self.view.model()

    @property
    def store(self):
        return self.model.store

    def perform(self) -> _EditCommand:
        """Does the change now; raises StoreError if the store refuses it."""
        self._do()
        return self

    def redo(self) -> None:
        if self._first_redo:  # QUndoStack.push calls redo(); perform() already did the work
            self._first_redo = False
            return
        self._guarded(self._do)

    def undo(self) -> None:
        self._guarded(self._undo)

    def _guarded(self, action) -> None:
        try:
            action()
        except StoreError as exc:
            self.model.error.emit(str(exc))

    def _do(self) -> None:
        raise NotImplementedError

    def _undo(self) -> None:
        raise NotImplementedError


class AddEdit(_EditCommand):
    def __init__(self, view: EditTableView, request: EditRequest):
        super().__init__(view, f"Add edit “{shorten(request.prompt, 40)}”")
        self.request = request
        self.edit_id: int | None = None

    def _do(self) -> None:
        self.edit_id = self.store.add_edit(self.request)
        self.view.select_row(self.model.edit_added(self.edit_id))

    def _undo(self) -> None:
        self.store.delete_edits([self.edit_id])
        self.model.edits_removed([self.edit_id])


class ChangeEdit(_EditCommand):
    def __init__(self, view: EditTableView, edit_id: int, old: EditRequest, new: EditRequest):
        super().__init__(view, f"Change edit “{shorten(new.prompt, 40)}”")
        self.edit_id, self.old, self.new = edit_id, old, new

    def _set(self, request: EditRequest) -> None:
        self.store.update_edit(self.edit_id, request)
        self.model.refresh_edit(self.edit_id)

    def _do(self) -> None:
        self._set(self.new)

    def _undo(self) -> None:
        self._set(self.old)


class DuplicateEdit(_EditCommand):
    def __init__(self, view: EditTableView, edit_id: int):
        super().__init__(view, "Duplicate edit")
        self.original_id = edit_id
        self.copy_id: int | None = None

    def _do(self) -> None:
        self.copy_id = self.store.duplicate_edit(self.original_id)
        self.view.select_row(self.model.edit_inserted_after(self.model.locate(self.original_id), self.copy_id))

    def _undo(self) -> None:
        self.store.delete_edits([self.copy_id])
        self.model.edits_removed([self.copy_id])


class DeleteEdits(_EditCommand):
    """Deleting keeps the deleted edits (content, status, place in the list) so Undo can put them back."""

    def __init__(self, view: EditTableView, edit_ids: list[int]):
        super().__init__(view, f"Delete {len(edit_ids)} edit{'s' * (len(edit_ids) != 1)}")
        self.edit_ids = list(edit_ids)
        self.deleted: list[EditDetail] = []

    def _do(self) -> None:
        self.deleted = [self.store.get_edit(i) for i in self.edit_ids]
        self.store.delete_edits(self.edit_ids)
        self.model.edits_removed(self.edit_ids)

    def _undo(self) -> None:
        self.edit_ids = self.store.restore_edits(self.deleted)
        self.model.reload()
        rows = [r for r in (self.model.locate(i) for i in self.edit_ids) if r is not None]
        if rows:
            self.view.select_row(rows[0])
