"""The benchmark runner behind `wise-gui bench` and `wise-gui eval`: T sequential edits, then evaluate all T.

`run_benchmark` is one run of the paper's protocol for one method; with `eval_at` the same sequential run
is also evaluated after its first T edits for each T given (the state after edit T of a longer run is
the state a run of T edits ends in). `run_suite` runs several methods on the same model, layer and
records, for several T: the records are cut into consecutive chunks of T, each chunk is edited and
evaluated from the unedited state, and the chunks' metrics are averaged into one row per method and T.

Edits go through each method's `apply_edit`, for WISE the same per-edit generator the window and
`wise-gui apply` drive, so the benchmark measures what they do.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from wise_gui.core.baselines import BASELINES, LayerMethod, TrainSettings
from wise_gui.core.edits import EditRequest
from wise_gui.core.evaluation import Scores, evaluate, mean_scores
from wise_gui.core.models import LoadedModel
from wise_gui.core.tokens import QueryForm
from wise_gui.core.wise.editor import WiseEditor
from wise_gui.core.wise.presets import PRESETS, method_label, preset
from wise_gui.core.wise.settings import WiseSettings, default_layer

if TYPE_CHECKING:
    from wise_gui.core.bench_checkpoint import RunCheckpoint

# "wise" is WISE-Merge, the name the first benchmarks used.
WISE_METHODS = ("wise", *PRESETS)
METHODS = WISE_METHODS + tuple(BASELINES)
Method = WiseEditor | LayerMethod


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
    scores: Scores = field(default_factory=Scores)
    by_source: dict[str, Scores] = field(default_factory=dict)  # the same, per data file of the records
    # The same, apart for edits whose subject the run also edits to another target (SUBJECT_GROUPS).
    by_subject: dict[str, Scores] = field(default_factory=dict)
    reedited_subject_edits: int = 0  # edits in the second group
    seconds_per_edit: float | None = None
    seconds_per_edit_full_forward: float | None = None
    speedup_vs_full_forward: float | None = None  # on the same edits, timed both ways
    iterations_per_edit: float | None = None
    edit_seconds: list[float] = field(default_factory=list)  # each edit's time, in order (flatness in T)
    peak_rss_mb: float = 0.0
    settings: dict = field(default_factory=dict)
    per_edit: list[dict] = field(default_factory=list)
    chunk_size: int | None = None  # T: edits made in sequence before each evaluation
    chunks: int = 1  # chunks of T records averaged into this row (n_edits = chunk_size x chunks)
    complete: bool = True  # False: the run was interrupted before all chunks were done
    added_state_bytes: float | None = None  # what the method adds to the model (mean over chunks)
    overwrites_weights: bool = False  # the edits change the model's own weight (FT-L)
    tokens_per_second: float | None = None  # greedy generation through the edits
    tokens_per_second_bare: float | None = None  # the same prompts on the unedited model
    inference_overhead: float | None = None  # bare speed / edited speed - 1
    run_seconds: float | None = None  # wall time from the first edit to the end of this row's evaluation
    resumed_at: list[int] = field(default_factory=list)  # edits done when a stopped run was continued

    @property
    def rel(self) -> float | None:
        return self.scores.rel

    @property
    def gen(self) -> float | None:
        return self.scores.gen

    @property
    def loc(self) -> float | None:
        return self.scores.loc

    @property
    def gen_success(self) -> float | None:
        return self.scores.gen_success

    def to_json(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("scores", "by_source", "by_subject")}
        values.update(self.scores.to_dict())
        values["by_source"] = {name: scores.to_dict() for name, scores in self.by_source.items()}
        values["by_subject"] = {name: scores.to_dict() for name, scores in self.by_subject.items()}
        return values

    @classmethod
    def from_json(cls, values: dict) -> BenchResult:
        """The inverse of `to_json`."""
        plain = {f.name: values[f.name] for f in dataclasses.fields(cls)
                 if f.name in values and f.name not in ("scores", "by_source", "by_subject")}
        return cls(**plain, scores=Scores.from_dict(values),
                   by_source={name: Scores.from_dict(v) for name, v in values.get("by_source", {}).items()},
                   by_subject={name: Scores.from_dict(v) for name, v in values.get("by_subject", {}).items()})

    def table(self) -> str:
        def fmt(value, digits=3):
            return "-" if value is None else f"{value:.{digits}f}"

        s = self.scores
        rows = [
            ("model", self.model), ("layer", str(self.layer)), ("method", self.method),
            ("edits", f"{self.n_edits} (records {self.start}..{self.start + self.n_edits - 1})"),
        ]
        if self.chunks > 1:
            rows.append(("T (edits per chunk)", f"{self.chunk_size}, {self.chunks} chunks averaged"))
        rows += [("Rel (teacher-forced)", fmt(s.rel)), ("Gen (teacher-forced)", fmt(s.gen)),
                 ("Loc (teacher-forced)", fmt(s.loc))]
        for form, live in s.live.items():
            rows.append((f"{form}: target generated (prompt / paraphrase)", f"{fmt(live.prompt)} / {fmt(live.paraphrase)}"))
            rows.append((f"{form}: unrelated answer unchanged", fmt(live.locality)))
            rows.append((f"{form}: prompt to its own memory / unrelated to a side memory",
                         f"{fmt(live.routed_own)} / {fmt(live.unrelated_to_side)}"))
        for name, scores in self.by_source.items():
            rows.append((f"Loc of records from {name}", fmt(scores.loc)))
        for name, scores in self.by_subject.items():
            count = self.reedited_subject_edits if name == SUBJECT_GROUPS[1] else self.n_edits - self.reedited_subject_edits
            rows.append((f"Rel / Gen / Loc, {name} ({count})", f"{fmt(scores.rel)} / "
                         f"{fmt(scores.gen)} / {fmt(scores.loc)}"))
        for label, value in (("portability", s.portability), ("OOD", s.ood)):
            if value is not None:
                rows.append((label, fmt(value)))
        if s.perplexity is not None:
            rows.append(("target perplexity", fmt(s.perplexity, 2)))
        if self.seconds_per_edit is not None:
            rows.append(("seconds per edit", fmt(self.seconds_per_edit, 2)))
        flat = flatness(self.edit_seconds)
        if flat is not None:
            rows.append(("last 10% of edits vs first 10% (time)", f"{flat:.2f}x"))
        if self.iterations_per_edit is not None:
            rows.append(("iterations per edit", fmt(self.iterations_per_edit, 1)))
        if self.run_seconds is not None:
            resumed = f", continued after edit {', '.join(map(str, self.resumed_at))}" if self.resumed_at else ""
            hours, minutes = divmod(round(self.run_seconds / 60), 60)
            rows.append(("whole run (edits and evaluations)", f"{hours} h {minutes:02d} min{resumed}"))
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


def flatness(seconds: list[float]) -> float | None:
    """Mean time of the last tenth of the edits over that of the first tenth (10 edits at least)."""
    if len(seconds) < 20:
        return None
    tenth = len(seconds) // 10
    return (sum(seconds[-tenth:]) / tenth) / (sum(seconds[:tenth]) / tenth)


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


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def method_name(method: Method) -> str:
    if isinstance(method, WiseEditor):
        return method_label(method.settings)
    return method.name


def added_state_bytes(method: Method) -> int:
    """Bytes the method adds to the model: WISE's side-memory tensors as the memory file stores them."""
    if isinstance(method, WiseEditor):
        return method.state_dict().nbytes()
    return method.added_state_bytes()


