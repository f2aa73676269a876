"""The longest stall of the GUI event loop while the window works (target: under 100 ms).

A 5 ms QTimer heartbeat runs on the GUI thread while the real main window, live plots and all, loads the
model and opens the workspace, applies N edits (default 5), then is browsed (rows selected one after
another, the table scrolled to the end, a probe). A stall is the time between two beats beyond the 5 ms.
Everything that touches the model runs on the worker thread, so the beats should keep coming.

--applied N first prepares a workspace holding N applied edits (in this process, with the app's workspace
service, no window), so the measurement shows the window at scale: a table, a router plot and a memory
summary of N edits. --workspace keeps that workspace for the next run.

    .venv/bin/python scripts/gui_stall_bench.py                          # tiny random Llama (seconds)
    .venv/bin/python scripts/gui_stall_bench.py --applied 1000 --workspace /tmp/bench1000.sqlite
    .venv/bin/python scripts/gui_stall_bench.py --model default          # SmolLM2-135M-Instruct
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from gui_driver import fixture_requests, load_and_open, make_window, model_loader, pause, queue_edits, wait_until
from PySide6.QtCore import QTimer

from wise_gui.app.apply_loop import run_to_summary
from wise_gui.app.workspace import WorkspaceService
from wise_gui.core.datasets import read_dataset
from wise_gui.store import EditStatus, import_requests

BEAT_MS = 5
TARGET_MS = 100
ZSRE = Path(__file__).resolve().parents[2] / "shared" / "data" / "zsre" / "zsre_edit_dev.json"


class Heartbeat:
    def __init__(self):
        self.gaps: dict[str, list[float]] = {}
        self.phase = ""
        self._last: float | None = None
        self.timer = QTimer(interval=BEAT_MS)
        self.timer.timeout.connect(self._beat)

    def _beat(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.gaps.setdefault(self.phase, []).append((now - self._last) * 1000 - BEAT_MS)
        self._last = now

    def start(self, phase: str) -> None:
        self.phase = phase
        self._last = None
        self.timer.start()

    def worst(self, phase: str | None = None) -> float:
        gaps = self.gaps.get(phase, []) if phase else [g for gaps in self.gaps.values() for g in gaps]
        return max(gaps, default=float("nan"))

    def percentile(self, share: float) -> float:
        gaps = sorted(g for gaps in self.gaps.values() for g in gaps)
        return gaps[int(share * (len(gaps) - 1))] if gaps else float("nan")


def bench_settings(model: str, applied: int):
    """Tiny model: the tests' settings; at scale, short edits and routing over the nearest memories only
    (what makes thousands of one-edit memories practical)."""
    if model != "tiny":
        return None
    from tiny_model import TINY_SETTINGS

    return TINY_SETTINGS.replace(n_iter=20, stop_when_learnt=True, route_candidates=8) if applied else TINY_SETTINGS


def prepare(db: Path, model: str, settings, applied: int) -> None:
    """A workspace holding `applied` applied edits (ZsRE dev records, or the test fixture repeated)."""
    service = WorkspaceService(loader=model_loader(model), settings_override=settings)
    service.load_model(model)
    service.open(db)
    try:
        have = service.store.count_edits(status=EditStatus.APPLIED)
        if have >= applied:
            return
        pool = read_dataset(ZSRE).requests if ZSRE.is_file() else fixture_requests(30)
        requests = [pool[i % len(pool)] for i in range(service.store.count_edits(), applied)]
        import_requests(service.store, requests, status=EditStatus.QUEUED)
        started = time.perf_counter()
        done = run_to_summary(service.apply(), lambda event: None)
        print(f"prepared {db}: {have + len(done.applied)} applied edits ({time.perf_counter() - started:.0f} s)")
    finally:
        service.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny (default), default (SmolLM2) or a model path")
    parser.add_argument("--edits", type=int, default=5, help="edits applied while the heartbeat runs")
    parser.add_argument("--applied", type=int, default=0, help="prepare a workspace with this many applied edits")
    parser.add_argument("--workspace", type=Path, help="the workspace to prepare and keep (default: a temporary one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        db = args.workspace or Path(folder) / "bench.sqlite"
        settings = bench_settings(args.model, args.applied)
        if args.applied:
            prepare(db, args.model, settings, args.applied)
        app, window = make_window(args.model, db, settings, app_settings=Path(folder) / "bench.ini")
        pause(app, 0.5)  # the window's first frame: its first paint is no stall of work
        heartbeat = Heartbeat()
        heartbeat.start("open")
        load_and_open(app, window, args.model)
        pause(app, 1.0)  # the plots' first redraws
        opened = window.applied

        heartbeat.phase = "apply"
        queue_edits(window, fixture_requests(args.edits))
        started = time.perf_counter()
        window.apply_all_queued()
        wait_until(app, lambda: not window.busy, 3600, "the apply run")
        seconds = time.perf_counter() - started

        heartbeat.phase = "browse"
        for row in range(0, min(window.table_model.rowCount(), 50)):
            window.table.select_row(row)
            pause(app, 0.02)
        window.table.scrollToBottom()
        window.table.select_row(window.table_model.rowCount() - 1)
        pause(app, 0.5)
        window.probe_panel.ask(fixture_requests(1)[0].prompt)
        wait_until(app, lambda: not window.busy, 600, "the probe")
        pause(app, 0.5)
        heartbeat.timer.stop()
        applied = window.applied
        window.close()

    print(f"model {args.model}: workspace opened with {opened} applied edits; {applied - opened}/{args.edits} more "
          f"applied in {seconds:.1f} s; {sum(len(g) for g in heartbeat.gaps.values())} heartbeats of {BEAT_MS} ms")
    print("longest stall by phase: " + ", ".join(f"{phase} {heartbeat.worst(phase):.1f} ms" for phase in heartbeat.gaps))
    worst = heartbeat.worst()
    print(f"max event-loop stall: {worst:.1f} ms (99th percentile {heartbeat.percentile(0.99):.1f} ms; "
          f"target < {TARGET_MS} ms)")
    return 0 if worst < TARGET_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
