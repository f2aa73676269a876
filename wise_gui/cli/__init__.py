"""`wise-gui`: no sub-command opens the window; a sub-command runs headless on the same engine.

Each module in this package registers its sub-commands with `register(subparsers)`.
"""

from __future__ import annotations

import argparse
import shutil
import sys

from wise_gui import __version__
from wise_gui.core.errors import WiseGuiError
from wise_gui.cli import apply_cmd, bench_cmd, generate_cmd, memory_cmd, smoke_cmd, store_cmd

COMMAND_MODULES = [generate_cmd, bench_cmd, store_cmd, apply_cmd, memory_cmd, smoke_cmd]


class _HelpFormatter(argparse.HelpFormatter):
    """At least 100 columns, so each sub-command's help stays on one line."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=20, width=max(100, shutil.get_terminal_size().columns - 2))


def build_parser() -> argparse.ArgumentParser:
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
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        from wise_gui.ui.app import run

        return run(model=args.model, db=args.db)
    try:
        return int(args.handler(args) or 0)
    except WiseGuiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