@dataclass(frozen=True)
class DatasetProfile:
    """The metrics a dataset calls for besides Rel/Gen/Loc (wise-method.md section 6)."""

    generation: bool = True  # live decoding: short answers (ZsRE, CounterFact), not long passages
    perplexity: bool = False  # the hallucination set's metric


_PROFILES = {"hallucination": DatasetProfile(generation=False, perplexity=True),
             "temporal": DatasetProfile(generation=False)}  # its OOD metric comes with the records


def profile_for(dataset_format: str) -> DatasetProfile:
    return _PROFILES.get(dataset_format, DatasetProfile())


SUBJECT_GROUPS = ("subject edited once", "subject also edited to another target")


def reedited_subjects(requests: list[EditRequest]) -> list[bool]:
    """For each request, whether another request of the list edits the same subject to another target.

    ZsRE's edit set asks many facts several times in other words, each time with its own new target
    (the 6 records 14..19 all ask who made USS Leedstown): a paraphrase of one of them is as close to
    its siblings' prompts as to its own, so no router can tell which target it should get.
    """
    targets: dict[str, set[str]] = {}
    for request in requests:
        if request.subject.strip():
            targets.setdefault(request.subject.strip().casefold(), set()).add(request.target.strip().casefold())
    return [len(targets.get(r.subject.strip().casefold(), ())) > 1 for r in requests]


