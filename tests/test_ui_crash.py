"""Issue 16.5: the real window in its own process (scripts/gui_driver.py: the MainWindow, offscreen, on
the tiny model saved as a Hugging Face folder) is killed with SIGKILL while it trains an edit. Reopened
in a window here, the workspace is intact, the interrupted edit is queued again, and the applied edits
answer and route exactly as the killed window showed them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_apply_cli import ENV, SLOW_SETTINGS, integrity, queued_workspace
from test_ui_window import RUN_MS, probe, status_shown

from wise_gui.app.apply_loop import answer_cap
from wise_gui.core.evaluation import QuestionAnswer
from wise_gui.core.models import load_model
from wise_gui.ui.answers_panel import ROUTE_COLUMN
from wise_gui.ui.labels import route_label

DRIVER = Path(__file__).resolve().parents[1] / "scripts" / "gui_driver.py"


def test_a_window_killed_during_an_edit_keeps_what_it_showed(qtbot, open_window, tmp_path, shared_tokenizer):
    model_dir, db = queued_workspace(tmp_path, shared_tokenizer)
    process = subprocess.Popen(
        [sys.executable, str(DRIVER), "--model", str(model_dir), "--db", str(db), "--settings",
         SLOW_SETTINGS.to_json(), "--apply"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**ENV, "QT_QPA_PLATFORM": "offscreen"})
    lines, shown = [], {}
    try:
        for line in process.stdout:
            lines.append(line)
            if line.startswith("applied "):
                _, edit_id, answers = line.split(" ", 2)
                shown[int(edit_id)] = [QuestionAnswer.from_dict(a) for a in json.loads(answers)["answers"]]
            elif line.startswith("applying ") and shown:
                process.kill()  # SIGKILL while the edit after an applied one trains
                break
    finally:
        process.kill()
        process.wait()
    assert shown and process.returncode == -9, "".join(lines)
    interrupted = int([line for line in lines if line.startswith("applying ")][-1].split()[1])
    assert interrupted not in shown
    assert integrity(db) == "ok"

    window = open_window(db=db, settings=None, loader=lambda *_: load_model(str(model_dir)))
    store, editor = window.store, window.service.editor
    assert integrity(db) == "ok"
    rows = {window.table_model.edit_id(r): r for r in range(window.table_model.rowCount())}
    assert status_shown(window, rows[interrupted]) == "queued" and store.get_edit(interrupted).outcome is None
    assert [status_shown(window, rows[i]) for i in shown] == ["applied"] * len(shown)
    assert editor.state.total_edits == len(shown)
    assert window.status_applied.text() == f"{len(shown)} applied edit{'s' * (len(shown) != 1)}"

    for edit_id, answers in shown.items():
        # The window shows what the killed one showed ...
        window.table.select_row(rows[edit_id])
        assert window.answers_panel.after_answers() == [a.after for a in answers]
        assert window.answers_panel.column_texts(ROUTE_COLUMN) == [route_label(a.route) for a in answers]
        # ... and the restored side memory reproduces it: the same routes and answers, asked again as the
        # apply loop asked them (one batch, the same form and token budget).
        cap = answer_cap(editor, store.get_edit(edit_id).request)
        again = editor.generate([a.question for a in answers], form=answers[0].form, max_new_tokens=cap)
        assert [a.text for a in again] == [a.after for a in answers]
        assert [a.route.memory for a in again] == [a.route.memory for a in answers]
        assert [a.route.score for a in again] == pytest.approx([a.route.score for a in answers], abs=1e-5)

    # The probe of the restored window routes the first edit's prompt to the memory it was shown in.
    first_prompt = next(iter(shown.values()))[0]
    decision = probe(qtbot, window, first_prompt.question)
    assert decision.route.memory == first_prompt.route.memory and decision.to_side_memory
    window.close()
    qtbot.waitUntil(lambda: not window.busy, timeout=RUN_MS)
    assert integrity(db) == "ok"
