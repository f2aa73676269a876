"""The `wise-gui` program: without a sub-command it opens the window, with one it runs the command line.

This module sits above both front ends (the import contracts keep ui and cli apart), so the command
line never loads Qt unless the window is asked for.
"""

from __future__ import annotations

from wise_gui.cli import build_parser, run_command


def _window_check(loaded) -> str:
    from wise_gui.ui.smoke import check_window

    return check_window(loaded)


def main(argv: list[str] | None = None) -> int:
    args = build_parser(window_check=_window_check).parse_args(argv)
    if args.command is None:
        from wise_gui.ui.app import run

        return run(model=args.model, db=args.db)
    return run_command(args)
