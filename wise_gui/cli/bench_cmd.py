"""`wise-gui bench`: T sequential edits from a dataset, then Rel / Gen / Loc of all T, speed and memory."""

from __future__ import annotations

import argparse
import json
import sys

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


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="apply N dataset edits in sequence, then measure Rel/Gen/Loc, speed, memory")
    add_model_arguments(parser)
    add_settings_arguments(parser)
    parser.add_argument("--data", required=True, help="ZsRE or CounterFact JSON file")
    parser.add_argument("--limit", type=int, required=True, help="number of sequential edits (T)")
    parser.add_argument("--start", type=int, default=0, help="first record to use")
    parser.add_argument("--full-forward", action="store_true", help="run the whole model in every step (the slow reference path)")
    parser.add_argument("--compare-full-forward", type=int, default=0, metavar="K",
                        help="also time the first K edits with the full forward pass (rolled back), to report the speed-up")
    parser.add_argument("--json", default=None, metavar="OUT", help="write the result as JSON")
    parser.add_argument("--export", default=None, metavar="MEMORY_FILE",
                        help="save the side memory after the last edit as a memory file (see wise-gui eval)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from wise_gui.core.bench import run_benchmark, write_json
    from wise_gui.core.datasets import load_requests
    from wise_gui.core.wise.editor import WiseEditor

    requests = load_requests(args.data, start=args.start, limit=args.limit)
    loaded = load_from_args(args)
    settings = settings_from_args(args, loaded)
    if args.full_forward:
        settings = settings.replace(full_forward=True)
    editor = WiseEditor(loaded, settings)

    def progress(done: int, total: int, elapsed: float) -> None:
        eta = elapsed / done * (total - done)
        print(f"\r  edit {done}/{total}  {elapsed / done:.1f} s/edit  ETA {eta:.0f} s", end="", file=sys.stderr, flush=True)

    result = run_benchmark(editor, requests, start=args.start, full_forward_edits=args.compare_full_forward,
                           on_progress=progress)
    print(file=sys.stderr)
    print(result.table())
    if args.json:
        write_json(result, args.json)
    if args.export:
        from wise_gui.core.memory_file import save_memory_file

        save_memory_file(editor, args.export)
        print(f"Side memory saved to {args.export}.", file=sys.stderr)
    return 0
