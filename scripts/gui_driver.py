"""Driving the real main window from a script (the stall benchmark, the screenshots): offscreen unless a
display is asked for, with the tiny random Llama of the tests or a real model."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # tiny_model
sys.path.insert(0, str(REPO))

from PySide6.QtCore import QEventLoop, QSettings, QTimer  # noqa: E402

from wise_gui.core.edits import EditRequest, LocalityCheck  # noqa: E402
from wise_gui.core.wise.settings import WiseSettings  # noqa: E402
from wise_gui.store import EditStatus  # noqa: E402
from wise_gui.ui.app import create_application  # noqa: E402

FIXTURE_EDITS = REPO / "tests" / "fixtures" / "zsre_engine_30.json"


def model_loader(model: str):
    """The loader the window calls: the tests' tiny Llama for "tiny", else the real loader."""
    if model != "tiny":
        from wise_gui.ui.main_window import default_model_loader

        return default_model_loader
    from tiny_model import tiny_loaded, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    return lambda *_: tiny_loaded(tokenizer=tokenizer)


def wait_until(app, condition, timeout: float, what: str) -> None:
    """Runs the event loop (idle between events, as app.exec() does) until `condition()` holds."""
    deadline = time.perf_counter() + timeout
    loop = QEventLoop()
    check = QTimer(interval=20)
    check.timeout.connect(lambda: loop.quit() if condition() or time.perf_counter() > deadline else None)
    check.start()
    if not condition():
        loop.exec()
    check.stop()
    if not condition():
        raise TimeoutError(f"timed out waiting for {what}")


def open_window(model: str, db: Path, settings: WiseSettings | None, size=(1680, 1020)):
    """A shown MainWindow on `db` with the model loaded and the workspace open; returns (app, window)."""
    from wise_gui.ui.main_window import MainWindow

    app = create_application()
    window = MainWindow(model_loader=model_loader(model), settings=settings, db_path=db,
                        app_settings=QSettings(str(db.with_suffix(".ini")), QSettings.IniFormat))
    window.resize(*size)
    window.show()
    window.load_model(model)
    wait_until(app, lambda: window.editor is not None and not window.busy, 600, "the model and workspace")
    return app, window


def fixture_requests(count: int, start: int = 0) -> list[EditRequest]:
    records = json.loads(FIXTURE_EDITS.read_text())[start:start + count]
    return [EditRequest(r["src"], r["alt"], paraphrases=(r["rephrase"],), locality=(LocalityCheck(r["loc"], r["loc_ans"]),))
            for r in records]


def queue_edits(window, requests: list[EditRequest]) -> None:
    for request in requests:
        window.store.add_edit(request, status=EditStatus.QUEUED)
    window.table_model.reload()


def apply_all(app, window, timeout: float = 1800) -> None:
    window.apply_all_queued()
    wait_until(app, lambda: not window.busy, timeout, "the apply run")
