"""`wise-gui export` and `wise-gui eval`: a workspace's side memory as a standalone file, and measuring one.

A checkpoint is already a complete memory file (wise_gui.core.memory_file), so export verifies the latest
one and copies it: no model is needed.
"""

from __future__ import annotations

import argparse
import shutil

from wise_gui.cli.generate_cmd import add_model_arguments, load_from_args


def register(subparsers) -> None:
    parser = subparsers.add_parser("export", help="write a workspace's side memory (after its last edit) to a file")
    parser.add_argument("--db", default=argparse.SUPPRESS, help="workspace database (default: the user data folder's)")
    parser.add_argument("--out", required=True, metavar="MEMORY_FILE", help="the .safetensors file to write")
    parser.set_defaults(handler=run_export)

    parser = subparsers.add_parser("eval", help="measure Rel/Gen/Loc of a memory file on dataset edits (as bench does)")
    parser.add_argument("--memory", required=True, metavar="MEMORY_FILE", help="a file from export or bench --export")
    add_model_arguments(parser)
    parser.set_defaults(model=None)  # default: the model and dtype the file was made with
    parser.add_argument("--data", required=True, help="the dataset file of the edits to evaluate")
    parser.add_argument("--limit", type=int, required=True, help="number of records to evaluate")
    parser.add_argument("--start", type=int, default=0, help="first record to use")
    parser.add_argument("--json", default=None, metavar="OUT", help="write the result as JSON (the keys of bench)")
    parser.set_defaults(handler=run_eval)


def run_export(args: argparse.Namespace) -> int:
    from wise_gui.core.errors import WiseGuiError
    from wise_gui.core.files import write_atomic
    from wise_gui.core.memory_file import read_memory_file
    from wise_gui.store import StoreError, open_store

    with open_store(getattr(args, "db", None), create=False) as store:
        checkpoint = store.latest_checkpoint()
    if checkpoint is None:
        raise StoreError(f"No edit is applied in {store.path}: there is no side memory to export.")
    memory = read_memory_file(checkpoint.path)  # refuses a damaged checkpoint rather than copying it
    try:
        write_atomic(args.out, lambda temp: shutil.copyfile(checkpoint.path, temp))
    except OSError as exc:
        raise WiseGuiError(f"Cannot write {args.out}: {exc.strerror or exc}") from None
    size_kib = checkpoint.path.stat().st_size / 1024
    print(f"Exported the side memory after {memory.total_edits} edits ({memory.identity.model_name}, "
          f"{memory.identity.module_name}, {size_kib:.0f} KiB) to {args.out}.")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from wise_gui.core.bench import result_from_metrics, write_json
    from wise_gui.core.datasets import load_requests
    from wise_gui.core.evaluation import evaluate
    from wise_gui.core.memory_file import read_memory_file

    # The file and the data are checked before the (slow) model load.
    memory = read_memory_file(args.memory)
    requests = load_requests(args.data, start=args.start, limit=args.limit)
    args.model = args.model or memory.identity.model_source
    args.dtype = args.dtype or memory.identity.weight_dtype
    editor = memory.attach(load_from_args(args))
    result = result_from_metrics(editor, requests, args.start, evaluate(editor, requests))
    print(result.table())
    if args.json:
        write_json(result, args.json)
    return 0
