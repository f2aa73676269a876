"""`wise-gui bench`: T sequential edits from datasets, then Rel / Gen / Loc of all T (teacher-forced and
live decoding, raw and chat form), speed and memory; several methods and several T in one run."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from wise_gui.cli.generate_cmd import add_model_arguments, load_from_args


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layer", type=int, default=None, help="decoder layer to edit (default: the model's preset)")
    parser.add_argument("--settings", default=None,
                        help='JSON object overriding WISE settings, e.g. \'{"lr": 1.0, "n_iter": 70}\'')
    parser.add_argument("--reference-settings", action="store_true",
                        help="the paper's LLaMA-2-7B hyperparameters instead of the method's preset")
    parser.add_argument("--preset", dest="method", default=None, metavar="NAME",
                        help="the WISE-engine preset to start from: wise-index (default), wise-retrieve, memoir, wise-merge")


def settings_from_args(args: argparse.Namespace, loaded, name: str | None = None):
    """The settings of WISE-engine method `name` (default: --preset, else the default preset): its preset
    (or the paper's values with its layout), then --settings, then --layer."""
    from wise_gui.core.bench import method_settings
    from wise_gui.core.errors import WiseGuiError
    from wise_gui.core.wise.presets import DEFAULT_PRESET
    from wise_gui.core.wise.settings import SettingsError, WiseSettings, reference_settings

    try:
        settings = method_settings(name or getattr(args, "method", None) or DEFAULT_PRESET)
    except ValueError as exc:
        raise WiseGuiError(str(exc)) from None
    if args.reference_settings:
        settings = reference_settings().replace(method=settings.method)
    if args.settings:
        try:
            changes = json.loads(args.settings)
            if not isinstance(changes, dict):
                raise SettingsError("it must be a JSON object")
            settings = WiseSettings.from_dict({**settings.to_dict(), **changes})
        except (json.JSONDecodeError, SettingsError, TypeError) as exc:
            raise WiseGuiError(f"--settings is not a valid settings object: {exc}") from None
    if args.layer is not None:
        settings = settings.replace(layer=args.layer)
    return settings


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def methods_from_args(args: argparse.Namespace) -> list[str]:
    """--method names, checked before the model loads (default: the default preset)."""
    from wise_gui.core.bench import METHODS
    from wise_gui.core.errors import WiseGuiError
    from wise_gui.core.wise.presets import DEFAULT_PRESET

    if args.method is None:
        return [DEFAULT_PRESET]
    methods = _comma_list(args.method)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods or len(set(methods)) != len(methods):
        raise WiseGuiError(f"--method takes distinct names from {', '.join(METHODS)}; got {args.method!r}.")
    return methods


def _int_list(text: str | None, option: str, low: int, high: int) -> list[int]:
    from wise_gui.core.errors import WiseGuiError

    if text is None:
        return []
    try:
        values = [int(item) for item in _comma_list(text)]
    except ValueError:
        values = []
    if not values or any(not low <= value <= high for value in values):
        raise WiseGuiError(f"{option} takes whole numbers between {low} and {high}; got {text!r}.")
    return values


def forms_from_args(args: argparse.Namespace) -> tuple[str, ...]:
    from wise_gui.core.errors import WiseGuiError

    forms = tuple(_comma_list(args.query_format))
    if not forms or any(f not in ("raw", "chat") for f in forms):
        raise WiseGuiError(f"--query-format takes raw, chat or raw,chat; got {args.query_format!r}.")
    return forms


def baseline_settings_from_args(args: argparse.Namespace) -> dict:
    from wise_gui.core.baselines import BASELINES
    from wise_gui.core.errors import WiseGuiError

    chosen = {}
    options = (("ft-l", "--ft-settings", args.ft_settings), ("grace", "--grace-settings", args.grace_settings))
    for name, flag, value in options:
        settings = BASELINES[name][1]()
        if value:
            try:
                settings = settings.replace(**json.loads(value))
            except (json.JSONDecodeError, ValueError, TypeError) as exc:
                raise WiseGuiError(f"{flag} is not a valid settings object: {exc}") from None
        chosen[name] = settings
    return chosen


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="apply N dataset edits in sequence, then measure Rel/Gen/Loc, speed, memory")
    add_model_arguments(parser)
    parser.add_argument("--layer", type=int, default=None, help="decoder layer to edit (default: the model's preset)")
    parser.add_argument("--settings", default=None,
                        help='JSON object overriding the settings of every WISE-engine method, e.g. \'{"n_iter": 70}\'')
    parser.add_argument("--reference-settings", action="store_true",
                        help="the paper's LLaMA-2-7B hyperparameters (with each method's layout) instead of the presets")
    parser.add_argument("--data", required=True, nargs="+", metavar="FILE",
                        help="ZsRE, CounterFact, hallucination or temporal JSON files, read one after the other")
    parser.add_argument("--limit", type=int, required=True, help="number of records to use (T, without --chunk)")
    parser.add_argument("--start", type=int, default=0, help="first record to use")
    parser.add_argument("--method", default=None, metavar="LIST",
                        help="comma-separated methods on the same layer and records: wise-index, wise-retrieve, memoir, "
                             "wise-merge (or wise), ft-l, grace (default: wise-index)")
    parser.add_argument("--chunk", default=None, metavar="T[,T...]",
                        help="edits per evaluation: the records are cut into chunks of T, each edited from the unedited "
                             "state and evaluated, and the chunks averaged; several T give one row each (default: --limit)")
    parser.add_argument("--eval-at", default=None, metavar="T[,T...]",
                        help="also evaluate the one sequential run after its first T edits (one row each)")
    parser.add_argument("--query-format", default="raw,chat", metavar="FORMS",
                        help="how live decoding asks: raw, chat or raw,chat (default; chat needs a chat template)")
    parser.add_argument("--pool", default=None, metavar="FILE[:START]",
                        help="take the irrelevant samples (loc + answer) from these records instead of the default pool")
    parser.add_argument("--ft-settings", default=None, metavar="JSON",
                        help='FT-L settings overrides, e.g. \'{"lr": 5e-4, "n_iter": 25, "norm_constraint": 5e-4}\'')
    parser.add_argument("--grace-settings", default=None, metavar="JSON",
                        help='GRACE settings overrides, e.g. \'{"eps_init": 1.0, "replacement": "all"}\'')
    parser.add_argument("--full-forward", action="store_true", help="run the whole model in every step (the slow reference path)")
    parser.add_argument("--compare-full-forward", type=int, default=0, metavar="K",
                        help="also time the first K edits of each WISE method with the full forward pass (rolled back), "
                             "to report the speed-up")
    parser.add_argument("--checkpoint", default=None, metavar="FILE",
                        help="save the run's side memory and progress to FILE every 25 edits and before each "
                             "evaluation; started again with the same FILE, a stopped run carries on from there "
                             "(one WISE method, no --chunk)")
    parser.add_argument("--json", default=None, metavar="OUT", help="write the rows (one per method and T) as a JSON list")
    parser.add_argument("--markdown", default=None, metavar="OUT", help="write the rows as a Markdown table")
    parser.add_argument("--export", default=None, metavar="MEMORY_FILE",
                        help="save the side memory after the last edit as a memory file (see wise-gui eval); "
                             "one WISE method, one chunk")
    parser.set_defaults(handler=run)


