"""`wise-gui import` and `wise-gui edits`: filling a workspace from a dataset file and listing its edits."""

from __future__ import annotations

import argparse
import json

from wise_gui.core.datasets import FORMATS

_METRICS = ("rel", "gen", "loc", "gen_success")


def _add_db_argument(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: without --db here, the top-level `wise-gui --db FILE import ...` value stays in place.
    parser.add_argument(
        "--db", default=argparse.SUPPRESS, help="workspace database (default: workspace.sqlite in the user data folder)"
    )


def register(subparsers) -> None:
    parser = subparsers.add_parser("import", help="add the edits of a dataset file to a workspace")
    _add_db_argument(parser)
    parser.add_argument("data", metavar="DATA", help="a JSON dataset (ZsRE, CounterFact, ...) or a CSV file")
    parser.add_argument("--format", choices=FORMATS, default=None, help="the file's format (default: detected)")
    parser.add_argument("--start", type=int, default=0, metavar="K", help="skip the first K records")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="read at most N records")
    parser.add_argument("--draft", action="store_true", help="import as drafts instead of queueing them")
    parser.set_defaults(handler=run_import)

    parser = subparsers.add_parser("edits", help="list the edits of a workspace")
    _add_db_argument(parser)
    parser.add_argument("--status", default=None, choices=["draft", "queued", "applying", "applied", "failed", "rolled_back"])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run_edits)


def run_import(args: argparse.Namespace) -> int:
    from wise_gui.core.datasets import read_dataset
    from wise_gui.store import EditStatus, import_requests, open_store

    status = EditStatus.DRAFT if args.draft else EditStatus.QUEUED
    # Read first: an unreadable file must not leave a new, empty database behind.
    result = read_dataset(args.data, format=args.format, start=args.start, limit=args.limit)
    with open_store(args.db) as store:
        report = import_requests(store, result.requests, status=status)
        print(f"Imported {report.imported} edits ({result.format or 'empty'} format, {status}) into {store.path}.")
    problems = result.problems + report.problems
    if problems:
        print(f"Skipped {len(problems)} bad rows:")
        for problem in problems:
            print(f"  {problem}")
    return 0


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def run_edits(args: argparse.Namespace) -> int:
    from wise_gui.store import open_store

    with open_store(args.db, create=False) as store:
        rows = store.edit_page(0, store.count_edits(status=args.status), status=args.status)
        summary = store.summary()
    if args.json:
        keys = ("id", "position", "apply_order", "status", "prompt", "target", "subject", "error", "source") + _METRICS
        print(json.dumps([{key: getattr(row, key) for key in keys} for row in rows], ensure_ascii=False, indent=1))
        return 0

    counts = ", ".join(f"{count} {status}" for status, count in summary.by_status.items() if count)
    print(f"{summary.path}: {summary.total} edits" + (f" ({counts})" if counts else ""))
    if summary.workspace is not None:
        ws = summary.workspace
        print(f"model {ws.model_source} (fingerprint {ws.fingerprint}), layer {ws.layer} {ws.module_name}")
    if not rows:
        return 0
    # Score columns only once some edit has been applied and measured.
    metrics = [m for m in _METRICS if any(getattr(row, m) is not None for row in rows)]
    header = ["id", "order", "status", "prompt", "target"] + metrics
    table = [
        [str(row.id), "-" if row.apply_order is None else str(row.apply_order), row.status,
         _clip(row.prompt, 50), _clip(row.target, 24)] + [_score(getattr(row, m)) for m in metrics]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header] + table) for i in range(len(header))]
    for line in [header] + table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    return 0
