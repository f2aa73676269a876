"""The benchmark runner behind `wise-gui bench` and `wise-gui eval`: T sequential edits, then evaluate all T.

`run_benchmark` is one run of the paper's protocol for one editor. `run_suite` runs several methods
(WISE-Merge, WISE-Retrieve, FT-L, GRACE) on the same model, layer and records, for several T: the records
are cut into consecutive chunks of T, each chunk is edited and evaluated from the unedited state (a
rollback in between), and the chunks' metrics are averaged into one row per method and T.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from wise_gui.core.baselines import BASELINES, LayerMethod, TrainSettings
from wise_gui.core.edits import EditRequest
from wise_gui.core.evaluation import Metrics, evaluate, target_perplexity
from wise_gui.core.models import LoadedModel
from wise_gui.core.wise.editor import WiseEditor
from wise_gui.core.wise.settings import WiseSettings, default_layer, merge_variant

WISE_METHODS = ("wise", "wise-retrieve")
METHODS = WISE_METHODS + tuple(BASELINES)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def reset_peak_rss() -> None:
    """Start a new peak-memory measurement (Linux: clear_refs 5), so each method reports its own peak;
    elsewhere the peak stays the process's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


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
    chunk_size: int | None = None  # T: edits made in sequence before each evaluation
    chunks: int = 1  # chunks of T records averaged into this row (n_edits = chunk_size x chunks)
    complete: bool = True  # False: the run was interrupted before all chunks were done
    perplexity: float | None = None  # of the target, clipped at 100 per sample (hallucination set)
    added_state_bytes: float | None = None  # what the method adds to the model (mean over chunks)
    overwrites_weights: bool = False  # the edits change the model's own weight (FT-L)
    tokens_per_second: float | None = None  # greedy generation through the edits
    tokens_per_second_bare: float | None = None  # the same prompts on the unedited model
    inference_overhead: float | None = None  # bare speed / edited speed - 1

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def table(self) -> str:
        def fmt(value, digits=3):
            return "-" if value is None else f"{value:.{digits}f}"

        rows = [
            ("model", self.model), ("layer", str(self.layer)), ("method", self.method),
            ("edits", f"{self.n_edits} (records {self.start}..{self.start + self.n_edits - 1})"),
        ]
        if self.chunks > 1:
            rows.append(("T (edits per chunk)", f"{self.chunk_size}, {self.chunks} chunks averaged"))
        rows += [("Rel", fmt(self.rel)), ("Gen", fmt(self.gen)), ("Loc", fmt(self.loc)),
                 ("generation success", fmt(self.gen_success))]
        if self.portability is not None:
            rows.append(("portability", fmt(self.portability)))
        if self.ood is not None:
            rows.append(("OOD", fmt(self.ood)))
        if self.perplexity is not None:
            rows.append(("target perplexity", fmt(self.perplexity, 2)))
        if self.seconds_per_edit is not None:
            rows.append(("seconds per edit", fmt(self.seconds_per_edit, 2)))
        if self.iterations_per_edit is not None:
            rows.append(("iterations per edit", fmt(self.iterations_per_edit, 1)))
        if self.seconds_per_edit_full_forward is not None:
            rows.append(("seconds per edit, --full-forward", fmt(self.seconds_per_edit_full_forward, 2)))
            rows.append(("speed-up of the cached path", f"{self.speedup_vs_full_forward:.2f}x"))
        rows.append(("peak memory (MB)", f"{self.peak_rss_mb:.0f}"))
        if self.added_state_bytes is not None:
            rows.append(("added state", format_state_size(self)))
        if self.tokens_per_second is not None:
            rows.append(("generation tokens/s (bare)", format_speed(self)))
        if not self.complete:
            rows.append(("note", "interrupted: fewer chunks than planned"))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def format_state_size(result: BenchResult) -> str:
    size = result.added_state_bytes
    if size is None:
        return "-"
    text = f"{size / 2**20:.2f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"
    return f"{text} (overwrites W)" if result.overwrites_weights else text


