"""The window's size and room (issue 15.2, 15.7, 15.8): it opens inside a 1280 x 800 screen and never
demands more; the edit table gets the room; its columns can be resized and keep their widths across
restarts; the toolbar's run line is never cut off."""

from __future__ import annotations

from PySide6.QtCore import QRect, QSize
from PySide6.QtWidgets import QHeaderView
from test_ui_window import add_edits

from wise_gui.app.events import RunFinished
from wise_gui.ui.edit_table import PROMPT_COLUMN, TARGET_COLUMN
from wise_gui.ui.run_presenter import run_summary
from wise_gui.ui.window_state import first_size

SMALL_SCREEN = QRect(0, 0, 1280, 800)


def test_the_first_window_fits_a_1280_by_800_screen(qtbot, open_window):
    assert first_size(SMALL_SCREEN).width() <= 1280 and first_size(SMALL_SCREEN).height() <= 800
    assert first_size(QRect(0, 0, 2560, 1440)) == QSize(1680, 1020)

    window = open_window()
    assert window.welcome.isVisible()  # the welcome note shows: the tallest first state
    room = first_size(SMALL_SCREEN)
    for size in (window.minimumSizeHint(), window.minimumSize()):
        assert size.width() <= room.width() and size.height() <= room.height(), size
    window.resize(room)
    qtbot.wait(20)
    assert window.size() == room  # nothing forces it larger
    window.load_sample_edits()
    window.table_model.reload()  # the welcome note goes: still no growth
    qtbot.wait(20)
    assert window.size() == room and window.minimumSizeHint().height() <= room.height()


def test_the_edit_table_gets_the_room(qtbot, open_window):
    window = open_window()
    add_edits(window, *range(30))
    window.resize(1600, 1000)
    window.reset_layout()
    qtbot.wait(50)
    rows = window.table.viewport().height() // window.table.verticalHeader().defaultSectionSize()
    assert rows >= 16, rows
    header = window.table.horizontalHeader()
    for column in (PROMPT_COLUMN, TARGET_COLUMN):
        assert header.sectionResizeMode(column) == QHeaderView.Interactive
    assert header.sectionSize(PROMPT_COLUMN) >= 250 and header.sectionSize(TARGET_COLUMN) >= 160


def test_column_widths_are_kept_across_restarts(qtbot, open_window):
    window = open_window()
    header = window.table.horizontalHeader()
    header.resizeSection(PROMPT_COLUMN, 333)
    header.resizeSection(TARGET_COLUMN, 222)
    window.resize(1500, 900)  # a user-sized column stays as it is when the window changes
    qtbot.wait(20)
    assert (header.sectionSize(PROMPT_COLUMN), header.sectionSize(TARGET_COLUMN)) == (333, 222)
    window.close()

    again = open_window()
    header = again.table.horizontalHeader()
    assert (header.sectionSize(PROMPT_COLUMN), header.sectionSize(TARGET_COLUMN)) == (333, 222)


def test_the_run_line_is_never_cut_off(qtbot, open_window):
    window = open_window()
    window.resize(window.minimumSizeHint())
    qtbot.wait(20)
    assert window.run_label.isVisible()  # not pushed into the toolbar's overflow menu
    label = window.run_label
    many = list(range(1000))
    messages = [run_summary(RunFinished(many, many[:120], cancelled=True))[0],
                run_summary(RunFinished(many, [], cancelled=False))[0],
                "edit 1000 of 1000 · about 23 h 59 min left", "starting 1000 edits…", "Run stopped by an error."]
    window.cancel_run()  # nothing runs: no message
    for text in messages:
        assert label.fontMetrics().horizontalAdvance(text) <= label.contentsRect().width(), text
    # The cancel's message, shown while the edit in training is rolled back:
    window.run_presenter.show_message("cancelling: rolling back the edit…")
    assert label.fontMetrics().horizontalAdvance(label.text()) <= label.contentsRect().width()