def split_by_subject(requests: list[EditRequest], scores: list[Scores]) -> dict[str, Scores]:
    """Mean scores of the edits whose subject is edited once, and of those whose subject is also edited
    to another target; empty when either group is."""
    reedited = reedited_subjects(requests)
    groups = {name: [s for s, again in zip(scores, reedited) if again == (name == SUBJECT_GROUPS[1])]
              for name in SUBJECT_GROUPS}
    return {name: mean_scores(group) for name, group in groups.items()} if all(groups.values()) else {}


def _source_file(request: EditRequest) -> str:
    return request.source.rsplit("#", 1)[0] if "#" in request.source else ""


def log_positions(method: Method, requests: list[EditRequest]) -> list[int | None]:
    """Where each request is in the method's edit log: edit i for a run's own requests in order; else
    the last edit of the same prompt and target (`eval --start` on a part of a memory's edits); None
    when the memory does not hold it."""
    pairs = [(r.prompt, r.target) for r in requests]
    log = getattr(method, "edit_log", None)
    if log is None or [tuple(edit) for edit in log[:len(pairs)]] == pairs:
        return list(range(len(requests)))
    last = {tuple(edit): i for i, edit in enumerate(log)}
    return [last.get(pair) for pair in pairs]


def evaluation_row(method: Method, requests: list[EditRequest], start: int, profile: DatasetProfile = DatasetProfile(),
                   forms: tuple[QueryForm, ...] | None = None, name: str | None = None) -> BenchResult:
    """Evaluates `requests` into a benchmark row; each is looked up in the method's edit log to check that
    it reaches its own memory (a bench run's request i is edit i)."""
    evaluation = evaluate(method, requests, forms=forms, generation=profile.generation, perplexity=profile.perplexity,
                          edit_indices=log_positions(method, requests))
    per_source: dict[str, list[Scores]] = {}
    for request, edit in zip(requests, evaluation.edits):
        per_source.setdefault(_source_file(request), []).append(edit.scores)
    by_source = {name: mean_scores(scores) for name, scores in per_source.items() if name} if len(per_source) > 1 else {}
    by_subject = split_by_subject(requests, [edit.scores for edit in evaluation.edits])
    settings = json.loads(method.settings.to_json())
    return BenchResult(
        model=method.loaded.name, layer=method.layer_index, n_edits=len(requests), start=start,
        method=name or method_name(method), scores=evaluation.mean, by_source=by_source, peak_rss_mb=peak_rss_mb(),
        by_subject=by_subject, reedited_subject_edits=sum(reedited_subjects(requests)) if by_subject else 0,
        settings=settings, per_edit=[edit.to_dict() for edit in evaluation.edits], chunk_size=len(requests))


class InterruptedRun(KeyboardInterrupt):
    """Ctrl+C during a sequential run, carrying the rows it had already evaluated (its earlier `eval_at`)."""

    def __init__(self, rows: list[BenchResult]):
        super().__init__()
        self.rows = rows


@dataclass
class RunProgress:
    """How far one sequential run has come: what a stopped run continues from (see bench_checkpoint)."""

    done: int = 0  # edits applied
    seconds: list[float] = field(default_factory=list)  # each edit's time
    iterations: list[int] = field(default_factory=list)
    full_seconds: list[float] = field(default_factory=list)  # the --compare-full-forward timings
    rows: list[BenchResult] = field(default_factory=list)  # the earlier T, evaluated
    elapsed: float = 0.0  # wall seconds of edits and evaluations so far, over every stretch of the run
    peak_rss_mb: float = 0.0  # the highest peak of the processes that ran it
    resumed_at: list[int] = field(default_factory=list)

    def to_json(self) -> dict:
        values = dataclasses.asdict(self)
        values["rows"] = [row.to_json() for row in self.rows]
        return values

    @classmethod
    def from_json(cls, values: dict) -> RunProgress:
        return cls(**{**values, "rows": [BenchResult.from_json(row) for row in values["rows"]]})


