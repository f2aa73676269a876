"""`wise-gui import` and `wise-gui edits` through the CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

from wise_gui.cli import main
from wise_gui.store import OutcomeFields, open_store

FIXTURES = Path(__file__).parent / "fixtures"


def test_import_then_list(tmp_path, capsys):
    db = tmp_path / "ws.sqlite"
    assert main(["import", "--db", str(db), str(FIXTURES / "counterfact_sample.json"), "--start", "1", "--limit", "3"]) == 0
    assert "Imported 3 edits (counterfact format, queued)" in capsys.readouterr().out

    assert main(["edits", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "3 edits (3 queued)" in out
    assert "Kenya African National Union is located in" in out and "Venezuela" in out
    assert "rel" not in out.split("\n")[1]  # no score columns before anything was applied

    with open_store(db) as store:
        store.save_applied(1, OutcomeFields(rel=1.0, gen=0.5, loc=1.0), {}, {})
    assert main(["edits", "--db", str(db), "--status", "applied"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["id", "order", "status", "prompt", "target", "rel", "gen", "loc"]
    assert lines[2].split()[:3] == ["1", "1", "applied"] and lines[2].split()[-3:] == ["1.00", "0.50", "1.00"]
    assert len(lines) == 3


def test_list_as_json_and_import_as_drafts(tmp_path, capsys):
    db = tmp_path / "ws.sqlite"
    assert main(["import", "--db", str(db), "--draft", str(FIXTURES / "edits_repeated_columns.csv")]) == 0
    capsys.readouterr()
    assert main(["edits", "--db", str(db), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["status"] for row in rows] == ["draft"] * 3
    assert rows[0]["prompt"] == "What is the capital of Atlantis?" and rows[0]["rel"] is None


def test_import_reports_each_bad_row(tmp_path, capsys):
    data = tmp_path / "mixed.csv"
    data.write_text("prompt,target\nGood?,Yes\nShort line?\n,No prompt\n")
    assert main(["import", "--db", str(tmp_path / "ws.sqlite"), str(data)]) == 0
    out = capsys.readouterr().out
    assert "Imported 1 edits" in out
    assert "line 3: 1 fields, but the header has 2" in out
    assert "line 4: the prompt is empty" in out


def test_an_unreadable_file_is_an_error_without_traceback(tmp_path, capsys):
    data = tmp_path / "notes.json"
    data.write_text("these are notes, not JSON")
    db = tmp_path / "ws.sqlite"
    assert main(["import", "--db", str(db), str(data)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and "not valid JSON" in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert not db.exists()  # nothing was created for a file that could not be read

    assert main(["edits", "--db", str(db)]) == 2
    assert "No workspace database" in capsys.readouterr().err


def test_the_default_database_comes_from_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WISE_GUI_DATA_DIR", str(tmp_path))
    assert main(["import", str(FIXTURES / "zsre_sample.json")]) == 0
    assert main(["edits"]) == 0
    assert "6 edits (6 queued)" in capsys.readouterr().out
    assert (tmp_path / "workspace.sqlite").exists()
