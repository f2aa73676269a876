"""Running a long call on a QThread and reporting back on the GUI thread with plain data.

The function gets a `report(obj)` callable; each reported object (a dataclass, a tuple, numbers)
arrives on the GUI thread through the `reported` signal, in order. Widgets are never touched
from the worker thread: only these signals cross. `finished` comes last, once the thread has
stopped, so its handler may start the next call right away.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any, Callable

from PySide6.QtCore import QObject, QThread, Signal, Slot

from wise_gui.core.errors import WiseGuiError

Report = Callable[[Any], None]


@dataclass(frozen=True)
class Failure:
    message: str  # for the user
    details: str  # the traceback of an unexpected error; empty for an expected one (WiseGuiError)
    error: BaseException


@dataclass(frozen=True)
class Success:
    value: Any


class _CallRunner(QObject):
    reported = Signal(object)

    def __init__(self, function: Callable[[Report], Any]):
        super().__init__()
        self._function = function
        self.result: Success | Failure | None = None

    @Slot()
    def run(self) -> None:
        try:
            self.result = Success(self._function(self.reported.emit))
        except WiseGuiError as exc:
            self.result = Failure(str(exc), "", exc)
        except Exception as exc:  # an unexpected failure still becomes a dialog, never a crash
            self.result = Failure(f"{type(exc).__name__}: {exc}", traceback.format_exc(), exc)
        QThread.currentThread().quit()


class BackgroundCall(QObject):
    """Runs `function(report)` on its own thread; `reported` and `finished` arrive on the GUI thread."""

    reported = Signal(object)
    finished = Signal(object)  # Success or Failure, after the thread stopped

    def __init__(self, function: Callable[[Report], Any], parent: QObject | None = None):
        super().__init__(parent)
        self._thread = QThread()
        self._runner = _CallRunner(function)
        self._runner.moveToThread(self._thread)
        self._thread.started.connect(self._runner.run)
        self._runner.reported.connect(self.reported)
        # A bound slot of this object: queued to the GUI thread, after every `reported` event.
        self._thread.finished.connect(self._emit_finished)

    @Slot()
    def _emit_finished(self) -> None:
        self.finished.emit(self._runner.result)

    def start(self) -> None:
        self._thread.start()

    def is_running(self) -> bool:
        return self._thread.isRunning()

    def wait(self, ms: int = -1) -> bool:
        return self._thread.wait() if ms < 0 else self._thread.wait(ms)
