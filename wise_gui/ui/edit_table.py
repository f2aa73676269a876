"""The edit list: a lazily paged table model over the store, the view, and its filter bar.

The model never holds the whole list: it knows the row count and fetches pages of PAGE_SIZE rows
when the view asks for them, keeping at most MAX_CACHED_PAGES. A change to one edit replaces that
row in place; inserts and deletes move rows with begin/endInsertRows and begin/endRemoveRows when the
list is in its natural order, and otherwise drop the page cache (only the visible page is re-read).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, QTimer, Signal
from PySide6.QtGui import QFont, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemDelegate,
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QTableView,
    QWidget,
)

from wise_gui.core.edits import EditRequest
from wise_gui.store import EditDetail, EditRow, EditStatus, Store, StoreError
from wise_gui.ui.style import NEW_ROW_STATUS, STATUS_LABELS, format_fraction, status_colours

PAGE_SIZE = 200
MAX_CACHED_PAGES = 40
EDIT_ID_ROLE = Qt.UserRole + 1
STATUS_ROLE = Qt.UserRole + 2
_LOCKED = (EditStatus.APPLYING.value, EditStatus.APPLIED.value)
# The roles as plain ints, looked up once: comparing with Qt's enum members costs more than the work.
_DISPLAY, _EDIT, _TOOLTIP, _FOREGROUND, _BACKGROUND, _FONT, _ALIGN = (int(r) for r in (
    Qt.DisplayRole, Qt.EditRole, Qt.ToolTipRole, Qt.ForegroundRole, Qt.BackgroundRole, Qt.FontRole,
    Qt.TextAlignmentRole))
_ANSWERED_ROLES = frozenset({_DISPLAY, _EDIT, _TOOLTIP, _FOREGROUND, _BACKGROUND, _FONT, _ALIGN, int(EDIT_ID_ROLE),
                             int(STATUS_ROLE)})
_CENTER = int(Qt.AlignCenter)
_SELECTABLE = Qt.ItemIsEnabled | Qt.ItemIsSelectable
_EDITABLE = _SELECTABLE | Qt.ItemIsEditable
_TEXT_FIELDS = frozenset({"prompt", "target"})


@dataclass(frozen=True)
class Column:
    title: str
    sort_key: str  # Store.edit_page order_by
    field: str  # EditRow attribute
    tooltip: str
    editable: bool = False


COLUMNS = [
    Column("#", "position", "position", "Position in the list; queued edits are applied in this order."),
    Column("Status", "status", "status", "draft → queued → applying → applied; failed and rolled back edits can be queued again."),
    Column("Prompt", "prompt", "prompt", "The question the model should answer differently (double-click to edit).", True),
    Column("Target", "target", "target", "The new answer the model should give (double-click to edit).", True),
    Column("Applied", "apply_order", "apply_order", "When the edit went into the side memory: 1 is the first applied edit."),
    Column("Rel", "rel", "rel", "Reliability: teacher-forced accuracy on the target for the edit prompt, right after applying it."),
    Column("Gen", "gen", "gen", "Generalization: the same on the paraphrases."),
    Column("Loc", "loc", "loc", "Locality: agreement with the unedited model on the locality prompts (1 = unchanged)."),
]
PROMPT_COLUMN = 2
TARGET_COLUMN = 3
FIXED_WIDTHS = (44, 86, 0, 0, 60, 48, 48, 48)  # 0: the text columns, fitted to the free width
MIN_TEXT_WIDTH = 120
_SCORE_FIELDS = {"rel", "gen", "loc"}


@dataclass
class _NewRow:
    """The row being typed in at the bottom; saved to the store once both prompt and target are filled."""

    prompt: str = ""
    target: str = ""


class EditTableModel(QAbstractTableModel):
    error = Signal(str)  # a refused change, for the user
    new_edit_requested = Signal(object)  # EditRequest typed into the new row, to be saved (through the undo stack)
    change_requested = Signal(int, object, object)  # edit id, old request, new request

    def __init__(self, store: Store | None = None, parent=None):
        super().__init__(parent)
        self.store: Store | None = None
        self._count = 0
        self._pages: OrderedDict[int, list[EditRow]] = OrderedDict()
        self._new_row: _NewRow | None = None
        self._text = ""
        self._statuses: list[str] | None = None
        self._order_by = "position"
        self._descending = False
        self.highlighted_edit: int | None = None  # the edit training now, shown in bold
        self.page_loads = 0  # how many pages were read from the store (tests check laziness)
        if store is not None:
            self.set_store(store)

    # -- source -----------------------------------------------------------------------------------

    def set_store(self, store: Store | None) -> None:
        self.store = store
        self.reload()

    def reload(self) -> None:
        """Re-count and forget the cached pages; only the pages the view shows are read again."""
        self.beginResetModel()
        self._pages.clear()
        self._new_row = None
        self._count = self.store.count_edits(self._text, self._statuses) if self.store is not None else 0
        self.endResetModel()

    def set_filter(self, text: str, statuses: list[str] | None) -> None:
        self._text, self._statuses = text, statuses
        self.reload()

    def sort(self, column: int, order: Qt.SortOrder = Qt.AscendingOrder) -> None:
        self._order_by = COLUMNS[column].sort_key
        self._descending = order == Qt.DescendingOrder
        self.reload()

    @property
    def in_natural_order(self) -> bool:
        """List order without a filter: a new edit is the last row, a copy sits right below its original."""
        return self._order_by == "position" and not self._descending and not self._text and self._statuses is None

    # -- paging -----------------------------------------------------------------------------------

    def _page(self, number: int) -> list[EditRow]:
        page = self._pages.get(number)
        if page is None:
            page = self.store.edit_page(number * PAGE_SIZE, PAGE_SIZE, text=self._text, status=self._statuses,
                                        order_by=self._order_by, descending=self._descending)
            self.page_loads += 1
            self._pages[number] = page
            if len(self._pages) > MAX_CACHED_PAGES:
                self._pages.popitem(last=False)
        else:
            self._pages.move_to_end(number)
        return page

    def row_data(self, row: int) -> EditRow | None:
        if row < 0 or row >= self._count or self.store is None:
            return None
        page = self._page(row // PAGE_SIZE)
        offset = row % PAGE_SIZE
        return page[offset] if offset < len(page) else None

    def edit_id(self, row: int) -> int | None:
        data = self.row_data(row)
        return None if data is None else data.id

    def row_of(self, edit_id: int) -> int | None:
        """The row of an edit among the cached pages (the ones the user has seen), else None."""
        for number, page in self._pages.items():
            for offset, data in enumerate(page):
                if data.id == edit_id:
                    return number * PAGE_SIZE + offset
        return None

    def locate(self, edit_id: int) -> int | None:
        """The row of an edit, reading further pages if needed (after a reload); None if filtered out."""
        row = self.row_of(edit_id)
        if row is not None or self.store is None:
            return row
        for number in range((self._count + PAGE_SIZE - 1) // PAGE_SIZE):
            for offset, data in enumerate(self._page(number)):
                if data.id == edit_id:
                    return number * PAGE_SIZE + offset
        return None

    def is_new_row(self, row: int) -> bool:
        return self._new_row is not None and row == self._count

    @property
    def edit_count(self) -> int:
        """Saved edits shown (the row being typed is not one yet)."""
        return self._count

    @property
    def read_only(self) -> bool:
        return self.store is None or self.store.read_only

    # -- Qt model API -----------------------------------------------------------------------------

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else self._count + (self._new_row is not None)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.DisplayRole):
        if orientation != Qt.Horizontal:
            return None
        if role == Qt.DisplayRole:
            return COLUMNS[section].title
        if role == Qt.ToolTipRole:
            return COLUMNS[section].tooltip
        return None

    def flags(self, index):
        if not COLUMNS[index.column()].editable or self.read_only:
            return _SELECTABLE
        if self.is_new_row(index.row()):
            return _EDITABLE
        data = self.row_data(index.row())
        return _EDITABLE if data is not None and data.status not in _LOCKED else _SELECTABLE

    def data(self, index, role=_DISPLAY):
        # Called for every role of every visible cell on each repaint (about 1,600 times for a screenful),
        # often while the worker thread competes for the GIL: the roles never answered leave at once.
        if role not in _ANSWERED_ROLES:
            return None
        row_number = index.row()
        column = COLUMNS[index.column()]
        if self._new_row is not None and row_number == self._count:
            return self._new_row_data(column, role)
        row = self.row_data(row_number)
        if row is None:
            return None
        field = column.field
        if role == _DISPLAY:
            value = getattr(row, field)
            if field == "status":
                return STATUS_LABELS.get(value, value)
            if field in _SCORE_FIELDS:
                return format_fraction(value)
            if isinstance(value, str):
                return _one_line(value)
            return "" if value is None else value
        if role == _FOREGROUND:
            return _status_colour(row.status, 0) if field == "status" else None
        if role == _BACKGROUND:
            return _status_colour(row.status, 1) if field == "status" else None
        if role == _FONT:
            return _font(bold=True) if row.id == self.highlighted_edit else None
        if role == _ALIGN:
            return None if field in _TEXT_FIELDS else _CENTER
        if role == _EDIT:
            return getattr(row, field)
        if role == _TOOLTIP:
            if field == "status" and row.error:
                return row.error
            return getattr(row, field) if field in _TEXT_FIELDS else None
        if role == EDIT_ID_ROLE:
            return row.id
        return row.status  # STATUS_ROLE

    def _new_row_data(self, column: Column, role):
        if role in (Qt.DisplayRole, Qt.EditRole):
            if column.field == "status":
                return STATUS_LABELS[NEW_ROW_STATUS]
            if column.field in ("prompt", "target"):
                text = getattr(self._new_row, column.field)
                return text if text or role == Qt.EditRole else f"type the {column.field}…"
            return ""
        if role == Qt.ForegroundRole:
            return status_colours(NEW_ROW_STATUS)[0]
        if role == Qt.FontRole:
            return _font(italic=True)
        if role == STATUS_ROLE:
            return NEW_ROW_STATUS
        return None

    def setData(self, index, value, role=Qt.EditRole) -> bool:
        if role != Qt.EditRole or not COLUMNS[index.column()].editable:
            return False
        field = COLUMNS[index.column()].field
        text = str(value).strip()
        if self.is_new_row(index.row()):
            setattr(self._new_row, field, text)
            self.dataChanged.emit(index, index)
            if self._new_row.prompt and self._new_row.target:
                self.new_edit_requested.emit(EditRequest(self._new_row.prompt, self._new_row.target))
            elif field == "target" and text:
                self.error.emit("The new edit has no prompt yet: type the question in its Prompt cell, then it is "
                                "saved with this target.")
            return True
        row = self.row_data(index.row())
        if row is None or getattr(row, field) == text:
            return False
        if not text:
            self.error.emit(f"The {field} cannot be empty.")
            return False
        try:
            old = self.store.get_edit(row.id).request
        except StoreError as exc:
            self.error.emit(str(exc))
            return False
        self.change_requested.emit(row.id, old, dataclasses.replace(old, **{field: text}))
        return True

    # -- changes, kept in place -------------------------------------------------------------------

    def start_new_row(self) -> int | None:
        """Adds the empty row at the bottom (or returns it if it is already there); None when the list
        cannot be changed."""
        if self.read_only:
            return None
        if self._new_row is None:
            self.beginInsertRows(QModelIndex(), self._count, self._count)
            self._new_row = _NewRow()
            self.endInsertRows()
        return self._count

    def discard_new_row(self) -> None:
        if self._new_row is not None:
            self.beginRemoveRows(QModelIndex(), self._count, self._count)
            self._new_row = None
            self.endRemoveRows()

    def edit_added(self, edit_id: int) -> int | None:
        """The edit `edit_id` was just stored at the end of the list (typed in the new row, or by a redo or
        an undo); returns its row if it is shown."""
        if not self.in_natural_order:
            self.reload()
            return self.locate(edit_id)
        row = self._count
        if self._new_row is not None and self._new_row.prompt and self._new_row.target:
            # The typed row is exactly where the store put the edit: it becomes a real row in place.
            self._new_row = None
            self._count += 1
            self._pages.pop(row // PAGE_SIZE, None)
            self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))
        else:
            self.beginInsertRows(QModelIndex(), row, row)
            self._count += 1
            self._pages.pop(row // PAGE_SIZE, None)
            self.endInsertRows()
        return row

    def edit_inserted_after(self, original_row: int | None, edit_id: int) -> int | None:
        """A copy was stored right below the edit at `original_row`."""
        if original_row is None or not self.in_natural_order:
            self.reload()
            return self.locate(edit_id)
        row = original_row + 1
        self.beginInsertRows(QModelIndex(), row, row)
        self._count += 1
        self._forget_pages_from(row)
        self.endInsertRows()
        return row

    def edits_removed(self, edit_ids: list[int]) -> None:
        """The edits were deleted from the store (call before the pages are re-read)."""
        rows = [self.row_of(i) for i in edit_ids]
        if any(r is None for r in rows):
            self.reload()
            return
        # Remove from the bottom up, one contiguous block at a time, so earlier row numbers stay valid.
        for first, last in reversed(_blocks(sorted(rows))):
            self.beginRemoveRows(QModelIndex(), first, last)
            self._count -= last - first + 1
            self._forget_pages_from(first)
            self.endRemoveRows()

    def refresh_edit(self, edit_id: int, detail: EditDetail | None = None) -> None:
        """Re-reads one edit and repaints its row where it is (even if a filter or sort would now move it)."""
        row = self.row_of(edit_id)
        if row is None:
            return
        detail = detail or self.store.get_edit(edit_id)
        page = self._pages[row // PAGE_SIZE]
        page[row % PAGE_SIZE] = _row_from_detail(page[row % PAGE_SIZE], detail)
        self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    def refresh_visible(self) -> None:
        """After many edits changed at once (an undo, a restore): re-reads the pages the view shows."""
        self._pages.clear()
        if self._count:
            self.dataChanged.emit(self.index(0, 0), self.index(self._count - 1, len(COLUMNS) - 1))

    def set_highlighted(self, edit_id: int | None) -> None:
        previous, self.highlighted_edit = self.highlighted_edit, edit_id
        for changed in (previous, edit_id):
            row = self.row_of(changed) if changed is not None else None
            if row is not None:
                self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    def _forget_pages_from(self, row: int) -> None:
        for number in [n for n in self._pages if n >= row // PAGE_SIZE]:
            del self._pages[number]


def _blocks(rows: list[int]) -> list[tuple[int, int]]:
    blocks: list[tuple[int, int]] = []
    for row in rows:
        if blocks and row == blocks[-1][1] + 1:
            blocks[-1] = (blocks[-1][0], row)
        else:
            blocks.append((row, row))
    return blocks


_STATUS_COLOURS: dict[str, tuple] = {}
_FONTS: dict[tuple[bool, bool], QFont] = {}


def _status_colour(status: str, which: int):
    """Foreground (0) or background (1) of a status, made once per status."""
    if status not in _STATUS_COLOURS:
        _STATUS_COLOURS[status] = status_colours(status)
    return _STATUS_COLOURS[status][which]


def _font(bold: bool = False, italic: bool = False) -> QFont:
    if (bold, italic) not in _FONTS:
        font = QFont()
        font.setBold(bold)
        font.setItalic(italic)
        _FONTS[bold, italic] = font
    return _FONTS[bold, italic]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _row_from_detail(row: EditRow, detail: EditDetail) -> EditRow:
    """The cached row updated from a freshly read edit; scores are those of its latest outcome, as in edit_page."""
    scores = {name: None for name in ("rel", "gen", "loc", "gen_success")}
    if detail.outcome is not None:
        scores = {name: getattr(detail.outcome.fields, name) for name in scores}
    return dataclasses.replace(
        row, status=detail.status, apply_order=detail.apply_order, prompt=detail.request.prompt,
        target=detail.request.target, subject=detail.request.subject, error=detail.error, **scores,
    )


class EditTableView(QTableView):
    """The table as the user sees it: whole-row selection, Tab moves from prompt to target, Escape drops a new row."""

    def __init__(self, model: EditTableModel, parent=None):
        super().__init__(parent)
        self.setModel(model)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.setEditTriggers(QAbstractItemView.DoubleClicked | QAbstractItemView.EditKeyPressed
                             | QAbstractItemView.AnyKeyPressed)
        self.setSortingEnabled(True)
        self.sortByColumn(0, Qt.AscendingOrder)
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        self.setTextElideMode(Qt.ElideRight)
        self.verticalHeader().hide()
        self.verticalHeader().setDefaultSectionSize(24)
        self.verticalHeader().setSectionResizeMode(QHeaderView.Fixed)  # no per-row measuring: 10,000 rows stay fast
        header = self.horizontalHeader()
        header.setHighlightSections(False)
        # Every column can be resized by the user; until one is, the prompt and target share the free width.
        header.setSectionResizeMode(QHeaderView.Interactive)
        header.setStretchLastSection(False)
        for column, width in enumerate(FIXED_WIDTHS):
            if width:
                header.resizeSection(column, width)
        self.sized_by_user = False
        self._fitting = False
        header.sectionResized.connect(self._section_resized)

    def model(self) -> EditTableModel:
        return super().model()

    def restore_columns(self, state) -> bool:
        """Column widths as the user left them (a saved header state)."""
        if not self.horizontalHeader().restoreState(state):
            return False
        self.sized_by_user = True
        return True

    def _section_resized(self, *_) -> None:
        if not self._fitting:
            self.sized_by_user = True

    def fit_text_columns(self) -> None:
        """Prompt and target share the width the other columns leave, 3 : 2."""
        header = self.horizontalHeader()
        others = sum(header.sectionSize(c) for c in range(len(COLUMNS)) if c not in (PROMPT_COLUMN, TARGET_COLUMN))
        free = max(self.viewport().width() - others, 2 * MIN_TEXT_WIDTH)
        self._fitting = True
        try:
            header.resizeSection(PROMPT_COLUMN, max(MIN_TEXT_WIDTH, free * 3 // 5))
            header.resizeSection(TARGET_COLUMN, max(MIN_TEXT_WIDTH, free - free * 3 // 5))
        finally:
            self._fitting = False

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if not self.sized_by_user:
            self.fit_text_columns()

    def selected_rows(self) -> list[int]:
        return sorted({index.row() for index in self.selectionModel().selectedRows()})

    def selected_edit_ids(self) -> list[int]:
        model = self.model()
        return [i for i in (model.edit_id(r) for r in self.selected_rows() if not model.is_new_row(r)) if i is not None]

    def select_row(self, row: int | None, column: int = PROMPT_COLUMN) -> None:
        if row is None:
            return
        index = self.model().index(row, column)
        self.setCurrentIndex(index)
        self.scrollTo(index)

    def start_new_edit(self) -> None:
        """Ctrl+N: an empty row at the bottom, its prompt cell open for typing."""
        row = self.model().start_new_row()
        if row is None:
            return
        self.select_row(row)
        self.edit(self.model().index(row, PROMPT_COLUMN))

    def keyPressEvent(self, event) -> None:
        if event.matches(QKeySequence.Cancel) and self.model().is_new_row(self.currentIndex().row()):
            self.model().discard_new_row()
            return
        super().keyPressEvent(event)

    def closeEditor(self, editor, hint) -> None:
        # Return after the prompt of a new row goes straight on to its target, like Tab does.
        index = QPersistentModelIndex(self.currentIndex())
        super().closeEditor(editor, hint)
        model = self.model()
        if (hint == QAbstractItemDelegate.EndEditHint.SubmitModelCache and index.isValid()
                and model.is_new_row(index.row()) and index.column() == PROMPT_COLUMN):
            target = model.index(index.row(), TARGET_COLUMN)
            self.setCurrentIndex(target)
            QTimer.singleShot(0, lambda: self.edit(target) if model.is_new_row(target.row()) else None)


class FilterBar(QWidget):
    """Text and status filter above the table; typing is debounced so a long list is not queried per key."""

    changed = Signal(str, object)  # text, list of statuses or None

    def __init__(self, parent=None):
        super().__init__(parent)
        self.text = QLineEdit()
        self.text.setPlaceholderText("Filter prompt, target or subject  (Ctrl+F)")
        self.text.setClearButtonEnabled(True)
        self.status = QComboBox()
        self.status.addItem("All statuses", None)
        for status in EditStatus:
            self.status.addItem(STATUS_LABELS[status].rstrip("…").capitalize(), [status.value])
        self.count = QLabel()
        self.count.setMinimumWidth(90)
        self.count.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.text, 1)
        layout.addWidget(QLabel("Status:"))
        layout.addWidget(self.status)
        layout.addWidget(self.count)
        self._debounce = QTimer(self, singleShot=True, interval=250)
        self._debounce.timeout.connect(self._emit)
        self.text.textChanged.connect(self._debounce.start)
        self.status.currentIndexChanged.connect(self._emit)

    def _emit(self) -> None:
        self.changed.emit(self.text.text().strip(), self.status.currentData())

    def show_count(self, shown: int, total: int) -> None:
        """`shown`: saved edits the filter lets through, of `total` in the workspace."""
        self.count.setText(f"{total:,} edit{'s' * (total != 1)}" if shown == total else f"{shown:,} of {total:,}")
