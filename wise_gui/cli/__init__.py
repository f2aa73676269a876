"""The `wise-gui` sub-commands: each runs headless on the same workflows as the window.

Each module in this package registers its sub-commands with `register(subparsers)`. `wise_gui.entry`
adds the window (no sub-command) on top.
"""

from __future__ import annotations

import argparse
import shutil
import sys

from wise_gui import __version__
from wise_gui.cli import apply_cmd, bench_cmd, generate_cmd, memory_cmd, smoke_cmd, store_cmd
from wise_gui.core.errors import WiseGuiError

COMMAND_MODULES = [generate_cmd, bench_cmd, store_cmd, apply_cmd, memory_cmd, smoke_cmd]


class _HelpFormatter(argparse.HelpFormatter):
    """At least 100 columns, so each sub-command's help stays on one line."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=24, width=max(100, shutil.get_terminal_size().columns - 2))
        # argparse measures sub-commands one indent shallower than it prints them; room for the longest.
        self._action_max_length = 20


def build_parser(window_check: smoke_cmd.WindowCheck | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wise-gui",
        description="WISE Workbench: lifelong knowledge editing of language models with WISE. "
        "Without a command, opens the window; with one, runs it headless on the same engine.",
        epilog="`wise-gui COMMAND --help` lists a command's options.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"wise-gui {__version__}")
    parser.add_argument("--model", default=None, help="model to load in the window: default, a folder or a .gguf file")
    parser.add_argument("--db", default=None, help="workspace database to open in the window")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for module in COMMAND_MODULES:
        if module is smoke_cmd:
            module.register(subparsers, window_check)
        else:
            module.register(subparsers)
    return parser


def run_command(args: argparse.Namespace) -> int:
    """Runs a parsed sub-command; expected failures print `error: ...` and give exit status 2."""
    try:
        return int(args.handler(args) or 0)
    except WiseGuiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    """The sub-commands alone (no window): `wise_gui.entry.main` is the program."""
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return 2
    return run_command(args)
