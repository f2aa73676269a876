"""`wise-gui apply` in a subprocess: killed in the middle of an edit, nothing committed is lost; one
writer per workspace, told to a second process that tries."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest
from tiny_model import FIXTURES, TINY_SETTINGS, requests_from, save_tiny_model, tiny_tokenizer

from wise_gui.app.apply_loop import answer_cap
from wise_gui.app.workspace import WorkspaceService, export_workspace_memory
from wise_gui.core.evaluation import QuestionAnswer
from wise_gui.core.memory_file import read_memory_file
from wise_gui.core.models import load_model
from wise_gui.store import EditStatus, WorkspaceInUse, import_requests, open_store

N_EDITS = 4
# No early stop, so each edit trains long enough for the kill to land inside it.
SLOW_SETTINGS = TINY_SETTINGS.replace(n_iter=300, early_stop_loss=0.0)


@pytest.fixture
def tokenizer():
    return tiny_tokenizer()


def integrity(db) -> str:
    with sqlite3.connect(db) as connection:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]


def edit_ids(lines: list[str], prefix: str) -> list[int]:
    return [int(line.split()[1]) for line in lines if line.startswith(prefix + " ")]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def queued_workspace(tmp_path, tokenizer, n_edits=N_EDITS):
    records = json.loads((FIXTURES / "zsre_engine_30.json").read_text())
    model_dir = save_tiny_model(tmp_path / "tiny model é", tokenizer=tokenizer)  # a path with a space and unicode
    db = tmp_path / "a workspace ü.sqlite"
    with open_store(db) as store:
        import_requests(store, requests_from(records, n_edits), status=EditStatus.QUEUED)
    return model_dir, db


def start_apply(db, model_dir, settings=SLOW_SETTINGS) -> subprocess.Popen:
    command = [sys.executable, "-m", "wise_gui", "apply", "--db", str(db), "--model", str(model_dir),
               "--settings", settings.to_json()]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)


def service_for(model_dir) -> WorkspaceService:
    service = WorkspaceService(loader=lambda *_: load_model(str(model_dir)))
    service.load_model(str(model_dir))
    return service


def test_a_killed_apply_keeps_every_reported_edit_and_resumes(tmp_path, tokenizer):
    model_dir, db = queued_workspace(tmp_path, tokenizer)
    command = [sys.executable, "-m", "wise_gui", "apply", "--db", str(db)]
    process = start_apply(db, model_dir)
    lines, killed = [], False
    for line in process.stdout:
        lines.append(line)
        if line.startswith("applying ") and edit_ids(lines, "applied"):
            process.kill()  # SIGKILL while the edit after a committed one is training
            killed = True
            break
    process.wait()
    lines += process.stdout.read().splitlines()
    assert killed, "".join(lines)
    reported, interrupted = edit_ids(lines, "applied"), edit_ids(lines, "applying")[-1]
    assert interrupted not in reported

    assert integrity(db) == "ok"
    with open_store(db) as store:
        assert [store.get_edit(i).status for i in reported] == ["applied"] * len(reported)
        assert store.count_edits(status="applied") == len(reported)
        assert store.get_edit(interrupted).status == "applying"
        last_answers = store.latest_outcome(reported[-1]).fields.answers

    service = service_for(model_dir)
    service.open(db)  # the lock the killed process held is recognised as stale and taken over
    store, editor = service.store, service.editor
    try:
        assert store.lock.stale is not None and store.lock.stale.pid == process.pid
        interrupted_edit = store.get_edit(interrupted)
        assert (interrupted_edit.status, interrupted_edit.outcome) == ("queued", None)
        assert editor.state.total_edits == len(reported)
        # The last committed edit's answers and routes were recorded in exactly the state restored now;
        # they are regenerated as the loop did: one batch in the asked form, the same token budget.
        answers = [QuestionAnswer.from_dict(row) for row in last_answers]
        cap = answer_cap(editor, store.get_edit(reported[-1]).request)
        again = editor.generate([a.question for a in answers], form=answers[0].form, max_new_tokens=cap)
        assert [a.text for a in again] == [a.after for a in answers]
        assert [a.route.memory for a in again] == [a.route.memory for a in answers]
        assert [a.route.score for a in again] == pytest.approx([a.route.score for a in answers], abs=1e-6)
        assert again[0].route.to_side_memory
    finally:
        service.close()

    # Run again with the workspace's own model and settings: the queue is finished.
    finished = subprocess.run(command, capture_output=True, text=True, env=ENV)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    resumed = edit_ids(finished.stdout.splitlines(), "applied")
    assert resumed[0] == interrupted and set(reported).isdisjoint(resumed) and len(reported) + len(resumed) == N_EDITS
    assert integrity(db) == "ok"
    with open_store(db) as store:
        assert store.count_edits(status="applied") == N_EDITS
    assert export_workspace_memory(db, tmp_path / "out.safetensors").total_edits == N_EDITS
    assert read_memory_file(tmp_path / "out.safetensors").total_edits == N_EDITS


def test_a_workspace_in_use_is_refused_with_its_holder_and_opens_read_only(tmp_path, tokenizer):
    model_dir, db = queued_workspace(tmp_path, tokenizer, n_edits=3)
    # The first edit trains for minutes: the other process holds the workspace while this test runs.
    process = start_apply(db, model_dir, SLOW_SETTINGS.replace(n_iter=100_000))
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if line.startswith("applying "):
                break
        # A second writer, in this process, is told who holds the workspace and since when.
        service = service_for(model_dir)
        with pytest.raises(WorkspaceInUse, match=rf"in use by process {process.pid} .* since "):
            service.open(db)
        assert service.editor is None and service.store is None
        # ... and a second `wise-gui apply` exits with status 2 and the same reason.
        second = subprocess.run([sys.executable, "-m", "wise_gui", "apply", "--db", str(db)], capture_output=True,
                                text=True, env=ENV, timeout=300)
        assert second.returncode == 2 and f"in use by process {process.pid}" in second.stderr
        # Read-only, the workspace can be browsed and probed, not applied to.
        service.open(db, read_only=True)
        assert service.read_only and service.store.count_edits(status="applying") == 1
        assert service.probe(json.loads((FIXTURES / "zsre_engine_30.json").read_text())[0]["src"]).edited.text
        with pytest.raises(Exception, match="read-only"):
            service.apply()
        service.close()
    finally:
        process.kill()
        process.wait()
    assert integrity(db) == "ok"
