"""Starting the Qt application and the main window."""

from __future__ import annotations

import sys


def run(model: str | None = None, db: str | None = None) -> int:
    from PySide6.QtWidgets import QApplication

    from wise_gui.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("WISE Workbench")
    app.setOrganizationName("wise-gui")
    window = MainWindow()
    window.show()
    window.load_model(model or "default")
    return app.exec()
