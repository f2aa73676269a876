"""What the window remembers between runs (in QSettings): its geometry, the docks, the edit table's
column widths and the recent workspaces; and the first size on a screen never seen before."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QRect, QSettings, QSize
from PySide6.QtWidgets import QMainWindow, QTableView

MAX_RECENT = 8
PREFERRED_SIZE = QSize(1680, 1020)
SCREEN_SHARE = 0.95  # of the available screen, leaving room for the window frame


def first_size(available: QRect | None) -> QSize:
    """The preferred size, or less, so the whole window shows on first start on any screen."""
    if available is None:
        return PREFERRED_SIZE
    return QSize(min(PREFERRED_SIZE.width(), int(available.width() * SCREEN_SHARE)),
                 min(PREFERRED_SIZE.height(), int(available.height() * SCREEN_SHARE)))


class SavedWindowState:
    def __init__(self, settings: QSettings):
        self.settings = settings

    def restore(self, window: QMainWindow, table: QTableView) -> bool:
        """Geometry, docks and the table's column widths as last saved (`table.restore_columns`); False
        when there was no saved dock state."""
        geometry = self.settings.value("window/geometry")
        if isinstance(geometry, QByteArray):
            window.restoreGeometry(geometry)
        header = self.settings.value("window/table_header")
        if isinstance(header, QByteArray):
            table.restore_columns(header)
        state = self.settings.value("window/state")
        return isinstance(state, QByteArray) and window.restoreState(state)

    def save(self, window: QMainWindow, table: QTableView) -> None:
        self.settings.setValue("window/geometry", window.saveGeometry())
        self.settings.setValue("window/state", window.saveState())
        self.settings.setValue("window/table_header", table.horizontalHeader().saveState())
        self.settings.sync()

    def recent_workspaces(self) -> list[str]:
        value = self.settings.value("recent_workspaces", [])
        return [value] if isinstance(value, str) else list(value or [])

    def remember_workspace(self, path: Path) -> list[str]:
        paths = [str(path)] + [p for p in self.recent_workspaces() if p != str(path)]
        self.settings.setValue("recent_workspaces", paths[:MAX_RECENT])
        return paths[:MAX_RECENT]
