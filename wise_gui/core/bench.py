"""The benchmark runner behind `wise-gui bench` and `wise-gui eval`: T sequential edits, then evaluate all T."""

from __future__ import annotations

import dataclasses
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from wise_gui.core.edits import EditRequest
from wise_gui.core.evaluation import Metrics, evaluate
from wise_gui.core.wise.editor import WiseEditor


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


@dataclass
class BenchResult:
    """One benchmark row; `to_json` gives the keys `bench` and `eval` both write."""

    model: str
    layer: int
    n_edits: int
    start: int
    method: str = "wise"
    rel: float | None = None
    gen: float | None = None
    loc: float | None = None
    gen_success: float | None = None
    portability: float | None = None
    ood: float | None = None
    seconds_per_edit: float | None = None
    seconds_per_edit_full_forward: float | None = None
    speedup_vs_full_forward: float | None = None  # on the same edits, timed both ways
    iterations_per_edit: float | None = None
    peak_rss_mb: float = 0.0
    settings: dict = field(default_factory=dict)
    per_edit: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def table(self) -> str:
        def fmt(value, digits=3):
            return "-" if value is None else f"{value:.{digits}f}"

        rows = [
            ("model", self.model), ("layer", str(self.layer)), ("method", self.method),
            ("edits", f"{self.n_edits} (records {self.start}..{self.start + self.n_edits - 1})"),
            ("Rel", fmt(self.rel)), ("Gen", fmt(self.gen)), ("Loc", fmt(self.loc)),
            ("generation success", fmt(self.gen_success)),
        ]
        if self.portability is not None:
            rows.append(("portability", fmt(self.portability)))
        if self.ood is not None:
            rows.append(("OOD", fmt(self.ood)))
        if self.seconds_per_edit is not None:
            rows.append(("seconds per edit", fmt(self.seconds_per_edit, 2)))
        if self.iterations_per_edit is not None:
            rows.append(("iterations per edit", fmt(self.iterations_per_edit, 1)))
        if self.seconds_per_edit_full_forward is not None:
            rows.append(("seconds per edit, --full-forward", fmt(self.seconds_per_edit_full_forward, 2)))
            rows.append(("speed-up of the cached path", f"{self.speedup_vs_full_forward:.2f}x"))
        rows.append(("peak memory (MB)", f"{self.peak_rss_mb:.0f}"))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def apply_sequentially(editor: WiseEditor, requests: list[EditRequest],
                       on_progress: Callable[[int, int, float], None] | None = None) -> tuple[list[float], list[int]]:
    """Apply the requests in order; returns the seconds and the iterations of each edit."""
    started = time.perf_counter()
    seconds, iterations = [], []
    for i, request in enumerate(requests):
        outcome = editor.apply_edit(request)
        seconds.append(outcome.seconds)
        iterations.append(outcome.iterations)
        if on_progress is not None:
            on_progress(i + 1, len(requests), time.perf_counter() - started)
    return seconds, iterations


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def result_from_metrics(editor: WiseEditor, requests: list[EditRequest], start: int, metrics: Metrics,
                        method: str = "wise") -> BenchResult:
    return BenchResult(
        model=editor.loaded.name, layer=editor.layer_index, n_edits=len(requests), start=start, method=method,
        rel=metrics.rel, gen=metrics.gen, loc=metrics.loc, gen_success=metrics.gen_success,
        portability=metrics.portability, ood=metrics.ood, peak_rss_mb=peak_rss_mb(),
        settings=json.loads(editor.settings.to_json()), per_edit=metrics.per_edit,
    )


def run_benchmark(editor: WiseEditor, requests: list[EditRequest], start: int = 0, full_forward_edits: int = 0,
                  on_progress: Callable[[int, int, float], None] | None = None) -> BenchResult:
    """The paper's protocol: edit all requests in sequence, then evaluate all of them.

    With `full_forward_edits` > 0, the first that many edits are also timed with the full forward
    pass (then rolled back), so one run reports the speed-up of the cached path.
    """
    full_seconds: list[float] = []
    if full_forward_edits > 0:
        snapshot = editor.snapshot()
        cached_settings = editor.settings
        editor.update_settings(cached_settings.replace(full_forward=True))
        full_seconds, _ = apply_sequentially(editor, requests[:full_forward_edits])
        editor.update_settings(cached_settings)
        editor.restore(snapshot)
    seconds, iterations = apply_sequentially(editor, requests, on_progress)
    result = result_from_metrics(editor, requests, start, evaluate(editor, requests))
    result.seconds_per_edit = _mean(seconds)
    result.iterations_per_edit = _mean(iterations)
    if full_seconds:
        result.seconds_per_edit_full_forward = _mean(full_seconds)
        result.speedup_vs_full_forward = _mean(full_seconds) / _mean(seconds[: len(full_seconds)])
    result.peak_rss_mb = peak_rss_mb()
    return result


def write_json(result: BenchResult, path: str | Path) -> None:
    Path(path).write_text(json.dumps(result.to_json(), indent=2))