class ProgressLine:
    """One updating line on stderr: where the run is, and an ETA from the mean time per edit so far."""

    def __call__(self, label: str, done: int, total: int, elapsed: float) -> None:
        eta = elapsed / done * (total - done)
        print(f"\r\033[K  {label}: edit {done}/{total}  {elapsed / done:.1f} s/edit  ETA {_duration(eta)}",
              end="", file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def _pool(spec: str | None) -> list[str] | None:
    from wise_gui.core.datasets import irrelevant_samples

    if spec is None:
        return None
    path, _, start = spec.rpartition(":") if spec.rpartition(":")[2].isdigit() else (spec, "", "0")
    return irrelevant_samples(path, start=int(start or 0))


def run(args: argparse.Namespace) -> int:
    from wise_gui.core.bench import (
        WISE_METHODS,
        build_method,
        chunk_starts,
        markdown_table,
        profile_for,
        run_suite,
        write_rows_json,
    )
    from wise_gui.core.bench_checkpoint import RunCheckpoint
    from wise_gui.core.datasets import load_requests_from, read_dataset
    from wise_gui.core.errors import WiseGuiError

    # A job started in the background by a script begins with SIGINT ignored: take it back, so that
    # `kill -INT` stops a long run and keeps its rows, as Ctrl+C does in a terminal.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    requests = load_requests_from(args.data, start=args.start, limit=args.limit)
    if not requests:
        raise WiseGuiError(f"{', '.join(args.data)} hold no records from {args.start} on.")
    profile = profile_for(read_dataset(args.data[0], limit=1).format)
    methods = methods_from_args(args)
    sizes = _int_list(args.chunk, "--chunk", 1, len(requests)) or [len(requests)]
    eval_at = tuple(_int_list(args.eval_at, "--eval-at", 1, len(requests)))
    if eval_at and sizes != [len(requests)]:
        raise WiseGuiError("--eval-at evaluates one sequential run: use it without --chunk.")
    forms = forms_from_args(args)
    baseline_settings = baseline_settings_from_args(args)
    pool = _pool(args.pool)
    if args.export and (len(methods) != 1 or methods[0] not in WISE_METHODS or sizes != [len(requests)]):
        raise WiseGuiError("--export saves one WISE side memory: use it with one WISE method and no --chunk.")
    if args.checkpoint and (len(methods) != 1 or methods[0] not in WISE_METHODS or sizes != [len(requests)]):
        raise WiseGuiError("--checkpoint holds one sequential WISE run: use it with one WISE method and no --chunk.")
    checkpoint = RunCheckpoint(Path(args.checkpoint)) if args.checkpoint else None
    loaded = load_from_args(args)
    wise = {name: settings_from_args(args, loaded, name) for name in methods if name in WISE_METHODS}
    if args.full_forward:
        wise = {name: s.replace(full_forward=True) for name, s in wise.items()}
    for size in sizes:
        unused = len(requests) - len(chunk_starts(len(requests), size)) * size
        if unused:
            print(f"T={size}: the last {unused} of {len(requests)} records make no full chunk and are not used.",
                  file=sys.stderr)

    def export(editor, _result) -> None:
        from wise_gui.core.memory_file import save_memory_file

        save_memory_file(editor, args.export)
        print(f"\nSide memory saved to {args.export}.", file=sys.stderr)

    measured: list = []

    def keep(row) -> None:
        # Written as soon as measured, so a long run killed outright still leaves its earlier T.
        measured.append(row)
        if args.json:
            write_rows_json(measured, args.json)

    outcome = run_suite(lambda name: build_method(name, loaded, wise.get(name), baseline_settings, pool, args.layer),
                        methods, requests, sizes, start=args.start, profile=profile,
                        full_forward_edits=args.compare_full_forward, on_progress=ProgressLine(),
                        before_rollback=export if args.export else None, eval_at=eval_at, forms=forms, on_row=keep,
                        checkpoint=checkpoint)
    print(file=sys.stderr)
    results = outcome.results
    if outcome.interrupted:
        print(f"Interrupted: writing the {len(results)} row(s) measured so far.", file=sys.stderr)
        if checkpoint is not None and checkpoint.path.exists():
            print(f"Run the same command again to continue from the last checkpoint in {checkpoint.path}.",
                  file=sys.stderr)
    if results and results[-1].resumed_at:
        print(f"Continued from the checkpoint {checkpoint.path} after edit "
              f"{', '.join(map(str, results[-1].resumed_at))}.", file=sys.stderr)
    if len(results) == 1 and results[0].complete:
        print(results[0].table())
    elif results:
        print(markdown_table(results))
    if args.json:
        write_rows_json(results, args.json)
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(results) + "\n")
    return 130 if outcome.interrupted else 0
