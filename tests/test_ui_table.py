"""The edit table on its own (no model): lazy paging over 10,000 edits, in-place changes, filter, sort,
status colours, and the undoable list commands."""

from __future__ import annotations

import time

import pytest
from PySide6.QtCore import QItemSelectionModel, Qt
from PySide6.QtGui import QUndoStack

from wise_gui.core.edits import EditRequest
from wise_gui.store import EditStatus, OutcomeFields, import_requests, open_store
from wise_gui.ui.edit_commands import AddEdit, ChangeEdit, DeleteEdits, DuplicateEdit
from wise_gui.ui.edit_table import COLUMNS, PAGE_SIZE, PROMPT_COLUMN, EditTableModel, EditTableView
from wise_gui.ui.style import status_colours

STATUS_COLUMN = 1


@pytest.fixture
def store(tmp_path):
    with open_store(tmp_path / "table.sqlite") as store:
        yield store


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    """10,000 queued edits, imported once for the module's tests."""
    with open_store(tmp_path_factory.mktemp("big") / "big.sqlite") as store:
        import_requests(store, [EditRequest(f"Question number {i}?", f"answer {i}") for i in range(10_000)])
        yield store


def make_view(qtbot, store) -> EditTableView:
    view = EditTableView(EditTableModel(store))
    view.resize(900, 500)
    qtbot.addWidget(view)
    view.show()
    return view


def fill(store, count: int, status=EditStatus.DRAFT) -> list[int]:
    return [store.add_edit(EditRequest(f"prompt {i}", f"target {i}"), status=status) for i in range(count)]


def counting(model) -> dict[str, int]:
    """How often the model was reset or had rows moved, as a dict that fills while the test runs."""
    counts = {"reset": 0, "inserted": 0, "removed": 0}
    model.modelReset.connect(lambda: counts.__setitem__("reset", counts["reset"] + 1))
    model.rowsInserted.connect(lambda *_: counts.__setitem__("inserted", counts["inserted"] + 1))
    model.rowsRemoved.connect(lambda *_: counts.__setitem__("removed", counts["removed"] + 1))
    return counts


def test_ten_thousand_edits_load_lazily_and_change_in_place(qtbot, big_store):
    started = time.perf_counter()
    view = make_view(qtbot, big_store)
    qtbot.wait(10)  # let the view paint its first page
    model = view.model()
    assert model.rowCount() == 10_000
    assert model.page_loads == 1
    assert time.perf_counter() - started < 2.0

    view.scrollToBottom()
    qtbot.wait(10)
    assert model.index(9_999, PROMPT_COLUMN).data() == "Question number 9999?"
    assert model.page_loads <= 3  # the first page and the last one or two, never the 50 in between

    # A change to one edit refreshes that row only: no reset, no page read.
    counts = counting(model)
    loads = model.page_loads
    last_id = model.edit_id(9_999)
    big_store.mark_draft([last_id])
    model.refresh_edit(last_id)
    assert model.index(9_999, STATUS_COLUMN).data() == "draft"
    assert model.page_loads == loads and counts == {"reset": 0, "inserted": 0, "removed": 0}
    big_store.mark_queued([last_id])


def test_typing_a_new_row_adds_the_edit_at_the_bottom_without_a_reset(qtbot, store):
    fill(store, 3)
    view = make_view(qtbot, store)
    model = view.model()
    counts = counting(model)
    undo = QUndoStack()
    model.new_edit_requested.connect(lambda request: undo.push(AddEdit(view, request).perform()))

    view.start_new_edit()
    assert model.rowCount() == 4 and model.index(3, STATUS_COLUMN).data() == "new"
    assert model.setData(model.index(3, PROMPT_COLUMN), "The capital of Australia is")
    assert store.count_edits() == 3  # nothing is stored before the target is there too
    assert model.setData(model.index(3, PROMPT_COLUMN + 1), "Canberra")
    assert store.count_edits() == 4
    assert model.index(3, STATUS_COLUMN).data() == "draft"
    assert counts["reset"] == 0

    undo.undo()
    assert store.count_edits() == 3 and model.rowCount() == 3
    undo.redo()
    assert model.rowCount() == 4 and model.index(3, PROMPT_COLUMN).data() == "The capital of Australia is"
    assert counts["reset"] == 0


def test_editing_a_cell_goes_through_the_undo_stack(qtbot, store):
    [edit_id] = fill(store, 1)
    view = make_view(qtbot, store)
    model = view.model()
    undo = QUndoStack()
    model.change_requested.connect(lambda i, old, new: undo.push(ChangeEdit(view, i, old, new).perform()))
    assert model.setData(model.index(0, PROMPT_COLUMN), "Who wrote Hamlet?")
    assert store.get_edit(edit_id).request.prompt == "Who wrote Hamlet?"
    undo.undo()
    assert store.get_edit(edit_id).request.prompt == "prompt 0"
    assert model.index(0, PROMPT_COLUMN).data() == "prompt 0"


