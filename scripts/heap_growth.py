"""Resident memory over sequential edits on the default model, with and without handing freed memory
back to the OS after each edit (wise_gui/core/heap.py): the anonymous RSS every 10 edits beside the
side memory's own size.

    .venv/bin/python scripts/heap_growth.py --edits 40 --n-iter 6
    .venv/bin/python scripts/heap_growth.py --edits 40 --n-iter 6 --keep-free-memory   # the old behaviour
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def anonymous_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=40)
    parser.add_argument("--n-iter", type=int, default=6, help="steps per edit at most (fewer: a quicker run)")
    parser.add_argument("--data", default=str(REPO.parent / "shared/data/zsre/zsre_edit_dev.json"))
    parser.add_argument("--keep-free-memory", action="store_true", help="do not release freed memory after edits")
    args = parser.parse_args()

    from wise_gui.core.bench import build_method, method_settings
    from wise_gui.core.datasets import load_requests
    from wise_gui.core.models import load_model
    from wise_gui.core.wise import editor as editor_module

    if args.keep_free_memory:
        editor_module.release_free_memory = lambda: None
    loaded = load_model("default")
    editor = build_method("wise-index", loaded, method_settings("wise-index").replace(n_iter=args.n_iter))
    editor.prepare()
    started = time.perf_counter()
    print(f"before the first edit: {anonymous_rss_mib():.0f} MiB anonymous RSS")
    for done, request in enumerate(load_requests(args.data, limit=args.edits), start=1):
        editor.apply_edit(request)
        if done % 10 == 0:
            print(f"{done} edits: {anonymous_rss_mib():.0f} MiB anonymous RSS, side memory "
                  f"{editor.state_dict().nbytes() / 2**20:.2f} MiB, {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
