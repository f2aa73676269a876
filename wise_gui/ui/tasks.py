"""Long calls on a QThread, reporting back to the GUI thread with plain data.

Two kinds of job, one at a time in the window:

- BackgroundCall runs `function(report, should_stop)`: each object it reports (a dataclass, a tuple,
  numbers) arrives on the GUI thread through `reported`, in order; `should_stop()` turns true once
  abort() was called (a probe stops between generated tokens).
- GeneratorWorker iterates a generator made by `start(should_stop)` (the app's apply loop), as
  superqt's GeneratorWorker does: every yielded event is forwarded through `yielded` in a list, the
  optimisation steps (EditStep) of each BATCH_SECONDS in one list, so the GUI thread handles tens of
  reports a second instead of one per step; the generator's return value comes with `finished`.

Widgets are never touched from the worker thread: only these signals cross. `finished` (Success or
Failure) comes last, once the thread has stopped, so its handler may start the next job right away.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from wise_gui.app.events import EditStep
from wise_gui.core.errors import WiseGuiError

Report = Callable[[Any], None]
ShouldStop = Callable[[], bool]
BATCH_SECONDS = 0.03
WORKER_NICENESS = 5


@dataclass(frozen=True)
class Failure:
    message: str  # for the user
    details: str  # the traceback of an unexpected error; empty for an expected one (WiseGuiError)
    error: BaseException


@dataclass(frozen=True)
class Success:
    value: Any


def _yield_to_the_gui_thread() -> None:
    """Lowers this worker thread's scheduling priority (Linux: a thread's own nice value), so that on a busy
    CPU the GUI thread is scheduled first: it needs only moments, and every moment it waits is a stall."""
    if not sys.platform.startswith("linux"):
        return
    try:
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(os.getpriority(os.PRIO_PROCESS, thread) + WORKER_NICENESS, 19))
    except OSError:
        pass


class _Runner(QObject):
    """Lives on the worker thread: runs `body(emit)` and keeps its Success or Failure."""

    emitted = Signal(object)

    def __init__(self, body: Callable[[Report], Any]):
        super().__init__()
        self._body = body
        self.result: Success | Failure | None = None

    @Slot()
    def run(self) -> None:
        _yield_to_the_gui_thread()
        try:
            self.result = Success(self._body(self.emitted.emit))
        except WiseGuiError as exc:
            self.result = Failure(str(exc), "", exc)
        except Exception as exc:  # an unexpected failure still becomes a dialog, never a crash
            self.result = Failure(f"{type(exc).__name__}: {exc}", traceback.format_exc(), exc)
        QThread.currentThread().quit()


class _Job(QObject):
    finished = Signal(object)  # Success or Failure, after the thread stopped

    def __init__(self, body: Callable[[Report], Any], parent: QObject | None):
        super().__init__(parent)
        self._stop = threading.Event()
        self._thread = QThread()
        self._runner = _Runner(body)
        self._runner.moveToThread(self._thread)
        self._thread.started.connect(self._runner.run)
        # A bound slot of this object: queued to the GUI thread, after every forwarded report.
        self._thread.finished.connect(self._emit_finished)

    def _forward(self, signal: Signal) -> None:
        """The runner's reports arrive through `signal` of this object, on the GUI thread."""
        self._runner.emitted.connect(signal)

    @Slot()
    def _emit_finished(self) -> None:
        self.finished.emit(self._runner.result)

    @property
    def should_stop(self) -> ShouldStop:
        return self._stop.is_set

    def start(self) -> None:
        self._thread.start()

    def abort(self) -> None:
        """Asks the work to stop at its next check (between steps, between tokens)."""
        self._stop.set()

    @property
    def aborted(self) -> bool:
        return self._stop.is_set()

    def is_running(self) -> bool:
        return self._thread.isRunning()

    def wait(self, ms: int = -1) -> bool:
        return self._thread.wait() if ms < 0 else self._thread.wait(ms)


class BackgroundCall(_Job):
    """Runs `function(report, should_stop)` on its own thread."""

    reported = Signal(object)

    def __init__(self, function: Callable[[Report, ShouldStop], Any], parent: QObject | None = None):
        super().__init__(lambda emit: function(emit, self.should_stop), parent)
        self._forward(self.reported)


class StepBatcher:
    """Collects the events of a run into lists for `emit`: steps wait up to BATCH_SECONDS (or until any
    other event comes, which is sent at once after them)."""

    def __init__(self, emit: Report, clock: Callable[[], float] = time.perf_counter):
        self.emit, self.clock = emit, clock
        self._pending: list = []
        self._since = clock()

    def add(self, event) -> None:
        if not self._pending:
            self._since = self.clock()
        self._pending.append(event)
        if not isinstance(event, EditStep) or self.clock() - self._since >= BATCH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self.emit(batch)


class GeneratorWorker(_Job):
    """Iterates `start(should_stop)` on its own thread; `yielded` carries lists of its events and
    `finished` Success(the generator's return value) or Failure."""

    yielded = Signal(object)

    def __init__(self, start: Callable[[ShouldStop], Generator], parent: QObject | None = None):
        super().__init__(lambda emit: self._iterate(start, emit), parent)
        self._forward(self.yielded)

    def _iterate(self, start: Callable[[ShouldStop], Generator], emit: Report):
        batcher = StepBatcher(emit)
        events = start(self.should_stop)
        try:
            while True:
                try:
                    event = next(events)
                except StopIteration as done:
                    return done.value
                batcher.add(event)
        finally:
            batcher.flush()
