"""`wise-gui export`, `import-memory` and `eval`: a workspace's side memory as a standalone file, a file
into a workspace, and measuring a file on dataset edits."""

from __future__ import annotations

import argparse

from wise_gui.cli.generate_cmd import add_model_arguments, load_from_args


def register(subparsers) -> None:
    parser = subparsers.add_parser("export", help="write a workspace's side memory (after its last edit) to a file")
    parser.add_argument("--db", default=argparse.SUPPRESS, help="workspace database (default: the user data folder's)")
    parser.add_argument("--out", required=True, metavar="MEMORY_FILE", help="the .safetensors file to write")
    parser.set_defaults(handler=run_export)

    parser = subparsers.add_parser("import-memory", help="load a side-memory file into a workspace without applied edits")
    parser.add_argument("--db", default=argparse.SUPPRESS, help="workspace database (default: the user data folder's)")
    parser.add_argument("memory", metavar="MEMORY_FILE", help="a file from export or bench --export")
    add_model_arguments(parser)
    parser.set_defaults(model=None, handler=run_import_memory)  # default: the model the file was made for

    parser = subparsers.add_parser("eval", help="measure Rel/Gen/Loc of a memory file on dataset edits (as bench does)")
    parser.add_argument("--memory", required=True, metavar="MEMORY_FILE", help="a file from export or bench --export")
    add_model_arguments(parser)
    parser.set_defaults(model=None)  # default: the model and dtype the file was made with
    parser.add_argument("--data", required=True, nargs="+", metavar="FILE", help="the dataset files of the edits")
    parser.add_argument("--limit", type=int, required=True, help="number of records to evaluate")
    parser.add_argument("--start", type=int, default=0, help="first record to use")
    parser.add_argument("--query-format", default="raw,chat", metavar="FORMS", help="raw, chat or raw,chat")
    parser.add_argument("--json", default=None, metavar="OUT", help="write the result as JSON (the keys of bench)")
    parser.set_defaults(handler=run_eval)


def run_export(args: argparse.Namespace) -> int:
    from wise_gui.app.workspace import export_workspace_memory

    report = export_workspace_memory(getattr(args, "db", None), args.out)
    print(f"Exported the side memory after {report.total_edits} edits ({report.nbytes / 1024:.0f} KiB) to {report.path}.")
    return 0


def run_import_memory(args: argparse.Namespace) -> int:
    from wise_gui.app.workspace import WorkspaceService
    from wise_gui.core.memory_file import read_memory_file

    memory = read_memory_file(args.memory)  # checked before the (slow) model load
    args.model = args.model or memory.identity.model_source
    args.dtype = args.dtype or memory.identity.weight_dtype
    service = WorkspaceService(loader=lambda *_: load_from_args(args), settings_override=memory.settings)
    service.load_model(args.model)
    try:
        service.open(getattr(args, "db", None))
        count = service.import_memory(args.memory)
    finally:
        service.close()
    print(f"Imported {count} edits from {args.memory}; they are listed as applied.")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from wise_gui.cli.bench_cmd import forms_from_args
    from wise_gui.core.bench import evaluation_row
    from wise_gui.core.datasets import load_requests_from
    from wise_gui.core.memory_file import read_memory_file

    # The file and the data are checked before the (slow) model load.
    memory = read_memory_file(args.memory)
    requests = load_requests_from(args.data, start=args.start, limit=args.limit)
    forms = forms_from_args(args)
    args.model = args.model or memory.identity.model_source
    args.dtype = args.dtype or memory.identity.weight_dtype
    editor = memory.attach(load_from_args(args))
    result = evaluation_row(editor, requests, args.start, forms=forms)
    print(result.table())
    if args.json:
        import json
        from pathlib import Path

        Path(args.json).write_text(json.dumps(result.to_json(), indent=2))
    return 0
