"""`wise-gui bench`: T sequential edits from a dataset, then Rel / Gen / Loc of all T, speed and memory;
several methods (WISE-Merge, WISE-Retrieve, FT-L, GRACE) and several T in one run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from wise_gui.cli.generate_cmd import add_model_arguments, load_from_args


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layer", type=int, default=None, help="decoder layer to edit (default: the model's preset)")
    parser.add_argument("--settings", default=None,
                        help='JSON object overriding WISE settings, e.g. \'{"lr": 1.0, "n_iter": 70}\'')
    parser.add_argument("--reference-settings", action="store_true",
                        help="the paper's LLaMA-2-7B hyperparameters instead of the model's preset")


def settings_from_args(args: argparse.Namespace, loaded):
    from wise_gui.core.errors import WiseGuiError
    from wise_gui.core.wise.settings import WiseSettings, preset_for, reference_settings

    settings = reference_settings() if args.reference_settings else preset_for(loaded.model_type, loaded.n_parameters)
    if args.settings:
        try:
            changes = json.loads(args.settings)
            settings = WiseSettings.from_dict({**json.loads(settings.to_json()), **changes})
        except (json.JSONDecodeError, ValueError, TypeError) as exc:
            raise WiseGuiError(f"--settings is not a valid settings object: {exc}") from None
    if args.layer is not None:
        settings = settings.replace(layer=args.layer)
    return settings


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def methods_from_args(args: argparse.Namespace) -> list[str] | None:
    """--method names, checked before the model loads; None without the option."""
    from wise_gui.core.bench import METHODS
    from wise_gui.core.errors import WiseGuiError

    if args.method is None:
        return None
    methods = _comma_list(args.method)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods or len(set(methods)) != len(methods):
        raise WiseGuiError(f"--method takes distinct names from {', '.join(METHODS)}; got {args.method!r}.")
    return methods


def default_methods(settings) -> list[str]:
    """Without --method: the one WISE variant the settings describe (wise-retrieve for the preset)."""
    return ["wise-retrieve" if settings.retrieve else "wise"]


def chunk_sizes_from_args(args: argparse.Namespace, n_records: int) -> list[int]:
    """--chunk T values; without it one chunk of all records (the paper's protocol with T = --limit)."""
    from wise_gui.core.errors import WiseGuiError

    if args.chunk is None:
        return [n_records]
    try:
        sizes = [int(item) for item in _comma_list(args.chunk)]
    except ValueError:
        sizes = []
    if not sizes or any(not 0 < size <= n_records for size in sizes):
        raise WiseGuiError(f"--chunk takes T values between 1 and the {n_records} records read; got {args.chunk!r}.")
    return sizes


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
    add_settings_arguments(parser)
    parser.add_argument("--data", required=True, help="ZsRE, CounterFact, hallucination or temporal JSON file")
    parser.add_argument("--limit", type=int, required=True, help="number of records to use (T, without --chunk)")
    parser.add_argument("--start", type=int, default=0, help="first record to use")
    parser.add_argument("--method", default=None, metavar="LIST",
                        help="comma-separated methods on the same layer and records: wise (WISE-Merge), wise-retrieve, "
                             "ft-l, grace (default: wise-retrieve, or wise when the settings say retrieve=false)")
    parser.add_argument("--chunk", default=None, metavar="T[,T...]",
                        help="edits per evaluation: the records are cut into chunks of T, each edited from the unedited "
                             "state and evaluated, and the chunks averaged; several T give one row each (default: --limit)")
    parser.add_argument("--ft-settings", default=None, metavar="JSON",
                        help='FT-L settings overrides, e.g. \'{"lr": 5e-4, "n_iter": 25, "norm_constraint": 5e-4}\'')
    parser.add_argument("--grace-settings", default=None, metavar="JSON",
                        help='GRACE settings overrides, e.g. \'{"eps_init": 1.0, "replacement": "all"}\'')
    parser.add_argument("--full-forward", action="store_true", help="run the whole model in every step (the slow reference path)")
    parser.add_argument("--compare-full-forward", type=int, default=0, metavar="K",
                        help="also time the first K edits of each WISE method with the full forward pass (rolled back), "
                             "to report the speed-up")
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


def run(args: argparse.Namespace) -> int:
    from wise_gui.core.bench import build_method, chunk_starts, markdown_table, profile_for, run_suite, write_rows_json
    from wise_gui.core.datasets import load_requests, read_dataset
    from wise_gui.core.errors import WiseGuiError

    requests = load_requests(args.data, start=args.start, limit=args.limit)
    if not requests:
        raise WiseGuiError(f"{args.data} has no records from {args.start} on.")
    profile = profile_for(read_dataset(args.data, start=args.start, limit=1).format)
    methods = methods_from_args(args)
    sizes = chunk_sizes_from_args(args, len(requests))
    baseline_settings = baseline_settings_from_args(args)
    loaded = load_from_args(args)
    settings = settings_from_args(args, loaded)
    if args.full_forward:
        settings = settings.replace(full_forward=True)
    methods = methods or default_methods(settings)
    if args.export and (len(methods) != 1 or methods[0] not in ("wise", "wise-retrieve") or sizes != [len(requests)]):
        raise WiseGuiError("--export saves one WISE side memory: use it with one WISE method and no --chunk.")
    for size in sizes:
        unused = len(requests) - len(chunk_starts(len(requests), size)) * size
        if unused:
            print(f"T={size}: the last {unused} of {len(requests)} records make no full chunk and are not used.",
                  file=sys.stderr)

    def export(editor, _result) -> None:
        from wise_gui.core.memory_file import save_memory_file

        save_memory_file(editor, args.export)
        print(f"\nSide memory saved to {args.export}.", file=sys.stderr)

    outcome = run_suite(lambda name: build_method(name, loaded, settings, baseline_settings), methods, requests, sizes,
                        start=args.start, profile=profile, full_forward_edits=args.compare_full_forward,
                        on_progress=ProgressLine(), before_rollback=export if args.export else None)
    print(file=sys.stderr)
    results = outcome.results
    if outcome.interrupted:
        print(f"Interrupted: writing the {len(results)} row(s) measured so far.", file=sys.stderr)
    if len(results) == 1 and results[0].complete:
        print(results[0].table())
    elif results:
        print(markdown_table(results))
    if args.json:
        write_rows_json(results, args.json)
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(results) + "\n")
    return 130 if outcome.interrupted else 0
