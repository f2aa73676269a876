"""Starting the Qt application and the main window."""

from __future__ import annotations

import sys

GIL_SWITCH_SECONDS = 0.001


def create_application():
    """The QApplication with the names QSettings files are kept under and a consistent look on every platform."""
    from PySide6.QtWidgets import QApplication

    from wise_gui.resources_path import APP_ID
    from wise_gui.ui.icons import app_icon

    # The worker thread trains in Python between its torch calls: a GUI thread that wants the GIL gets it
    # within 1 ms instead of Python's default 5 ms, so a repaint's many Python calls do not add up to a stall.
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("WISE Workbench")
    app.setOrganizationName("wise-gui")
    app.setDesktopFileName(APP_ID)  # Wayland and the task bar match the window to the .desktop file
    app.setWindowIcon(app_icon())
    app.setStyle("Fusion")
    return app


def run(model: str | None = None, db: str | None = None) -> int:
    """`wise-gui` without a sub-command: the window on the workspace `db` (default: the user's) with `model`."""
    from wise_gui.ui.main_window import MainWindow

    app = create_application()
    window = MainWindow(db_path=db)
    window.show()
    window.load_model(model or "default")
    return app.exec()