def test_applied_edits_are_locked_and_coloured_by_status(qtbot, store):
    applied, failed, draft = fill(store, 3)
    store.save_applied(applied, OutcomeFields(rel=1.0, gen=0.5, loc=1.0), {}, {})
    store.mark_failed(failed, "out of memory")
    view = make_view(qtbot, store)
    model = view.model()
    assert [model.index(r, STATUS_COLUMN).data() for r in range(3)] == ["applied", "failed", "draft"]
    for row, status in enumerate((EditStatus.APPLIED, EditStatus.FAILED, EditStatus.DRAFT)):
        assert model.index(row, STATUS_COLUMN).data(Qt.BackgroundRole) == status_colours(status)[1]
    assert model.index(1, STATUS_COLUMN).data(Qt.ToolTipRole) == "out of memory"
    assert [model.index(0, c).data() for c in (4, 5, 6, 7)] == [1, "100%", "50%", "100%"]
    assert not model.flags(model.index(0, PROMPT_COLUMN)) & Qt.ItemIsEditable
    assert model.flags(model.index(2, PROMPT_COLUMN)) & Qt.ItemIsEditable


def test_filter_by_text_and_status_and_sort(qtbot, store):
    ids = fill(store, 12)
    store.mark_queued(ids[:4])
    view = make_view(qtbot, store)
    model = view.model()
    model.set_filter("prompt 1", None)
    assert sorted(model.index(r, PROMPT_COLUMN).data() for r in range(model.rowCount())) == \
        ["prompt 1", "prompt 10", "prompt 11"]
    model.set_filter("", [EditStatus.QUEUED])
    assert model.rowCount() == 4
    model.set_filter("", None)
    view.sortByColumn(PROMPT_COLUMN, Qt.DescendingOrder)
    assert model.index(0, PROMPT_COLUMN).data() == "prompt 9"
    assert [c.sort_key for c in COLUMNS][PROMPT_COLUMN] == "prompt"


def test_delete_and_undo_put_the_edits_back_in_place(qtbot, store):
    ids = fill(store, 5)
    store.mark_queued([ids[1]])
    view = make_view(qtbot, store)
    model = view.model()
    counts = counting(model)
    undo = QUndoStack()
    view.selectRow(1)
    flags = QItemSelectionModel.SelectionFlag
    view.selectionModel().select(model.index(3, 0), flags.Select | flags.Rows)
    undo.push(DeleteEdits(view, view.selected_edit_ids()).perform())
    assert [model.index(r, PROMPT_COLUMN).data() for r in range(model.rowCount())] == ["prompt 0", "prompt 2", "prompt 4"]
    assert counts["reset"] == 0 and counts["removed"] == 2

    undo.undo()
    prompts = [model.index(r, PROMPT_COLUMN).data() for r in range(model.rowCount())]
    assert prompts == [f"prompt {i}" for i in range(5)]
    assert model.index(1, STATUS_COLUMN).data() == "queued"
    undo.redo()
    assert model.rowCount() == 3 and store.count_edits() == 3


def test_duplicate_lands_below_its_original(qtbot, store):
    ids = fill(store, 3)
    view = make_view(qtbot, store)
    model = view.model()
    counts = counting(model)
    undo = QUndoStack()
    undo.push(DuplicateEdit(view, ids[0]).perform())
    assert [model.index(r, PROMPT_COLUMN).data() for r in range(4)] == ["prompt 0", "prompt 0", "prompt 1", "prompt 2"]
    assert view.currentIndex().row() == 1 and counts == {"reset": 0, "inserted": 1, "removed": 0}
    undo.undo()
    assert model.rowCount() == 3


def test_deleting_an_applied_edit_is_refused(qtbot, store):
    [edit_id] = fill(store, 1)
    store.save_applied(edit_id, OutcomeFields(), {}, {})
    view = make_view(qtbot, store)
    with pytest.raises(Exception, match="applied"):
        DeleteEdits(view, [edit_id]).perform()
    assert view.model().rowCount() == 1


def test_pages_are_fetched_in_page_size_steps(qtbot, store):
    fill(store, PAGE_SIZE + 5)
    model = EditTableModel(store)
    assert model.row_data(PAGE_SIZE + 4).prompt == f"prompt {PAGE_SIZE + 4}"
    assert model.page_loads == 1 and model.row_of(model.edit_id(PAGE_SIZE + 4)) == PAGE_SIZE + 4
