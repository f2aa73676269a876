"""The worker that runs the app's generators (issue 12.2): events cross to the GUI thread as plain data,
training steps batched, the abort flag reaches the generator, the return value comes at the end; and
the one enabling rule of the window's actions."""

from __future__ import annotations

import threading
import time

from PySide6.QtCore import QThread

from wise_gui.app.events import EditStep, RunFinished
from wise_gui.core.errors import WiseGuiError
from wise_gui.core.wise.training import StepEvent
from wise_gui.ui.actions import Need, WindowState, enabled_states
from wise_gui.ui.tasks import BackgroundCall, Failure, GeneratorWorker, Success

RUN_MS = 20_000


def step(i: int) -> EditStep:
    return EditStep(7, StepEvent(i, 1.0, 0.5, 1.5, [2.0], 0.1, i * 0.01, False), n_iter=1000)


def run(qtbot, worker) -> tuple[list[list], object]:
    batches, finished = [], []
    threads = set()
    if isinstance(worker, GeneratorWorker):
        worker.yielded.connect(lambda events: (batches.append(events), threads.add(QThread.currentThread())))
    worker.finished.connect(finished.append)
    worker.start()
    qtbot.waitUntil(lambda: bool(finished), timeout=RUN_MS)
    assert threads <= {QThread.currentThread()}  # every report arrived on the GUI thread
    return batches, finished[0]


def test_steps_arrive_in_batches_in_order_and_the_return_value_last(qtbot):
    def apply(should_stop):
        for i in range(1, 301):
            yield step(i)
            time.sleep(0.0005)  # 300 steps in about 0.15 s: tens of reports, not hundreds
        yield "edit applied"
        return RunFinished([7], [], cancelled=False)

    batches, result = run(qtbot, GeneratorWorker(apply))
    events = [event for batch in batches for event in batch]
    assert [e.step.iteration for e in events[:-1]] == list(range(1, 301)) and events[-1] == "edit applied"
    assert 2 <= len(batches) <= 60
    assert result == Success(RunFinished([7], [], cancelled=False))


def test_abort_reaches_the_generator_between_steps(qtbot):
    started = threading.Event()

    def apply(should_stop):
        i = 0
        while not should_stop():
            i += 1
            started.set()
            yield step(i)
            time.sleep(0.001)
        return RunFinished([], [], cancelled=True)

    worker = GeneratorWorker(apply)
    worker.start()
    assert started.wait(5)
    worker.abort()
    assert worker.aborted
    finished = []
    worker.finished.connect(finished.append)
    qtbot.waitUntil(lambda: bool(finished), timeout=RUN_MS)
    assert finished[0].value.cancelled


def test_a_failure_is_reported_with_its_message(qtbot):
    def broken(should_stop):
        yield step(1)
        raise WiseGuiError("the edit cannot be applied")

    _, result = run(qtbot, GeneratorWorker(broken))
    assert isinstance(result, Failure) and result.message == "the edit cannot be applied" and result.details == ""

    reported = []
    call = BackgroundCall(lambda report, should_stop: (report(("halfway", 0.5)), 1 / 0))
    call.reported.connect(reported.append)
    _, result = run(qtbot, call)
    assert reported == [("halfway", 0.5)]
    assert result.message.startswith("ZeroDivisionError") and "Traceback" in result.details


def test_one_rule_enables_the_actions():
    needs = {"undo_last": Need.EDITOR | Need.WRITABLE | Need.IDLE | Need.APPLIED,
             "apply_queued": Need.EDITOR | Need.WRITABLE | Need.IDLE,
             "export": Need.EDITOR | Need.APPLIED | Need.IDLE,
             "duplicate": Need.LIST | Need.WRITABLE | Need.ONE_SELECTED,
             "cancel": Need.APPLYING, "about": Need.NOTHING}
    fresh = WindowState(model=True, list=True, editor=True, writable=True)
    assert enabled_states(needs, fresh) == {"undo_last": False, "apply_queued": True, "export": False,
                                            "duplicate": False, "cancel": False, "about": True}
    applied = WindowState(model=True, list=True, editor=True, writable=True, applied=3, selected=1)
    assert enabled_states(needs, applied) == {"undo_last": True, "apply_queued": True, "export": True,
                                              "duplicate": True, "cancel": False, "about": True}
    running = WindowState(model=True, list=True, editor=True, writable=True, applied=3, busy=True, applying=True)
    assert enabled_states(needs, running) == {"undo_last": False, "apply_queued": False, "export": False,
                                              "duplicate": False, "cancel": True, "about": True}
    read_only = WindowState(model=True, list=True, editor=True, writable=False, applied=3, selected=1)
    assert enabled_states(needs, read_only) == {"undo_last": False, "apply_queued": False, "export": True,
                                                "duplicate": False, "cancel": False, "about": True}
