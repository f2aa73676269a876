"""The application icon: every PNG size of resources/icons (written by packaging/make_icons.py) in one QIcon."""

from __future__ import annotations

from PySide6.QtGui import QIcon

from wise_gui.resources_path import icon_path

ICON_SIZES = (16, 32, 48, 64, 128, 256)


def app_icon() -> QIcon:
    icon = QIcon()
    for size in ICON_SIZES:
        path = icon_path(size)
        if path.is_file():
            icon.addFile(str(path))
    return icon