def run_benchmark(method: Method, requests: list[EditRequest], start: int = 0, full_forward_edits: int = 0,
                  on_progress: Callable[[int, int, float], None] | None = None,
                  profile: DatasetProfile = DatasetProfile(), eval_at: tuple[int, ...] = (),
                  forms: tuple[QueryForm, ...] | None = None, speed_prompts: int = 0,
                  name: str | None = None, on_row: Callable[[BenchResult], None] | None = None,
                  checkpoint: RunCheckpoint | None = None) -> list[BenchResult]:
    """The paper's protocol: edit all requests in sequence, then evaluate all of them; one row per T in
    `eval_at` (evaluated when the run reaches it) and one for all requests, in that order.

    With `full_forward_edits` > 0 (WISE only), the first that many edits are also timed with the full
    forward pass (then rolled back), so one run reports the speed-up of the cached path. `on_row` gets
    each row as soon as it is measured (a long run's earlier T survive a crash). With `checkpoint` (WISE
    only) the run saves its state and progress every few edits and before each evaluation and, when the
    checkpoint holds this same run, continues from there instead of starting again.
    """
    points = sorted({t for t in eval_at if 0 < t < len(requests)} | {len(requests)})
    progress = None
    if checkpoint is not None:
        progress = checkpoint.resume(method, requests, start, points, forms)
    if isinstance(method, WiseEditor):
        method.prepare()  # once per editor, not part of any edit's time (a resumed state carries it)
    if progress is None:
        progress = RunProgress(full_seconds=_full_forward_seconds(method, requests[:full_forward_edits]))
    elif on_row is not None:
        for row in progress.rows:
            on_row(row)
    started = time.perf_counter() - progress.elapsed

    def save() -> None:
        progress.elapsed = time.perf_counter() - started
        progress.peak_rss_mb = max(progress.peak_rss_mb, peak_rss_mb())
        checkpoint.save(method, progress)

    def evaluate(done: int) -> None:
        progress.rows.append(_evaluated_row(method, requests[:done], start, profile, forms, name, progress,
                                            speed_prompts))
        progress.rows[-1].run_seconds = time.perf_counter() - started
        if on_row is not None:
            on_row(progress.rows[-1])
        if checkpoint is not None:
            save()  # with its row: continued, the run does not evaluate this T again

    try:
        if progress.done in points and all(row.n_edits != progress.done for row in progress.rows):
            evaluate(progress.done)  # stopped during this evaluation: its edits were saved before it
        for done in range(progress.done + 1, len(requests) + 1):
            outcome = method.apply_edit(requests[done - 1])
            progress.done = done
            progress.seconds.append(outcome.seconds)
            progress.iterations.append(outcome.iterations)
            if checkpoint is not None and (done % checkpoint.every == 0 or done in points):
                save()  # before an evaluation (the last one of a T = 1000 run takes half an hour)
            if on_progress is not None:
                on_progress(done, len(requests), time.perf_counter() - started)
            if done in points:
                evaluate(done)
    except KeyboardInterrupt:
        raise InterruptedRun(progress.rows) from None
    return progress.rows


def _full_forward_seconds(method: Method, requests: list[EditRequest]) -> list[float]:
    """Each edit's time on the full forward pass (WISE only), from the current state, then rolled back."""
    if not requests or not isinstance(method, WiseEditor):
        return []
    snapshot = method.snapshot()
    cached_settings = method.settings
    method.update_settings(cached_settings.replace(full_forward=True))
    seconds = [method.apply_edit(r).seconds for r in requests]
    method.update_settings(cached_settings)
    method.restore(snapshot)
    reset_peak_rss()  # the full path's activations are not the engine's memory use
    return seconds


def _evaluated_row(method: Method, requests: list[EditRequest], start: int, profile: DatasetProfile,
                   forms: tuple[QueryForm, ...] | None, name: str | None, progress: RunProgress,
                   speed_prompts: int) -> BenchResult:
    row = evaluation_row(method, requests, start, profile, forms, name)
    seconds, full_seconds = progress.seconds, progress.full_seconds
    row.seconds_per_edit, row.iterations_per_edit = _mean(seconds), _mean(progress.iterations)
    row.edit_seconds = list(seconds)
    if full_seconds:
        row.seconds_per_edit_full_forward = _mean(full_seconds)
        row.speedup_vs_full_forward = _mean(full_seconds) / _mean(seconds[: len(full_seconds)])
    row.added_state_bytes = added_state_bytes(method)
    row.overwrites_weights = isinstance(method, LayerMethod) and method.overwrites_weights
    if speed_prompts:
        measure_speed(method, row, [r.prompt for r in requests[:speed_prompts]])
    row.peak_rss_mb = max(peak_rss_mb(), progress.peak_rss_mb)
    row.resumed_at = list(progress.resumed_at)
    return row


