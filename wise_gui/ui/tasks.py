"""Running a long call on a QThread and reporting back on the GUI thread with plain data."""

from __future__ import annotations

import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, QThread, Signal, Slot

from wise_gui.core.errors import WiseGuiError


class _CallRunner(QObject):
    progress = Signal(str, float)
    succeeded = Signal(object)
    failed = Signal(str, str)  # message for the user, technical details

    def __init__(self, function: Callable[..., Any], with_progress: bool):
        super().__init__()
        self._function = function
        self._with_progress = with_progress

    @Slot()
    def run(self) -> None:
        try:
            result = self._function(self.progress.emit) if self._with_progress else self._function()
        except WiseGuiError as exc:
            self.failed.emit(str(exc), "")
        except Exception as exc:  # an unexpected failure still becomes a dialog, never a crash
            self.failed.emit(f"{type(exc).__name__}: {exc}", traceback.format_exc())
        else:
            self.succeeded.emit(result)


class BackgroundCall(QObject):
    """Runs `function(progress)` (or `function()`) on its own thread; signals arrive on the GUI thread."""

    progress = Signal(str, float)
    succeeded = Signal(object)
    failed = Signal(str, str)
    done = Signal()

    def __init__(self, function: Callable[..., Any], with_progress: bool = True, parent: QObject | None = None):
        super().__init__(parent)
        self._thread = QThread()
        self._runner = _CallRunner(function, with_progress)
        self._runner.moveToThread(self._thread)
        self._thread.started.connect(self._runner.run)
        self._runner.progress.connect(self.progress)
        self._runner.succeeded.connect(self.succeeded)
        self._runner.failed.connect(self.failed)
        self._runner.succeeded.connect(self._thread.quit)
        self._runner.failed.connect(self._thread.quit)
        self._thread.finished.connect(self.done)

    def start(self) -> None:
        self._thread.start()

    def is_running(self) -> bool:
        return self._thread.isRunning()

    def wait(self, ms: int = -1) -> bool:
        return self._thread.wait() if ms < 0 else self._thread.wait(ms)