def format_speed(result: BenchResult) -> str:
    if result.tokens_per_second is None:
        return "-"
    return (f"{result.tokens_per_second:.1f} ({result.tokens_per_second_bare:.1f}, "
            f"{result.inference_overhead:+.1%})")


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


def method_name(editor: WiseEditor | LayerMethod) -> str:
    if isinstance(editor, WiseEditor):
        return "wise-retrieve" if editor.settings.retrieve else "wise"
    return editor.name


def added_state_bytes(editor: WiseEditor | LayerMethod) -> int:
    """Bytes the method adds to the model: WISE's side-memory tensors as the memory file stores them."""
    if isinstance(editor, WiseEditor):
        from wise_gui.core.memory_file import editor_state

        tensors, _ = editor_state(editor)
        return sum(t.numel() * t.element_size() for t in tensors.values())
    return editor.added_state_bytes()


def result_from_metrics(editor: WiseEditor, requests: list[EditRequest], start: int, metrics: Metrics,
                        method: str = "wise") -> BenchResult:
    return BenchResult(
        model=editor.loaded.name, layer=editor.layer_index, n_edits=len(requests), start=start, method=method,
        rel=metrics.rel, gen=metrics.gen, loc=metrics.loc, gen_success=metrics.gen_success,
        portability=metrics.portability, ood=metrics.ood, peak_rss_mb=peak_rss_mb(),
        settings=json.loads(editor.settings.to_json()), per_edit=metrics.per_edit,
    )


@dataclass(frozen=True)
class DatasetProfile:
    """The metrics a dataset calls for besides Rel/Gen/Loc (wise-method.md section 6)."""

    generation: bool = True  # generation success: short answers (ZsRE, CounterFact), not long passages
    perplexity: bool = False  # the hallucination set's metric


_PROFILES = {"hallucination": DatasetProfile(generation=False, perplexity=True),
             "temporal": DatasetProfile(generation=False)}  # its OOD metric comes with the records


def profile_for(dataset_format: str) -> DatasetProfile:
    return _PROFILES.get(dataset_format, DatasetProfile())


def run_benchmark(editor: WiseEditor | LayerMethod, requests: list[EditRequest], start: int = 0,
                  full_forward_edits: int = 0, on_progress: Callable[[int, int, float], None] | None = None,
                  profile: DatasetProfile = DatasetProfile()) -> BenchResult:
    """The paper's protocol: edit all requests in sequence, then evaluate all of them.

    With `full_forward_edits` > 0 (WISE only), the first that many edits are also timed with the full
    forward pass (then rolled back), so one run reports the speed-up of the cached path.
    """
    if isinstance(editor, WiseEditor):
        editor.prepare()  # once per editor, not part of any edit's time
    full_seconds: list[float] = []
    if full_forward_edits > 0:
        snapshot = editor.snapshot()
        cached_settings = editor.settings
        editor.update_settings(cached_settings.replace(full_forward=True))
        full_seconds, _ = apply_sequentially(editor, requests[:full_forward_edits])
        editor.update_settings(cached_settings)
        editor.restore(snapshot)
        reset_peak_rss()  # the full path's activations are not the engine's memory use
    seconds, iterations = apply_sequentially(editor, requests, on_progress)
    metrics = evaluate(editor, requests, generation=profile.generation)
    result = result_from_metrics(editor, requests, start, metrics, method=method_name(editor))
    if profile.perplexity:
        with torch.no_grad():
            values = target_perplexity(editor, [r.prompt for r in requests], [r.target for r in requests])
        result.perplexity = _mean(values)
        for row, value in zip(result.per_edit, values):
            row["perplexity"] = value
    result.seconds_per_edit = _mean(seconds)
    result.iterations_per_edit = _mean(iterations)
    if full_seconds:
        result.seconds_per_edit_full_forward = _mean(full_seconds)
        result.speedup_vs_full_forward = _mean(full_seconds) / _mean(seconds[: len(full_seconds)])
    result.chunk_size = len(requests)
    result.added_state_bytes = added_state_bytes(editor)
    result.overwrites_weights = isinstance(editor, LayerMethod) and editor.overwrites_weights
    result.peak_rss_mb = peak_rss_mb()
    return result


