"""`wise-gui apply`, `undo` and `probe`: the window's editing workflows on a workspace, headless."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from wise_gui.cli.bench_cmd import add_settings_arguments, settings_from_args
from wise_gui.cli.generate_cmd import add_form_argument, add_model_arguments, load_from_args


def _add_workspace_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=argparse.SUPPRESS, help="workspace database (default: the user data folder's)")
    add_model_arguments(parser)
    parser.set_defaults(model=None)  # default: the model the workspace was made with


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "apply", help="apply the queued edits of a workspace in order",
        description="Applies the queued edits in order; each one is saved (checkpoint and outcome) as soon as it is "
                    "done. Ctrl+C cancels the edit in progress, which goes back to the queue. Exit status 1 when an "
                    "edit failed, 2 when the workspace cannot be used (in use by another program, another model).")
    _add_workspace_arguments(parser)
    add_settings_arguments(parser)
    add_form_argument(parser)
    parser.set_defaults(handler=run_apply)

    parser = subparsers.add_parser("undo", help="roll the side memory back by its last applied edit")
    _add_workspace_arguments(parser)
    parser.set_defaults(handler=run_undo)

    parser = subparsers.add_parser("probe", help="which memory answers a question, and the answers with and without edits")
    _add_workspace_arguments(parser)
    parser.add_argument("--question", required=True)
    parser.add_argument("--read-only", action="store_true", help="open the workspace read-only (it may be in use)")
    add_form_argument(parser)
    parser.set_defaults(handler=run_probe)


def _print(text: str) -> None:
    # Flushed line by line: a watching process (or a test) sees each edit as soon as it is committed.
    print(text, flush=True)


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def open_service(args: argparse.Namespace, read_only: bool = False, settings_given: bool = False):
    """The workspace service with the workspace of `--db` open for its model (or `--model`)."""
    from wise_gui.app.workspace import WorkspaceService
    from wise_gui.store import open_store

    db = getattr(args, "db", None)
    if args.model is None:
        with open_store(db, create=not read_only) as store:
            workspace = store.workspace
        args.model = workspace.model_source if workspace is not None else "default"
    service = WorkspaceService(loader=lambda *_: load_from_args(args))
    loaded = service.load_model(args.model)
    # Settings given on the command line replace the workspace's; without them the workspace's stay.
    settings = settings_from_args(args, loaded) if settings_given else None
    service.open(db, settings=settings, read_only=read_only)
    return service


def _report(event) -> None:
    from wise_gui.app.events import EditApplied, EditCancelled, EditFailed, EditStarted
    from wise_gui.cli.labels import route_label

    if isinstance(event, EditStarted):
        _print(f"applying {event.edit_id} ({event.position}/{event.total}): {event.prompt} -> {event.target}")
    elif isinstance(event, EditApplied):
        s = event.scores
        live = next(iter(s.live.values()), None)
        scores = f"rel {_score(s.rel)} gen {_score(s.gen)} loc {_score(s.loc)} gen_success {_score(live.prompt if live else None)}"
        prompt = event.answers[0]
        _print(f"applied {event.edit_id} as #{event.apply_order}: {scores}, {event.outcome.iterations} steps, "
               f"{event.seconds:.1f} s; prompt ({prompt.form}) -> {route_label(prompt.route)}: {prompt.after!r}")
    elif isinstance(event, EditFailed):
        _print(f"failed {event.edit_id}: {event.message}")
    elif isinstance(event, EditCancelled):
        _print(f"cancelled {event.edit_id}: back in the queue")


def run_apply(args: argparse.Namespace) -> int:
    from wise_gui.app.apply_loop import run_to_summary

    given = bool(args.settings or args.layer is not None or args.reference_settings or args.method)
    service = open_service(args, settings_given=given)
    stop = threading.Event()
    previous_handler = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        finished = run_to_summary(service.apply(abort=stop.is_set, form=args.form), _report)
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        service.close()
    _print(f"{len(finished.applied)} applied, {len(finished.failed)} failed"
           + (", cancelled." if finished.cancelled else "."))
    if finished.write_error:
        print(f"error: {finished.write_error}", file=sys.stderr)
        return 2
    return 1 if finished.failed else 0


def run_undo(args: argparse.Namespace) -> int:
    service = open_service(args)
    try:
        edit_id = service.undo_last()
        total = service.editor.state.total_edits
    finally:
        service.close()
    _print("No applied edit to undo." if edit_id is None else
           f"Rolled back edit {edit_id}; {total} applied edit{'s' * (total != 1)} remain.")
    return 0


def run_probe(args: argparse.Namespace) -> int:
    from wise_gui.cli.labels import route_label

    service = open_service(args, read_only=args.read_only)
    try:
        result = service.probe(args.question, form=args.form)
    finally:
        service.close()
    route = result.decision.route
    evidence = "" if route.score is None else f" (score {route.score:.3g} vs threshold {route.threshold:.3g})"
    _print(f"routed to {route_label(route)}{evidence}, asked {result.form}")
    _print(f"edited:   {result.edited.text or '(no words)'}")
    _print(f"original: {result.original.text or '(no words)'}")
    return 0
