"""Starting the Qt application and the main window."""

from __future__ import annotations

import sys


def create_application():
    """The QApplication with the names QSettings files are kept under and a consistent look on every platform."""
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("WISE Workbench")
    app.setOrganizationName("wise-gui")
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