def generation_speed(method: Method, prompts: list[str], max_new_tokens: int = 16,
                     repeats: int = 2) -> tuple[float, float]:
    """Tokens per second of greedy generation through the edits and on the bare model, same prompts."""
    method.generate(prompts[:1], max_new_tokens=2)  # warm-up: first calls pay for allocations
    tokens, seconds = {True: 0, False: 0}, {True: 0.0, False: 0.0}
    for _ in range(repeats):
        for use_edits in (True, False):  # interleaved, so machine load hits both alike
            started = time.perf_counter()
            # Every row generates exactly max_new_tokens (no early end), so both sides do the same work.
            method.generate(prompts, max_new_tokens=max_new_tokens, use_side_memory=use_edits,
                            min_new_tokens=max_new_tokens, first_sentence_only=False)
            seconds[use_edits] += time.perf_counter() - started
            tokens[use_edits] += len(prompts) * max_new_tokens
    return tokens[True] / seconds[True], tokens[False] / seconds[False]


def measure_speed(method: Method, result: BenchResult, prompts: list[str]) -> None:
    edited, bare = generation_speed(method, prompts)
    result.tokens_per_second, result.tokens_per_second_bare = edited, bare
    result.inference_overhead = bare / edited - 1


_AVERAGED = ("seconds_per_edit", "iterations_per_edit", "added_state_bytes")


def combine_chunks(chunks: list[BenchResult], complete: bool = True) -> BenchResult:
    """One row for T = the chunks' size: each metric the mean of the chunks' values, per-edit rows kept."""
    def mean_of(name: str) -> float | None:
        return _mean([getattr(c, name) for c in chunks if getattr(c, name) is not None])

    def mean_groups(name: str) -> dict[str, Scores]:  # a group's mean over the chunks that have it
        groups = [getattr(c, name) for c in chunks]
        return {key: mean_scores([g[key] for g in groups if key in g]) for key in dict.fromkeys(k for g in groups for k in g)}

    first = chunks[0]
    return dataclasses.replace(
        first, n_edits=sum(c.n_edits for c in chunks), chunks=len(chunks), complete=complete,
        scores=mean_scores([c.scores for c in chunks]), by_source=mean_groups("by_source"),
        by_subject=mean_groups("by_subject"), reedited_subject_edits=sum(c.reedited_subject_edits for c in chunks),
        peak_rss_mb=max(c.peak_rss_mb for c in chunks), per_edit=[row for c in chunks for row in c.per_edit],
        edit_seconds=[s for c in chunks for s in c.edit_seconds],
        run_seconds=sum(c.run_seconds for c in chunks) if all(c.run_seconds is not None for c in chunks) else None,
        **{name: mean_of(name) for name in _AVERAGED},
    )


def chunk_starts(n_records: int, size: int) -> list[int]:
    """Offsets of the complete chunks of `size` records; a shorter remainder is not used."""
    return list(range(0, n_records - size + 1, size))


def method_settings(name: str) -> WiseSettings:
    """The preset of a WISE-engine method name (`wise` is WISE-Merge, the name the first benchmarks used)."""
    return preset("wise-merge" if name == "wise" else name)


def build_method(name: str, loaded: LoadedModel, wise_settings: WiseSettings | None = None,
                 baseline_settings: dict[str, TrainSettings] | None = None,
                 irrelevant_pool: list[str] | None = None, layer: int | None = None) -> Method:
    """A fresh method `name`: a WISE-engine method with `wise_settings` (default: its preset), or a
    baseline on `layer` (default: the layer those settings, or WISE's default, edit)."""
    if name in WISE_METHODS:
        return WiseEditor(loaded, wise_settings or method_settings(name), irrelevant_pool=irrelevant_pool)
    config = loaded.model.config
    if layer is None:
        layer = wise_settings.layer if wise_settings is not None and wise_settings.layer is not None else \
            default_layer(config.model_type, config.num_hidden_layers)
    method_class, _ = BASELINES[name]
    return method_class(loaded, layer, (baseline_settings or {}).get(name))


SuiteProgress = Callable[[str, int, int, float], None]
"""Called after every edit with a label ("grace T=10 chunk 2/5"), edits done, edits planned, seconds."""


@dataclass
class SuiteOutcome:
    results: list[BenchResult]
    interrupted: bool = False  # Ctrl+C: `results` holds what was measured until then