def generation_speed(editor: WiseEditor | LayerMethod, prompts: list[str], max_new_tokens: int = 16,
                     repeats: int = 2) -> tuple[float, float]:
    """Tokens per second of greedy generation through the edits and on the bare model, same prompts."""
    editor.generate(prompts[:1], max_new_tokens=2)  # warm-up: first calls pay for allocations
    tokens, seconds = {True: 0, False: 0}, {True: 0.0, False: 0.0}
    for _ in range(repeats):
        for use_edits in (True, False):  # interleaved, so machine load hits both alike
            started = time.perf_counter()
            # Every row generates exactly max_new_tokens (no early end at EOS), so both sides do the same work.
            editor.generate(prompts, max_new_tokens=max_new_tokens, use_side_memory=use_edits,
                            min_new_tokens=max_new_tokens)
            seconds[use_edits] += time.perf_counter() - started
            tokens[use_edits] += len(prompts) * max_new_tokens
    return tokens[True] / seconds[True], tokens[False] / seconds[False]


_AVERAGED = ("rel", "gen", "loc", "gen_success", "portability", "ood", "perplexity", "seconds_per_edit",
             "iterations_per_edit", "added_state_bytes")


def combine_chunks(chunks: list[BenchResult], complete: bool = True) -> BenchResult:
    """One row for T = the chunks' size: each metric the mean of the chunks' values, per-edit rows kept."""
    def mean_of(name: str) -> float | None:
        return _mean([getattr(c, name) for c in chunks if getattr(c, name) is not None])

    first = chunks[0]
    return dataclasses.replace(
        first, n_edits=sum(c.n_edits for c in chunks), chunks=len(chunks), complete=complete,
        peak_rss_mb=max(c.peak_rss_mb for c in chunks), per_edit=[row for c in chunks for row in c.per_edit],
        **{name: mean_of(name) for name in _AVERAGED},
    )


def chunk_starts(n_records: int, size: int) -> list[int]:
    """Offsets of the complete chunks of `size` records; a shorter remainder is not used."""
    return list(range(0, n_records - size + 1, size))


def build_method(name: str, loaded: LoadedModel, wise_settings: WiseSettings,
                 baseline_settings: dict[str, TrainSettings] | None = None) -> WiseEditor | LayerMethod:
    """A fresh editor for `name`, on the layer WISE uses. `wise` is WISE-Merge and `wise-retrieve`
    WISE-Retrieve, both with the other settings of `wise_settings`."""
    if name in WISE_METHODS:
        retrieve = name == "wise-retrieve"
        return WiseEditor(loaded, wise_settings.replace(retrieve=True) if retrieve else merge_variant(wise_settings))
    config = loaded.model.config
    layer = wise_settings.layer if wise_settings.layer is not None else default_layer(config.model_type,
                                                                                      config.num_hidden_layers)
    method_class, _ = BASELINES[name]
    return method_class(loaded, layer, (baseline_settings or {}).get(name))


SuiteProgress = Callable[[str, int, int, float], None]
"""Called after every edit with a label ("grace T=10 chunk 2/5"), edits done, edits planned, seconds."""


@dataclass
class SuiteOutcome:
    results: list[BenchResult]
    interrupted: bool = False  # Ctrl+C: `results` holds what was measured until then


