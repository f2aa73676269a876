"""Starting the Qt application and the main window."""

from __future__ import annotations

import sys

ICON_SIZES = (16, 32, 48, 64, 128, 256)


def app_icon():
    """The application icon (resources/icons, written by packaging/make_icons.py), every PNG size in one QIcon."""
    from PySide6.QtGui import QIcon

    from wise_gui.resources_path import icon_path

    icon = QIcon()
    for size in ICON_SIZES:
        path = icon_path(size)
        if path.is_file():
            icon.addFile(str(path))
    return icon


def create_application():
    """The QApplication with the names QSettings files are kept under and a consistent look on every platform."""
    from PySide6.QtWidgets import QApplication

    from wise_gui.resources_path import APP_ID

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