def run_suite(make_method: Callable[[str], Method], methods: list[str], requests: list[EditRequest],
              chunk_sizes: list[int], start: int = 0, profile: DatasetProfile = DatasetProfile(),
              full_forward_edits: int = 0, speed_prompts: int = 4, on_progress: SuiteProgress | None = None,
              before_rollback: Callable[[Method, BenchResult], None] | None = None, eval_at: tuple[int, ...] = (),
              forms: tuple[QueryForm, ...] | None = None,
              on_row: Callable[[BenchResult], None] | None = None,
              checkpoint: RunCheckpoint | None = None) -> SuiteOutcome:
    """Every method on the same records, for every T in `chunk_sizes`; one row per method and T (and per
    T of `eval_at`, which needs a single chunk of all records).

    Each method is built fresh by `make_method` and detached after its runs, so the next one finds the
    model's own weights. Each chunk starts from the method's unedited state. `full_forward_edits` times
    the first chunk of a WISE method's first T also by the full forward pass. A KeyboardInterrupt stops
    the run; the rows measured so far (and a partial row of the chunks done for the current T) are kept.
    `on_row` gets every row of a single-chunk run (the earlier T of `eval_at` included) when it is measured.
    `checkpoint` (one WISE method, one chunk) lets a stopped run continue (see `run_benchmark`).
    """
    if checkpoint is not None and (len(methods) != 1 or chunk_sizes != [len(requests)]):
        raise ValueError("a checkpoint holds one sequential run: one method, one chunk")
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
                            rows = run_benchmark(method, requests[offset:offset + size], start + offset, timed, report,
                                                 profile, eval_at if len(offsets) == 1 else (), forms,
                                                 speed_prompts if number == 1 else 0, name,
                                                 on_row if len(offsets) == 1 else None, checkpoint)
                            if before_rollback is not None:
                                before_rollback(method, rows[-1])
                        finally:
                            method.restore(unedited)
                        results.extend(rows[:-1])  # the earlier T of a single chunk
                        chunks.append(rows[-1])
                    results.append(combine_chunks(chunks))
                    chunks = []
            finally:
                method.detach()
    except KeyboardInterrupt as interrupt:
        if isinstance(interrupt, InterruptedRun):
            results.extend(interrupt.rows)  # the earlier T of the sequential run in progress
        if chunks:
            results.append(combine_chunks(chunks, complete=False))
        return SuiteOutcome(results, interrupted=True)
    return SuiteOutcome(results)


class _Progress:
    """Counts the edits of the whole suite for the progress callback."""

    def __init__(self, callback: SuiteProgress | None, total: int):
        self.callback, self.total, self.done, self.elapsed = callback, total, 0, 0.0

    def for_chunk(self, label: str) -> Callable[[int, int, float], None]:
        done_before, elapsed_before = self.done, self.elapsed

        def report(done: int, _total: int, elapsed: float) -> None:
            # The run's own count and time, so a run continued from a checkpoint goes on from its edit.
            self.done, self.elapsed = done_before + done, elapsed_before + elapsed
            if self.callback is not None:
                self.callback(label, self.done, self.total, self.elapsed)
        return report


def markdown_table(results: list[BenchResult]) -> str:
    """One line per method and T; optional metric columns only where some row has a value."""
    def fmt(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    columns = [("method", lambda r: r.method),
               ("T", lambda r: str(r.chunk_size) + ("" if r.complete else "*")),
               ("chunks", lambda r: str(r.chunks)),
               ("Rel", lambda r: fmt(r.rel)), ("Gen", lambda r: fmt(r.gen)), ("Loc", lambda r: fmt(r.loc))]
    optional = [("gen. success", lambda s: s.gen_success),
                ("chat prompt", lambda s: s.live["chat"].prompt if "chat" in s.live else None),
                ("chat paraphrase", lambda s: s.live["chat"].paraphrase if "chat" in s.live else None),
                ("chat Loc (answers)", lambda s: s.live["chat"].locality if "chat" in s.live else None),
                ("portability", lambda s: s.portability), ("OOD", lambda s: s.ood)]
    for title, getter in optional:
        if any(getter(r.scores) is not None for r in results):
            columns.append((title, lambda r, getter=getter: fmt(getter(r.scores))))
    if any(r.scores.perplexity is not None for r in results):
        columns.append(("PPL", lambda r: fmt(r.scores.perplexity, 2)))
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


def write_rows_json(results: list[BenchResult], path: str | Path) -> None:
    """The rows of a run as a JSON list (each row has the keys `to_json` writes)."""
    Path(path).write_text(json.dumps([r.to_json() for r in results], indent=2))