def run_suite(make_method: Callable[[str], WiseEditor | LayerMethod], methods: list[str],
              requests: list[EditRequest], chunk_sizes: list[int], start: int = 0,
              profile: DatasetProfile = DatasetProfile(), full_forward_edits: int = 0, speed_prompts: int = 4,
              on_progress: SuiteProgress | None = None,
              before_rollback: Callable[[WiseEditor | LayerMethod, BenchResult], None] | None = None) -> SuiteOutcome:
    """Every method on the same records, for every T in `chunk_sizes`; one row per method and T.

    Each method is built fresh by `make_method` and detached after its runs, so the next one finds the
    model's own weights. Each chunk starts from the method's unedited state. `full_forward_edits` times
    the first chunk of a WISE method's first T also by the full forward pass. A KeyboardInterrupt stops
    the run; the rows measured so far (and a partial row of the chunks done for the current T) are kept.
    """
    progress = _Progress(on_progress, len(methods) * sum(len(chunk_starts(len(requests), size)) * size
                                                         for size in chunk_sizes))
    results: list[BenchResult] = []
    chunks: list[BenchResult] = []
    try:
        for name in methods:
            reset_peak_rss()
            method = make_method(name)
            try:
                unedited = method.snapshot()
                for size_index, size in enumerate(chunk_sizes):
                    offsets = chunk_starts(len(requests), size)
                    chunks = []
                    for number, offset in enumerate(offsets, start=1):
                        first_of_method = size_index == 0 and number == 1
                        timed = full_forward_edits if isinstance(method, WiseEditor) and first_of_method else 0
                        report = progress.for_chunk(f"{name} T={size} chunk {number}/{len(offsets)}")
                        try:
                            result = run_benchmark(method, requests[offset:offset + size], start + offset, timed,
                                                   report, profile)
                            if number == 1:
                                _measure_speed(method, result, [r.prompt for r in requests[:speed_prompts]])
                            if before_rollback is not None:
                                before_rollback(method, result)
                        finally:
                            method.restore(unedited)
                        chunks.append(result)
                    results.append(combine_chunks(chunks))
                    chunks = []
            finally:
                method.detach()
    except KeyboardInterrupt:
        if chunks:
            results.append(combine_chunks(chunks, complete=False))
        return SuiteOutcome(results, interrupted=True)
    return SuiteOutcome(results)


class _Progress:
    """Counts the edits of the whole suite for the progress callback."""

    def __init__(self, callback: SuiteProgress | None, total: int):
        self.callback, self.total, self.done = callback, total, 0
        self.started = time.perf_counter()

    def for_chunk(self, label: str) -> Callable[[int, int, float], None]:
        def report(_done: int, _total: int, _elapsed: float) -> None:
            self.done += 1
            if self.callback is not None:
                self.callback(label, self.done, self.total, time.perf_counter() - self.started)
        return report


def _measure_speed(method: WiseEditor | LayerMethod, result: BenchResult, prompts: list[str]) -> None:
    edited, bare = generation_speed(method, prompts)
    result.tokens_per_second, result.tokens_per_second_bare = edited, bare
    result.inference_overhead = bare / edited - 1


def markdown_table(results: list[BenchResult]) -> str:
    """One line per method and T; optional metric columns only where some row has a value."""
    def fmt(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    columns = [("method", lambda r: r.method),
               ("T", lambda r: str(r.chunk_size) + ("" if r.complete else "*")),
               ("chunks", lambda r: str(r.chunks)),
               ("Rel", lambda r: fmt(r.rel)), ("Gen", lambda r: fmt(r.gen)), ("Loc", lambda r: fmt(r.loc))]
    optional = [("gen. success", "gen_success", 3), ("portability", "portability", 3), ("OOD", "ood", 3),
                ("PPL", "perplexity", 2)]
    for title, name, digits in optional:
        if any(getattr(r, name) is not None for r in results):
            columns.append((title, lambda r, name=name, digits=digits: fmt(getattr(r, name), digits)))
    columns += [("s/edit", lambda r: fmt(r.seconds_per_edit, 2)),
                ("peak MB", lambda r: f"{r.peak_rss_mb:.0f}"),
                ("added state", format_state_size),
                ("tok/s (bare, overhead)", format_speed)]
    lines = ["| " + " | ".join(title for title, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r) for _, cell in columns) + " |" for r in results]
    if not all(r.complete for r in results):
        lines.append("\n\\* interrupted: averaged over fewer chunks than planned.")
    return "\n".join(lines)


def write_json(result: BenchResult, path: str | Path) -> None:
    Path(path).write_text(json.dumps(result.to_json(), indent=2))


def write_rows_json(results: list[BenchResult], path: str | Path) -> None:
    """The rows of a suite run as a JSON list (each row has the keys `write_json` writes)."""
    Path(path).write_text(json.dumps([r.to_json() for r in results], indent=2))
