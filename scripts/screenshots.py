"""Screenshots of the main window for docs/screenshots/, walking the first-use path as a new user does.

Drives the real window (offscreen, or on a display: QT_QPA_PLATFORM=xcb under Xvfb) on a new workspace:
the welcome note, the ten sample edits, applying the first few, one edit's before/after answers, a probe
of a paraphrase, the export of the side memory, one edit grabbed while it trains (then cancelled), a new
workspace and the import of the exported memory into it. It prints what it checked on the way (no
blank answer, nothing of the first workspace left in the new one).

    xvfb-run -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshots.py --model default
    xvfb-run -s "-screen 0 1280x800x24" .venv/bin/python scripts/screenshots.py --model default --small
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from gui_driver import REPO, load_and_open, make_window, pause, wait_until
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QFileDialog

from wise_gui.ui.window_state import first_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny (default), default (SmolLM2) or a model path")
    parser.add_argument("--edits", type=int, default=5, help="sample edits applied")
    parser.add_argument("--small", action="store_true", help="only the first start and the window after the "
                        "edits, named for the screen size (window-1280x800.png)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    settings = None
    if args.model == "tiny":
        from tiny_model import TINY_SETTINGS

        settings = TINY_SETTINGS
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        app, window = make_window(args.model, folder / "first.sqlite", settings, app_settings=folder / "gui.ini")
        screen = window.screen().availableGeometry()
        size = first_size(screen)
        window.resize(size)
        suffix = f"-{screen.width()}x{screen.height()}" if args.small else ""
        load_and_open(app, window, args.model)
        check(window.welcome.isVisible(), "the welcome note shows on a new workspace")
        save(app, window, args.out / f"xvfb-first-start{suffix}.png")

        window.welcome.sample_button.click()
        check(window.table_model.rowCount() == 10, "the sample button queued 10 edits")
        window.table.selectRow(0)
        for row in range(1, args.edits):
            window.table.selectionModel().select(window.table_model.index(row, 0),
                                                 window.table.selectionModel().SelectionFlag.Select
                                                 | window.table.selectionModel().SelectionFlag.Rows)
        window.apply_selected()
        wait_until(app, lambda: not window.busy, 3600, "the apply run")
        check(window.applied == args.edits, f"{args.edits} edits applied")

        shown = min(1, args.edits - 1)  # the second edit, or the only one
        window.table.select_row(shown)
        window.show_panel(window.answers_panel)
        answers = [window.answers_panel.table.item(r, c).text() for r in range(window.answers_panel.table.rowCount())
                   for c in range(window.answers_panel.table.columnCount())]
        check(answers and all(text.strip() for text in answers), "no cell of the answers panel is blank")
        save(app, window, args.out / f"window{suffix}.png")
        if args.small:
            window.close()
            print(f"screenshots in {args.out}")
            return 0

        paraphrase = window.store.get_edit(window.table_model.edit_id(shown)).request.paraphrases[0]
        window.show_panel(window.probe_panel)
        window.probe_panel.ask(paraphrase)
        wait_until(app, lambda: not window.busy, 600, "the probe")
        probe = window.probe_panel
        check(probe.result is not None and probe.edited_answer.toPlainText().strip()
              and probe.original_answer.toPlainText().strip(), "the probe's answers are not blank")
        save(app, window.probe_dock, args.out / "probe.png")
        save(app, window, args.out / "window-probe.png")

        # Export with Ctrl+E while the question field still has the focus (on X11 a line edit claims Ctrl+E).
        memory = folder / "memory.safetensors"
        QFileDialog.getSaveFileName = staticmethod(lambda *args: (str(memory), ""))
        field = window.probe_panel.question
        window.activateWindow()
        field.setFocus()
        pause(app, 0.2)
        QTest.keyClick(app.focusWidget(), Qt.Key_E, Qt.ControlModifier)
        wait_until(app, lambda: not window.busy, 600, "the export")
        check(memory.is_file(), f"Ctrl+E in the probe field exported the side memory ({app.platformName()})")

        # One more edit, grabbed while it trains: highlighted in the table, live in all three plots.
        window.show_panel(window.answers_panel)
        window.table.select_row(args.edits)
        window.apply_selected()
        wait_until(app, lambda: len(window.plots.loss.values("ce")) >= 12, 600, "training steps")
        window.plots.redraw_dirty()
        save(app, window, args.out / "training.png")
        window.cancel_run()
        wait_until(app, lambda: not window.busy, 600, "the cancel")

        window.open_workspace(folder / "second.sqlite", new=True)
        wait_until(app, lambda: not window.busy, 600, "the new workspace")
        window.plots.redraw_dirty()
        check(window.table_model.rowCount() == 0 and window.probe_panel.result is None
              and not window.plots.loss.values("ce") and window.run_label.text() == ""
              and not window.undo_last_action.isEnabled(), "the new workspace shows nothing of the first")
        window.import_side_memory_from(memory)
        wait_until(app, lambda: not window.busy, 3600, "the import")
        check(window.applied == args.edits and window.table_model.rowCount() == args.edits,
              "the imported memory's edits are listed as applied")
        window.table.select_row(0)
        window.plots.redraw_dirty()
        after = window.answers_panel.after_answers()
        check(after and all(text.strip() for text in after), "the imported edit's answer is not blank")
        save(app, window, args.out / "imported.png")
        window.close()
    print(f"screenshots in {args.out}")
    return 0


def check(condition, what: str) -> None:
    if not condition:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


def save(app, widget, path: Path) -> None:
    pause(app, 0.4)
    if not widget.grab().save(str(path)):
        raise OSError(f"could not write {path}")
    print(f"saved {path.name}")


if __name__ == "__main__":
    raise SystemExit(main())
