"""Screenshots of the main window and its panels after a few edits, for docs/screenshots/.

Drives the real window offscreen (or on a display: QT_QPA_PLATFORM=xcb): applies fixture edits, opens
one edit's before/after answers, probes a paraphrase, then grabs the window and each panel; last, it
starts a long edit and grabs the window while it trains (the edit in training highlighted), then cancels.

    .venv/bin/python scripts/screenshots.py                   # tiny random Llama (answers are gibberish)
    .venv/bin/python scripts/screenshots.py --model default   # SmolLM2-135M-Instruct
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from gui_driver import REPO, apply_all, fixture_requests, open_window, queue_edits, wait_until

from wise_gui.store import EditStatus


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny (default), default (SmolLM2) or a model path")
    parser.add_argument("--edits", type=int, default=8)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from test_engine import TINY_SETTINGS

    # Small shards so the shard plot shows merged, full and filling shards after a few edits.
    base = TINY_SETTINGS if args.model == "tiny" else None
    settings = base.replace(retrieve=False, save_freq=3, merge_freq=6) if base else None
    with tempfile.TemporaryDirectory() as folder:
        app, window = open_window(args.model, Path(folder) / "screenshots.sqlite", settings)
        requests = fixture_requests(args.edits + 2)
        queue_edits(window, requests[: args.edits])
        window.store.add_edit(requests[args.edits], status=EditStatus.DRAFT)
        window.table_model.reload()
        apply_all(app, window)

        window.table.select_row(1)
        window.lower_tabs.setCurrentWidget(window.answers_panel)
        window.probe_panel.ask(requests[1].paraphrases[0])
        wait_until(app, lambda: not window.busy, 300, "the probe")
        grab_all(app, window, args.out)

        # One long edit, grabbed while it trains: the edit is highlighted in the table and all three plots.
        window.change_settings(window.editor.settings.replace(n_iter=4000, early_stop_loss=0.0))
        wait_until(app, lambda: not window.busy, 300, "the new settings")
        queue_edits(window, requests[args.edits + 1:])
        window.apply_all_queued()
        wait_until(app, lambda: len(window.plots.loss.values("ce")) > 600, 300, "training steps")
        window.table.scrollToBottom()
        window.plots.redraw_dirty()
        save(app, window, args.out / "training.png")
        window.cancel_run()
        wait_until(app, lambda: not window.busy, 300, "the cancel")
        window.close()
    print(f"screenshots in {args.out}")
    return 0


def save(app, widget, path: Path) -> None:
    app.processEvents()
    if not widget.grab().save(str(path)):
        raise OSError(f"could not write {path}")


def grab_all(app, window, out: Path) -> None:
    window.plots.redraw_dirty()
    save(app, window, out / "window.png")
    save(app, window.centralWidget(), out / "edits_and_answers.png")
    save(app, window.plots, out / "plots.png")
    save(app, window.probe_panel, out / "probe.png")
    save(app, window.model_dock.widget().widget(), out / "model_panel.png")
    window.lower_tabs.setCurrentWidget(window.detail_panel)
    save(app, window.lower_tabs, out / "edit_details.png")
    window.lower_tabs.setCurrentWidget(window.answers_panel)


if __name__ == "__main__":
    raise SystemExit(main())
