"""`wise-gui apply`: apply a workspace's queued edits in order, with the loop the GUI worker runs."""

from __future__ import annotations

import argparse
import signal
import threading

from wise_gui.cli.bench_cmd import add_settings_arguments, settings_from_args
from wise_gui.cli.generate_cmd import add_model_arguments, load_from_args


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "apply", help="apply the queued edits of a workspace in order",
        description="Applies the queued edits in order; each one is saved (checkpoint and outcome) as soon as it is "
                    "done. Ctrl+C cancels the edit in progress, which goes back to the queue. Exit status 1 when an "
                    "edit failed.",
    )  # fmt: skip
    parser.add_argument("--db", default=argparse.SUPPRESS, help="workspace database (default: the user data folder's)")
    add_model_arguments(parser)
    parser.set_defaults(model=None)  # default: the model the workspace was made with
    add_settings_arguments(parser)
    parser.set_defaults(handler=run)


def _print(text: str) -> None:
    # Flushed line by line: a watching process (or a test) sees each edit as soon as it is committed.
    print(text, flush=True)


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _report(event) -> None:
    from wise_gui.store.runner import EditApplied, EditCancelledEvent, EditFailed, EditStarted

    if isinstance(event, EditStarted):
        _print(f"applying {event.edit_id} ({event.position}/{event.total}): {event.prompt} -> {event.target}")
    elif isinstance(event, EditApplied):
        scores = " ".join(f"{name} {_score(value)}" for name, value in event.metrics.items())
        prompt_row = event.answers[0]
        _print(f"applied {event.edit_id} as #{event.apply_order}: {scores}, {event.outcome.iterations} steps, "
               f"{event.seconds:.1f} s; prompt -> {prompt_row.routed_to}: {prompt_row.after.strip()!r}")
    elif isinstance(event, EditFailed):
        _print(f"failed {event.edit_id}: {event.message}")
    elif isinstance(event, EditCancelledEvent):
        _print(f"cancelled {event.edit_id}: back in the queue")


def run(args: argparse.Namespace) -> int:
    from wise_gui.store import open_store
    from wise_gui.store.runner import apply_queued, open_for_model

    db = getattr(args, "db", None)
    if args.model is None:
        with open_store(db) as store:
            workspace = store.workspace
        args.model = workspace.model_source if workspace is not None else "default"
    loaded = load_from_args(args)
    # Settings given on the command line replace the workspace's; without them the workspace's stay.
    given = args.settings or args.layer is not None or args.reference_settings
    store, editor = open_for_model(db, loaded, settings_from_args(args, loaded) if given else None)
    stop = threading.Event()
    previous_handler = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        with store:
            finished = apply_queued(store, editor, on_event=_report, should_stop=stop.is_set)
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    _print(f"{len(finished.applied)} applied, {len(finished.failed)} failed"
           + (", cancelled." if finished.cancelled else "."))
    return 1 if finished.failed else 0
