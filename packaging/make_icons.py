"""Writes the application icon: resources/icons/wise-gui.svg and PNGs of it at 16-256 px.

The SVG below is the one source. The PNGs are rendered from it with Qt's QSvgRenderer (QtSvg ships with
PySide6-Essentials), so the SVG and the PNGs always agree. Re-run after changing the drawing:

    .venv/bin/python packaging/make_icons.py

The drawing: a memory chip (the side memory, its orange die) and, coming in from the left, the router's
arrow that branches: the orange branch goes into the chip, the light-blue one passes underneath, on to the
main memory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ICON_DIR = ROOT / "resources" / "icons"
SIZES = (16, 32, 48, 64, 128, 256)
NAME = "wise-gui"

SVG = """<?xml version="1.0" encoding="UTF-8"?>
<!-- WISE Workbench icon: a memory chip (the side memory) fed by a branching router arrow. -->
<svg xmlns="http://www.w3.org/2000/svg" width="256" height="256" viewBox="0 0 256 256">
  <defs>
    <linearGradient id="bg" x1="0" y1="0" x2="0" y2="1">
      <stop offset="0" stop-color="#2b4c86"/>
      <stop offset="1" stop-color="#152a4f"/>
    </linearGradient>
  </defs>
  <rect x="8" y="8" width="240" height="240" rx="52" fill="url(#bg)"/>
  <!-- chip pins: top, right, bottom -->
  <g fill="#c9d3e6">
    <rect x="138" y="30" width="12" height="22" rx="3"/>
    <rect x="166" y="30" width="12" height="22" rx="3"/>
    <rect x="194" y="30" width="12" height="22" rx="3"/>
    <rect x="220" y="72" width="22" height="12" rx="3"/>
    <rect x="220" y="100" width="22" height="12" rx="3"/>
    <rect x="220" y="128" width="22" height="12" rx="3"/>
    <rect x="138" y="160" width="12" height="20" rx="3"/>
    <rect x="194" y="160" width="12" height="20" rx="3"/>
  </g>
  <!-- chip body and its die: the side memory -->
  <rect x="122" y="48" width="100" height="114" rx="16" fill="#f4f6fb"/>
  <rect x="146" y="74" width="52" height="62" rx="8" fill="#f29a38"/>
  <!-- the router: one stem, two branches -->
  <g fill="none" stroke-linecap="round" stroke-linejoin="round" stroke-width="18">
    <path d="M 30 196 L 62 196" stroke="#ffffff"/>
    <path d="M 62 196 C 108 196 74 105 118 105" stroke="#f29a38"/>
    <path d="M 62 196 L 196 196" stroke="#8fd0ff"/>
  </g>
  <path d="M 110 83 L 146 105 L 110 127 Z" fill="#f29a38"/>
  <path d="M 192 174 L 230 196 L 192 218 Z" fill="#8fd0ff"/>
  <circle cx="62" cy="196" r="14" fill="#ffffff"/>
</svg>
"""


def write_icons(folder: Path = ICON_DIR) -> list[Path]:
    """Writes the SVG and one PNG per size into `folder`; returns the paths written."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QByteArray, Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841  (QImage text needs it)
    folder.mkdir(parents=True, exist_ok=True)
    svg_path = folder / f"{NAME}.svg"
    svg_path.write_text(SVG, encoding="utf-8")
    renderer = QSvgRenderer(QByteArray(SVG.encode("utf-8")))
    if not renderer.isValid():
        raise SystemExit("QSvgRenderer could not read the icon SVG")
    written = [svg_path]
    for size in SIZES:
        image = QImage(size, size, QImage.Format_ARGB32_Premultiplied)
        image.fill(Qt.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.Antialiasing)
        painter.setRenderHint(QPainter.SmoothPixmapTransform)
        renderer.render(painter)
        painter.end()
        path = folder / f"{NAME}-{size}.png"
        if not image.save(str(path)):
            raise SystemExit(f"could not write {path}")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_icons():
        print(path.relative_to(ROOT))
