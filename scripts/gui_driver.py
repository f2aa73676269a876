"""Driving the real main window from a script: offscreen unless a display is asked for, with the tiny
random Llama of the tests or a real model.

The other scripts (the stall benchmark, the screenshots) import its helpers. Run on its own, it opens the
window on a workspace and, with --apply, applies every queued edit as a user clicking Apply all queued
would, printing what the window shows of each edit as one line on stdout:

    ready                        the model is loaded and the workspace open
    applying <edit id>           the edit started training
    applied <edit id> <json>     it is applied; the JSON holds its answers as the window shows them
    finished <json>              the run's summary

    .venv/bin/python scripts/gui_driver.py --model MODEL_FOLDER --db WORKSPACE.sqlite --apply
"""

from __future__ import annotations

import argparse
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

from wise_gui.app.workspace import WorkspaceService, default_model_loader  # noqa: E402
from wise_gui.core.edits import EditRequest, LocalityCheck  # noqa: E402
from wise_gui.core.wise.settings import WiseSettings  # noqa: E402
from wise_gui.store import EditDetail, EditStatus  # noqa: E402
from wise_gui.ui.app import create_application  # noqa: E402

FIXTURE_EDITS = REPO / "tests" / "fixtures" / "zsre_engine_30.json"


def model_loader(model: str):
    """The loader the window calls: the tests' tiny Llama for "tiny", else the real loader."""
    if model != "tiny":
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


def pause(app, seconds: float) -> None:
    """Runs the event loop for `seconds` (timers fire, plots redraw, the window paints)."""
    end = time.perf_counter() + seconds
    wait_until(app, lambda: time.perf_counter() >= end, seconds + 5, "the pause")


def make_window(model: str, db: Path, settings: WiseSettings | None, size=(1680, 1020),
                app_settings: Path | None = None):
    """A shown MainWindow on `db`, its model not loaded yet; returns (app, window)."""
    from wise_gui.ui.main_window import MainWindow

    app = create_application()
    service = WorkspaceService(loader=model_loader(model), settings_override=settings)
    window = MainWindow(service=service, db_path=db,
                        app_settings=QSettings(str(app_settings or db.with_suffix(".ini")), QSettings.IniFormat))
    window.resize(*size)
    window.show()
    return app, window


def load_and_open(app, window, model: str) -> None:
    """Loads the model as the window does on start, and waits until its workspace is open."""
    window.load_model(model)
    wait_until(app, lambda: not window.busy and (window.service.editor is not None or window.message_box is not None),
               600, "the model and workspace")
    if window.service.editor is None:
        raise RuntimeError(f"the workspace did not open: {window.message_box.text()}")


def open_window(model: str, db: Path, settings: WiseSettings | None, size=(1680, 1020), app_settings: Path | None = None):
    """A shown MainWindow on `db` with the model loaded and the workspace open; returns (app, window)."""
    app, window = make_window(model, db, settings, size, app_settings)
    load_and_open(app, window, model)
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


def _say(line: str) -> None:
    print(line, flush=True)


def _report_edit(detail: EditDetail) -> None:
    if detail.status == EditStatus.APPLYING:
        _say(f"applying {detail.id}")
    elif detail.status == EditStatus.APPLIED and detail.outcome is not None:
        _say(f"applied {detail.id} {json.dumps({'answers': detail.outcome.fields.answers})}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny (default), default (SmolLM2) or a model path")
    parser.add_argument("--db", type=Path, required=True, help="the workspace")
    parser.add_argument("--settings", help="WISE settings as JSON for the workspace (default: its own)")
    parser.add_argument("--apply", action="store_true", help="apply every queued edit, then quit")
    args = parser.parse_args()
    settings = WiseSettings.from_dict(json.loads(args.settings)) if args.settings else None
    app, window = open_window(args.model, args.db, settings, app_settings=args.db.with_name(args.db.name + ".ini"))
    _say("ready")
    if args.apply:
        window.run_presenter.edit_changed.connect(_report_edit)
        apply_all(app, window, timeout=24 * 3600)
        _say(f"finished {json.dumps({'label': window.run_label.text()})}")
    window.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
