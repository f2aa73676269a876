"""`wise-gui apply` in a subprocess: killed in the middle of an edit, nothing committed is lost."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from test_engine import TINY_SETTINGS, requests_from
from tiny_model import FIXTURES, save_tiny_model, tiny_tokenizer
from wise_gui.core.memory_file import read_memory_file
from wise_gui.core.models import load_model
from wise_gui.store import EditStatus, import_requests, open_store
from wise_gui.store.runner import open_for_model

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


def test_a_killed_apply_keeps_every_reported_edit_and_resumes(tmp_path, tokenizer):
    records = json.loads((FIXTURES / "zsre_engine_30.json").read_text())
    model_dir = save_tiny_model(tmp_path / "tiny-model", tokenizer=tokenizer)
    db = tmp_path / "ws.sqlite"
    with open_store(db) as store:
        import_requests(store, requests_from(records, N_EDITS), status=EditStatus.QUEUED)
    command = [sys.executable, "-m", "wise_gui", "apply", "--db", str(db)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    process = subprocess.Popen(command + ["--model", str(model_dir), "--settings", SLOW_SETTINGS.to_json()],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
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

    store, editor = open_for_model(db, load_model(str(model_dir)))
    with store:
        interrupted_edit = store.get_edit(interrupted)
        assert (interrupted_edit.status, interrupted_edit.outcome) == ("queued", None)
        assert editor.state.total_edits == len(reported)
        # The last committed edit's answers and routes were recorded in exactly the state restored now;
        # they are regenerated as the runner did: one batch, target length + 4 new tokens.
        prompts = [row["prompt"] for row in last_answers]
        budget = 4 + max(len(tokenizer(" " + row["expected"], add_special_tokens=False)["input_ids"])
                         for row in last_answers)
        assert editor.generate(prompts, max_new_tokens=budget) == [row["after"] for row in last_answers]
        routes = editor.route(prompts)
        assert [d.label for d in routes] == [row["routed_to"] for row in last_answers]
        assert [d.score for d in routes] == pytest.approx([row["score"] for row in last_answers], abs=1e-6)
        assert routes[0].to_side_memory
    editor.detach()

    # Run again with the workspace's own model and settings: the queue is finished.
    finished = subprocess.run(command, capture_output=True, text=True, env=env)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    resumed = edit_ids(finished.stdout.splitlines(), "applied")
    assert resumed[0] == interrupted and set(reported).isdisjoint(resumed) and len(reported) + len(resumed) == N_EDITS
    assert integrity(db) == "ok"
    with open_store(db) as store:
        assert store.count_edits(status="applied") == N_EDITS
        assert read_memory_file(store.latest_checkpoint().path).total_edits == N_EDITS
