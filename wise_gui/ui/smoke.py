"""The window part of `wise-gui smoke --window`: open it on a temporary workspace and load the samples."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from wise_gui.core.errors import WiseGuiError

WINDOW_TIMEOUT_S = 180


def check_window(loaded) -> str:
    from PySide6.QtCore import QSettings

    from wise_gui.app.workspace import WorkspaceService
    from wise_gui.ui.app import create_application
    from wise_gui.ui.main_window import MainWindow

    app = create_application()
    with tempfile.TemporaryDirectory(prefix="wise-gui-smoke-") as tmp:
        settings = QSettings(str(Path(tmp) / "settings.ini"), QSettings.IniFormat)
        window = MainWindow(service=WorkspaceService(loader=lambda *_: loaded), db_path=Path(tmp) / "smoke.sqlite",
                            app_settings=settings)
        window.show()
        window.load_model(loaded.name)
        deadline = time.monotonic() + WINDOW_TIMEOUT_S
        while (window.service.editor is None or window.busy) and time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.02)
        try:
            if window.service.editor is None:
                box = window.message_box
                raise WiseGuiError("the window did not open its workspace"
                                   + (f": {box.text()}" if box is not None else f" within {WINDOW_TIMEOUT_S} s"))
            if not window.welcome.isVisible():
                raise WiseGuiError("the window did not show its welcome state on an empty workspace")
            window.load_sample_edits()
            rows = window.table_model.rowCount()
            if rows != 10 or window.welcome.isVisible():
                raise WiseGuiError(f"the welcome button imported {rows} edits instead of 10")
        finally:
            window.close()
            app.processEvents()
    return f"window: {app.platformName()} platform, workspace opened, welcome shown, {rows} sample edits queued"
