"""`wise-gui smoke`: checks an installation or the PyInstaller bundle end to end and exits.

It finds the resources, loads the default model (from the user cache, or converted from the embedded GGUF
on first use), prints its greedy answer to one prompt, and with `--window` also opens the main window on a
temporary workspace (set QT_QPA_PLATFORM=offscreen where there is no display) and imports the sample edits.
Exit status 0: everything worked; 2: a check failed (the message says which).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from wise_gui.cli.generate_cmd import add_model_arguments, load_from_args
from wise_gui.core.errors import WiseGuiError

PROMPT = "The capital of France is"


WindowCheck = Callable[[object], str]
"""Opens the main window on a temporary workspace with a loaded model; returns what it saw (wise_gui.entry
provides it, so the command line never imports the window)."""


def register(subparsers, window_check: WindowCheck | None = None) -> None:
    parser = subparsers.add_parser(
        "smoke", help=f"check the installation: load the model, answer \"{PROMPT}\", exit 0",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    add_model_arguments(parser)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--window", action="store_true",
                        help="also open the main window on a temporary workspace, load the sample edits, close it")
    parser.set_defaults(handler=lambda args: run(args, window_check))


def run(args: argparse.Namespace, window_check: WindowCheck | None = None) -> int:
    import torch

    from wise_gui import __version__
    from wise_gui.core.inference import BareModel
    from wise_gui.core.wise.editor import load_irrelevant_pool
    from wise_gui.resources_path import SAMPLE_EDITS, icon_path, resource_path, resources_dir

    kind = "bundle" if getattr(sys, "frozen", False) else "python"
    print(f"wise-gui {__version__} ({kind}, Python {sys.version.split()[0]}, torch {torch.__version__})", flush=True)
    missing = [str(p) for p in (resource_path(SAMPLE_EDITS), icon_path(), icon_path(256)) if not p.is_file()]
    if missing:
        raise WiseGuiError(f"resources missing: {', '.join(missing)}")
    pool = load_irrelevant_pool()
    print(f"resources: {resources_dir()} ({len(pool)} irrelevant samples)", flush=True)

    start = time.perf_counter()
    loaded = load_from_args(args)
    where = ("from the cache" if loaded.from_cache else
             "converted from the embedded GGUF" if loaded.source == "default" else f"from {loaded.source}")
    print(f"model: {loaded.name} ({where}) loaded in {time.perf_counter() - start:.1f} s", flush=True)
    answer = " ".join(BareModel(loaded).generate([PROMPT], max_new_tokens=args.max_new_tokens,
                                                 first_sentence_only=False)[0].text.split())
    if not answer:
        raise WiseGuiError("the model generated an empty answer")
    print(f"{PROMPT} {answer}", flush=True)
    if args.window:
        if window_check is None:
            raise WiseGuiError("this build has no window to check")
        print(window_check(loaded), flush=True)
    return 0
