"""`wise-gui smoke`: checks an installation or the PyInstaller bundle end to end and exits.

It finds the resources, loads the default model (from the user cache, or converted from the embedded GGUF
on first use), prints its greedy answer to one prompt, and with `--window` also opens the main window on a
temporary workspace (set QT_QPA_PLATFORM=offscreen where there is no display) and imports the sample edits.
Exit status 0: everything worked; 2: a check failed (the message says which).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from wise_gui.cli.generate_cmd import add_model_arguments, load_from_args
from wise_gui.core.errors import WiseGuiError

PROMPT = "The capital of France is"
WINDOW_TIMEOUT_S = 180


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "smoke", help=f"check the installation: load the model, answer \"{PROMPT}\", exit 0",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    add_model_arguments(parser)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--window", action="store_true",
                        help="also open the main window on a temporary workspace, load the sample edits, close it")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from wise_gui import __version__
    from wise_gui.core.models import generate
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
    answer = " ".join(generate(loaded, PROMPT, max_new_tokens=args.max_new_tokens).split())
    if not answer:
        raise WiseGuiError("the model generated an empty answer")
    print(f"{PROMPT} {answer}", flush=True)
    if args.window:
        print(_check_window(loaded), flush=True)
    return 0


def _check_window(loaded) -> str:
    from PySide6.QtCore import QSettings

    from wise_gui.ui.app import create_application
    from wise_gui.ui.main_window import MainWindow

    app = create_application()
    with tempfile.TemporaryDirectory(prefix="wise-gui-smoke-") as tmp:
        settings = QSettings(str(Path(tmp) / "settings.ini"), QSettings.IniFormat)
        window = MainWindow(model_loader=lambda *_: loaded, db_path=Path(tmp) / "smoke.sqlite", app_settings=settings)
        window.show()
        window.load_model(loaded.name)
        deadline = time.monotonic() + WINDOW_TIMEOUT_S
        while (window.editor is None or window.busy) and time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.02)
        try:
            if window.editor is None:
                box = window.message_box
                raise WiseGuiError("the window did not open its workspace"
                                   + (f": {box.text()}" if box is not None else f" within {WINDOW_TIMEOUT_S} s"))
            if not window.welcome.isVisible():
                raise WiseGuiError("the window did not show its welcome state on an empty workspace")
            window.load_sample_edits()
            rows = window.table_model.rowCount()
            if rows != 10 or window.welcome.isVisible():
                raise WiseGuiError(f"the welcome button imported {rows} edits instead of 10")
        finally:
            window.close()
            app.processEvents()
    return f"window: {app.platformName()} platform, workspace opened, welcome shown, {rows} sample edits queued"
