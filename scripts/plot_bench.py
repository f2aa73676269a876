"""Rel, Gen, Loc and generation success of each method against T, from the JSON of `wise-gui bench --json`, as a PNG.

    .venv/bin/python scripts/plot_bench.py docs/bench/methods_zsre.json --out docs/bench/methods_zsre.png
    .venv/bin/python scripts/plot_bench.py runA.json runB.json --out both.png   # rows of several runs
    .venv/bin/python scripts/plot_bench.py old.json new.json --labels "centred keys" "whitened keys"  # same method twice

One panel per metric, one line per method (the colour key is in the title); T on a log axis when it spans
a factor of 10 or more. Rows of an interrupted run (complete: false) are drawn with hollow markers. Runs without a display (offscreen Qt).
A file with a single result object (older `bench --json`) is read as one row.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path


def _live(form: str):
    return lambda row: ((row.get("live") or {}).get(form) or {}).get("prompt")


# (title, value of a row): the paper's teacher-forced scores, then the edit prompt's answer generated as
# asked raw and through the chat template (None where the run did not ask that way).
METRICS = (("Rel", lambda row: row.get("rel")), ("Gen", lambda row: row.get("gen")), ("Loc", lambda row: row.get("loc")),
           ("generated, raw", lambda row: _live("raw")(row) if row.get("live") else row.get("gen_success")),
           ("generated, chat", _live("chat")))
# Colours that stay apart in print and for colour-blind readers (Okabe-Ito).
COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]


def read_rows(path: Path) -> list[dict]:
    data = json.loads(path.read_text())
    rows = data if isinstance(data, list) else [data]
    for row in rows:
        row["chunk_size"] = row.get("chunk_size") or row["n_edits"]  # a row written before --chunk existed
    return rows


def series(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows per method, or per method and run label (in first-seen order), sorted by T."""
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        name = f"{row['method']} ({row['label']})" if row.get("label") else row["method"]
        grouped.setdefault(name, []).append(row)
    return {method: sorted(items, key=lambda r: r["chunk_size"]) for method, items in grouped.items()}


def plot(rows: list[dict], out: Path, width: int = 1800) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import pyqtgraph as pg
    from pyqtgraph.exporters import ImageExporter

    app = pg.mkQApp()
    pg.setConfigOptions(background="w", foreground="k", antialias=True)
    grouped = series(rows)
    sizes = sorted({r["chunk_size"] for r in rows})
    log_x = len(sizes) > 1 and sizes[-1] / sizes[0] >= 10
    model = rows[0].get("model", "?")
    layout = pg.GraphicsLayoutWidget()
    layout.resize(width, width * 3 // 13)
    colours = {method: COLOURS[i % len(COLOURS)] for i, method in enumerate(grouped)}
    legend = "&nbsp;&nbsp;".join(f'<span style="color:{c}">&#9679; {m}</span>' for m, c in colours.items())
    layout.addLabel(f"{model}, layer {rows[0].get('layer', '?')}: scores against T&nbsp;&nbsp;&nbsp;{legend}",
                    row=0, col=0, colspan=len(METRICS))
    for column, (title, value) in enumerate(METRICS):
        panel = layout.addPlot(row=1, col=column, title=title)
        panel.setLogMode(x=log_x, y=False)
        panel.setYRange(0, 1.05, padding=0)
        panel.showGrid(x=True, y=True, alpha=0.3)
        panel.setLabel("bottom", "T (edits before evaluation)")
        # Ticks at the measured T only, written plainly (log mode places them at log10 T).
        panel.getAxis("bottom").setTicks([[(math.log10(s) if log_x else s, str(s)) for s in sizes]])
        if all(value(r) is None for r in rows):
            panel.setTitle(f"{title} (not measured)")
        for method, items in grouped.items():
            points = [(r["chunk_size"], value(r), r.get("complete", True)) for r in items if value(r) is not None]
            if not points:
                continue
            colour = colours[method]
            panel.plot([x for x, _, _ in points], [y for _, y, _ in points], pen=pg.mkPen(colour, width=2),
                       symbol="o", symbolSize=9, symbolPen=pg.mkPen(colour),
                       symbolBrush=[pg.mkBrush(colour if complete else "w") for _, _, complete in points])
    layout.show()
    app.processEvents()  # lay the panels out at the widget's size before exporting
    exporter = ImageExporter(layout.scene())
    exporter.parameters()["width"] = width
    exporter.export(str(out))
    layout.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", type=Path, nargs="+", help="rows written by wise-gui bench --json (one or more files)")
    parser.add_argument("--out", type=Path, default=None,
                        help="PNG to write (default: the first JSON's name with .png)")
    parser.add_argument("--width", type=int, default=1800, help="image width in pixels")
    parser.add_argument("--labels", nargs="+", default=None,
                        help="one label per JSON file, shown after the method's name (\"\" for none)")
    args = parser.parse_args()
    labels = args.labels or [""] * len(args.json)
    if len(labels) != len(args.json):
        parser.error(f"--labels gives {len(labels)} labels for {len(args.json)} JSON files")
    rows = [{**row, "label": label} for path, label in zip(args.json, labels) for row in read_rows(path)]
    if not rows:
        print(f"{', '.join(map(str, args.json))} hold no rows.", file=sys.stderr)
        return 1
    out = args.out or args.json[0].with_suffix(".png")
    plot(rows, out, args.width)
    print(f"Wrote {out}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
