"""Where the `resources/` folder is, from a source checkout and from a PyInstaller bundle alike.

From a checkout it is the folder next to the `wise_gui` package. In a frozen app (PyInstaller sets
`sys.frozen` and `sys._MEIPASS`, the bundle's `_internal` folder) the spec copies it to
`_MEIPASS/resources`; there `wise_gui`'s modules also report `__file__` under `_MEIPASS`, so paths built
from `__file__` (as in `wise_gui.core.wise.editor.RESOURCES`) land on the same folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

SAMPLE_EDITS = "sample_zsre_edits.json"
APP_ID = "io.github.wisegui.WiseWorkbench"  # the .desktop file's and the AppStream metainfo's name


def resources_dir() -> Path:
    bundle = getattr(sys, "_MEIPASS", None) if getattr(sys, "frozen", False) else None
    base = Path(bundle) if bundle else Path(__file__).resolve().parents[1]
    return base / "resources"


def resource_path(*parts: str) -> Path:
    return resources_dir().joinpath(*parts)


def icon_path(size: int | None = None) -> Path:
    """The SVG icon, or its PNG rendering at `size` px (16, 32, 48, 64, 128, 256)."""
    return resource_path("icons", "wise-gui.svg" if size is None else f"wise-gui-{size}.png")
