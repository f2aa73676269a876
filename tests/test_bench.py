"""The benchmark suite on the tiny random Llama: chunks with rollback, several methods and T in one run,
the outputs (JSON, Markdown, PNG) and a clean stop on Ctrl+C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_model import FIXTURES, TINY_SETTINGS, requests_from, save_tiny_model, tiny_loaded

from wise_gui.cli import bench_cmd, main
from wise_gui.core.baselines import FtSettings, GraceSettings
from wise_gui.core.bench import (
    SUBJECT_GROUPS,
    BenchResult,
    build_method,
    combine_chunks,
    profile_for,
    run_benchmark,
    run_suite,
    split_by_subject,
)
from wise_gui.core.datasets import load_requests
from wise_gui.core.edits import EditRequest
from wise_gui.core.evaluation import Scores
from wise_gui.core.memory_file import read_memory_file

REPO = Path(__file__).resolve().parents[1]
LAYER = 3
FAST = {"grace": GraceSettings(n_iter=20), "ft-l": FtSettings(n_iter=5)}
# The keys `wise-gui bench --json` wrote before several methods and T: every row keeps them.
SINGLE_RESULT_KEYS = {"model", "layer", "n_edits", "rel", "gen", "loc", "gen_success", "seconds_per_edit",
                      "peak_rss_mb"}


@pytest.fixture(scope="module")
def records():
    return json.loads((FIXTURES / "zsre_engine_30.json").read_text())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, shared_tokenizer):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", tokenizer=shared_tokenizer)


WISE_LAYOUTS = {"wise": dict(method="wise-merge", save_freq=500, merge_freq=1000), "wise-retrieve": {}}


def method_settings(name, settings=TINY_SETTINGS):
    return settings.replace(**WISE_LAYOUTS[name])


def bench_args(model_dir, out: Path, *extra: str) -> list[str]:
    small_wise = json.dumps({k: v for k, v in TINY_SETTINGS.replace(n_iter=20, n_templates=1, n_irrelevant=2).to_dict().items()
                             if k not in ("method", "save_freq", "merge_freq", "mask_ratio", "mask_kind",
                                          "route_candidates", "key_similarity", "lr")})
    return ["bench", "--model", str(model_dir), "--data", str(FIXTURES / "zsre_sample.json"), "--layer", str(LAYER),
            "--settings", small_wise, "--grace-settings", '{"n_iter": 20}', "--ft-settings", '{"n_iter": 5}',
            "--json", str(out / "rows.json"), "--markdown", str(out / "rows.md"), *extra]


def test_chunks_start_from_the_unedited_state_and_are_averaged(shared_tokenizer, records):
    loaded = tiny_loaded(tokenizer=shared_tokenizer)
    requests = requests_from(records, 4)
    built = []

    def make(name):
        built.append(build_method(name, loaded, TINY_SETTINGS, FAST))
        return built[-1]


    codebook_labels = []
    outcome = run_suite(make, ["grace"], requests, [2],
                        on_progress=lambda *_: codebook_labels.append(list(built[-1].codebook.labels)))
    (row,) = outcome.results
    targets = [r.target for r in requests]
    # The second chunk's first edit finds an empty codebook: the first chunk was rolled back.
    assert codebook_labels == [targets[:1], targets[:2], targets[2:3], targets[2:4]]
    assert (row.chunk_size, row.chunks, row.n_edits, row.complete) == (2, 2, 4, True)
    assert [e["prompt"] for e in row.per_edit] == [r.prompt for r in requests]
    assert row.rel == pytest.approx(sum(e["rel"] for e in row.per_edit) / 4)
    # ... and scores exactly what a fresh GRACE scores on those two records alone.
    (fresh,) = run_benchmark(build_method("grace", loaded, TINY_SETTINGS, FAST), requests[2:])
    assert [e["rel"] for e in row.per_edit[2:]] == [e["rel"] for e in fresh.per_edit]


def test_combine_chunks_averages_each_metric_over_the_chunks_that_have_it():
    chunks = [BenchResult("m", 3, 2, 0, scores=Scores(rel=0.5, gen=None), seconds_per_edit=1.0, peak_rss_mb=10,
                          per_edit=[{"a": 1}]),
              BenchResult("m", 3, 2, 2, scores=Scores(rel=1.0, gen=0.2), seconds_per_edit=3.0, peak_rss_mb=12,
                          per_edit=[{"b": 2}])]
    row = combine_chunks(chunks, complete=False)
    assert (row.rel, row.gen, row.seconds_per_edit, row.peak_rss_mb) == (0.75, 0.2, 2.0, 12)
    assert (row.start, row.n_edits, row.chunks, row.complete, row.per_edit) == (0, 4, 2, False, [{"a": 1}, {"b": 2}])


def test_every_method_leaves_the_base_model_as_it_was(shared_tokenizer, records):
    loaded = tiny_loaded(tokenizer=shared_tokenizer)
    down = loaded.model.model.layers[LAYER].mlp.down_proj
    weight = down.weight.detach().clone()
    settings = TINY_SETTINGS.replace(n_iter=20, n_templates=1)
    wise = {name: method_settings(name, settings) for name in WISE_LAYOUTS}
    outcome = run_suite(lambda name: build_method(name, loaded, wise.get(name), FAST, layer=LAYER),
                        ["wise", "wise-retrieve", "ft-l", "grace"], requests_from(records, 2), [2])
    assert [r.method for r in outcome.results] == ["wise", "wise-retrieve", "ft-l", "grace"]
    assert all(r.layer == LAYER for r in outcome.results)
    assert loaded.model.model.layers[LAYER].mlp.down_proj is down and torch.equal(down.weight, weight)
    sizes = {r.method: r.added_state_bytes for r in outcome.results}
    assert sizes["ft-l"] == 0 and sizes["grace"] > 0 and sizes["wise"] > 0
    assert all(r.tokens_per_second > 0 and r.tokens_per_second_bare > 0 for r in outcome.results)


@pytest.mark.parametrize("name, metric", [("hallucination", "perplexity"), ("temporal", "ood")])
def test_long_form_datasets_get_their_own_metric_and_no_generation_success(shared_tokenizer, name, metric):
    loaded = tiny_loaded(tokenizer=shared_tokenizer)
    requests = load_requests(FIXTURES / f"{name}_sample.json", limit=2)
    (result,) = run_benchmark(build_method("ft-l", loaded, TINY_SETTINGS, FAST), requests, profile=profile_for(name))
    assert getattr(result.scores, metric) is not None and result.loc is not None
    assert result.gen_success is None
    if metric == "perplexity":
        assert all(0 < e["perplexity"] <= 100 for e in result.per_edit)


def test_a_multi_method_run_writes_one_row_per_method_and_T(model_dir, tmp_path, capsys):
    code = main(bench_args(model_dir, tmp_path, "--limit", "2", "--method", "wise,wise-retrieve,ft-l,grace",
                           "--chunk", "1,2"))
    assert code == 0
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [(r["method"], r["chunk_size"], r["chunks"]) for r in rows] == [
        (m, t, 2 // t) for m in ("wise", "wise-retrieve", "ft-l", "grace") for t in (1, 2)]
    assert all(SINGLE_RESULT_KEYS <= set(r) and r["n_edits"] == 2 and r["complete"] for r in rows)
    table = (tmp_path / "rows.md").read_text().splitlines()
    assert table[0].startswith("| method | T | chunks | Rel | Gen | Loc |")
    assert [line.split(" | ")[0:2] for line in table[2:]] == [
        [f"| {r['method']}", str(r["chunk_size"])] for r in rows]
    assert capsys.readouterr().out.strip() == "\n".join(table)


def test_a_plain_bench_runs_the_default_preset_once_and_exports_it(model_dir, tmp_path, capsys):
    memory = tmp_path / "memory.safetensors"
    assert main(bench_args(model_dir, tmp_path, "--limit", "2", "--export", str(memory))) == 0
    (row,) = json.loads((tmp_path / "rows.json").read_text())
    assert (row["method"], row["n_edits"], row["chunk_size"], row["chunks"]) == ("wise-index", 2, 2, 1)
    assert "Rel" in capsys.readouterr().out
    assert read_memory_file(memory).total_edits == 2  # saved after the last edit, before the rollback
    evaluated = tmp_path / "eval.json"
    assert main(["eval", "--memory", str(memory), "--model", str(model_dir), "--data", str(FIXTURES / "zsre_sample.json"),
                 "--limit", "2", "--json", str(evaluated)]) == 0
    assert json.loads(evaluated.read_text())["method"] == "wise-index"  # not the method it is a kind of
    # A part of the memory's edits is checked against the memories that hold them, not the first ones.
    second = tmp_path / "second.json"
    assert main(["eval", "--memory", str(memory), "--model", str(model_dir), "--data", str(FIXTURES / "zsre_sample.json"),
                 "--start", "1", "--limit", "1", "--json", str(second)]) == 0
    whole, part = (json.loads(path.read_text())["per_edit"] for path in (evaluated, second))
    assert [form["routed_own"] for form in part[0]["live"].values()] == [
        form["routed_own"] for form in whole[1]["live"].values()] == [1.0] * len(whole[1]["live"])


@pytest.mark.parametrize("extra, message", [
    (["--method", "wise,rome"], "--method"),
    (["--chunk", "3"], "--chunk"),
    (["--grace-settings", '{"radius": 1}'], "--grace-settings"),
    (["--method", "grace", "--export", "memory.safetensors"], "--export"),
    (["--eval-at", "1", "--chunk", "1"], "--eval-at"),
    (["--query-format", "spoken"], "--query-format"),
    (["--method", "grace", "--checkpoint", "run.checkpoint"], "--checkpoint"),
])
def test_bad_options_are_refused_with_a_message(model_dir, tmp_path, capsys, extra, message):
    assert main(bench_args(model_dir, tmp_path, "--limit", "2", *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "rows.json").exists()


def test_ctrl_c_stops_cleanly_and_writes_what_was_measured(model_dir, tmp_path, monkeypatch):
    calls = []

    def interrupt_on_second_edit(self, label, done, total, elapsed):
        calls.append(label)
        if done == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(bench_cmd.ProgressLine, "__call__", interrupt_on_second_edit)
    code = main(bench_args(model_dir, tmp_path, "--limit", "3", "--method", "grace,ft-l", "--chunk", "1"))
    assert code == 130
    assert calls == ["grace T=1 chunk 1/3", "grace T=1 chunk 2/3"]
    # Chunk 1 was evaluated; chunk 2 was cut short, so the row averages one chunk and says so.
    (row,) = json.loads((tmp_path / "rows.json").read_text())
    assert (row["method"], row["chunks"], row["n_edits"], row["complete"]) == ("grace", 1, 1, False)
    assert "interrupted" in (tmp_path / "rows.md").read_text()


def test_ctrl_c_in_a_long_sequential_run_keeps_the_rows_of_its_earlier_t(model_dir, tmp_path, monkeypatch):
    def interrupt_on_third_edit(self, label, done, total, elapsed):
        if done == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(bench_cmd.ProgressLine, "__call__", interrupt_on_third_edit)
    code = main(bench_args(model_dir, tmp_path, "--limit", "4", "--eval-at", "2", "--method", "grace"))
    assert code == 130
    (row,) = json.loads((tmp_path / "rows.json").read_text())
    assert (row["method"], row["chunk_size"], row["n_edits"]) == ("grace", 2, 2)


@pytest.mark.parametrize("stop, code", [(signal.SIGINT, 130), (signal.SIGKILL, -signal.SIGKILL)])
def test_a_bench_started_in_the_background_keeps_its_rows_when_stopped(model_dir, tmp_path, stop, code):
    """A shell starts background jobs with SIGINT ignored; `kill -INT` must still stop a long run. A run
    killed outright keeps the rows it had measured: each is written when its T is reached."""
    args = bench_args(model_dir, tmp_path, "--limit", "30", "--eval-at", "2", "--method", "grace")
    args[args.index("--data") + 1] = str(FIXTURES / "zsre_engine_30.json")
    log = tmp_path / "stderr.txt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from wise_gui.entry import main; sys.exit(main(sys.argv[1:]))", *args],
            stdout=subprocess.DEVNULL, stderr=stderr, env=env,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        deadline = time.monotonic() + 240
        while b"edit 4/30" not in log.read_bytes() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        process.send_signal(stop)
        assert process.wait(timeout=120) == code, log.read_text()
    (row,) = json.loads((tmp_path / "rows.json").read_text())
    assert (row["method"], row["n_edits"]) == ("grace", 2)


def _stop_at_edit(monkeypatch, edit: int) -> None:
    def interrupt(self, label, done, total, elapsed):
        if done == edit:
            raise KeyboardInterrupt

    monkeypatch.setattr(bench_cmd.ProgressLine, "__call__", interrupt)


@pytest.mark.parametrize("stop_at, resumed_after, rows_before", [(5, 3, [3]), (6, 6, [3])])
def test_a_stopped_run_continues_from_its_checkpoint_to_the_same_result(
        model_dir, tmp_path, monkeypatch, capsys, stop_at, resumed_after, rows_before):
    """A T = 1000 run outlives a session only in pieces. Stopped after edit 4, it was checkpointed at its
    evaluation point 3 and carries on from edit 4; stopped during its last evaluation, it saved its
    last edit before it and only evaluates. Either way it ends where a run never stopped ends, in every
    score and every edit's step count."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    straight.mkdir()
    stopped.mkdir()
    checkpoint = stopped / "run.checkpoint"
    assert main(bench_args(model_dir, straight, "--limit", "6", "--eval-at", "3")) == 0
    _stop_at_edit(monkeypatch, stop_at)
    assert main(bench_args(model_dir, stopped, "--limit", "6", "--eval-at", "3", "--checkpoint", str(checkpoint))) == 130
    assert "continue from the last checkpoint" in capsys.readouterr().err
    assert [r["n_edits"] for r in json.loads((stopped / "rows.json").read_text())] == rows_before
    monkeypatch.undo()
    assert main(bench_args(model_dir, stopped, "--limit", "6", "--eval-at", "3", "--checkpoint", str(checkpoint))) == 0
    expected, got = (json.loads((folder / "rows.json").read_text()) for folder in (straight, stopped))
    assert [r["n_edits"] for r in got] == [3, 6]
    assert got[1]["resumed_at"] == [resumed_after] and got[0]["resumed_at"] == []
    err = capsys.readouterr().err
    assert f"after edit {resumed_after}" in err
    assert "edit 1/6" not in err and (resumed_after == 6 or "edit 4/6" in err)  # the progress goes on from there
    for mine, theirs in zip(got, expected):
        assert mine["per_edit"] == theirs["per_edit"]  # the answers too, not only the means
        assert (mine["rel"], mine["gen"], mine["loc"]) == (theirs["rel"], theirs["gen"], theirs["loc"])
        assert mine["iterations_per_edit"] == theirs["iterations_per_edit"]
        assert len(mine["edit_seconds"]) == mine["n_edits"] and mine["run_seconds"] > 0


def test_a_checkpoint_of_another_run_is_refused_and_kept(model_dir, tmp_path, monkeypatch, capsys):
    checkpoint = tmp_path / "run.checkpoint"
    _stop_at_edit(monkeypatch, 3)
    assert main(bench_args(model_dir, tmp_path, "--limit", "4", "--eval-at", "2", "--checkpoint", str(checkpoint))) == 130
    saved = checkpoint.read_bytes()
    capsys.readouterr()
    assert main(bench_args(model_dir, tmp_path, "--limit", "5", "--eval-at", "2", "--checkpoint", str(checkpoint))) == 2
    assert "belongs to another run (its eval_at, n_records, records differ)" in capsys.readouterr().err
    assert checkpoint.read_bytes() == saved
    checkpoint.write_bytes(saved[: len(saved) // 2])
    assert main(bench_args(model_dir, tmp_path, "--limit", "4", "--eval-at", "2", "--checkpoint", str(checkpoint))) == 2
    assert "truncated or damaged" in capsys.readouterr().err


def test_one_sequential_run_is_evaluated_at_each_T_in_raw_and_chat_form_with_its_loc_per_file(
        model_dir, tmp_path, capsys):
    second = tmp_path / "second.json"
    second.write_text(json.dumps(json.loads((FIXTURES / "zsre_engine_30.json").read_text())[:2]))
    args = bench_args(model_dir, tmp_path, "--start", "4", "--limit", "4", "--eval-at", "2", "--method", "wise-retrieve",
                      "--pool", f"{FIXTURES / 'zsre_engine_30.json'}:10")
    data = args.index("--data")
    args[data + 2:data + 2] = [str(second)]  # the sample's last 2 of 6 records, then the second file's 2
    assert main(args) == 0
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [(r["chunk_size"], r["n_edits"]) for r in rows] == [(2, 2), (4, 4)]
    assert len(rows[1]["edit_seconds"]) == 4 and rows[0]["edit_seconds"] == rows[1]["edit_seconds"][:2]
    # The tiny tokenizer has no chat template: the chat form falls back to raw, and says which it used.
    assert set(rows[1]["live"]) == {"raw"} and rows[1]["live"]["raw"]["prompt"] is not None
    assert set(rows[1]["by_source"]) == {"zsre_sample.json", "second.json"}
    assert rows[1]["per_edit"][0]["answers"][0]["kind"] == "prompt"


def test_edits_of_a_subject_also_edited_to_another_target_are_scored_apart():
    """ZsRE asks one fact several times with different new targets: the row says how those edits fare
    beside the ones whose subject is edited once."""
    requests = [EditRequest("Which company made USS Leedstown?", "Lockheed", subject="USS Leedstown"),
                EditRequest("Who made USS Leedstown?", "Bethlehem Steel", subject="uss leedstown "),
                EditRequest("Who built the Openfire server?", "Python", subject="Openfire"),
                EditRequest("What language is Openfire in?", "python", subject="Openfire"),  # the same target
                EditRequest("Where is Gardner Inlet?", "Antarctica", subject="Gardner Inlet")]
    scores = [Scores(rel=1.0, gen=0.2), Scores(rel=1.0, gen=0.4), Scores(rel=1.0, gen=1.0), Scores(rel=0.5, gen=0.8),
              Scores(rel=1.0, gen=0.9)]
    once, again = (split_by_subject(requests, scores)[name] for name in SUBJECT_GROUPS)
    assert (again.rel, again.gen) == pytest.approx((1.0, 0.3))
    assert (once.rel, once.gen) == pytest.approx((2.5 / 3, 0.9))
    assert split_by_subject(requests[2:], scores[2:]) == {}  # no subject edited to two targets: no split
    row = BenchResult("tiny", 3, 5, 0, scores=Scores(rel=0.9), by_subject=split_by_subject(requests, scores),
                      reedited_subject_edits=2)
    assert "subject also edited to another target (2)  1.000 / 0.300" in row.table()
    assert set(row.to_json()["by_subject"]) == set(SUBJECT_GROUPS)


def test_the_plot_script_draws_rel_gen_loc_per_method_against_T(tmp_path):
    rows = [{"model": "tiny", "layer": 3, "method": method, "chunk_size": t, "n_edits": 10, "rel": rel,
             "gen": rel / 2, "loc": 1.0, "complete": t < 100, "live": {"raw": {"prompt": rel}, "chat": {"prompt": rel}}}
            for method, base in (("wise", 0.9), ("grace", 0.95), ("ft-l", 0.5))
            for t, rel in ((1, base), (10, base - 0.1), (100, base - 0.2))]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(REPO / "scripts" / "plot_bench.py"), str(tmp_path / "rows.json"),
                    "--out", str(tmp_path / "plot.png"), "--width", "900"], check=True, env=env, capture_output=True)
    png = (tmp_path / "plot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(png[16:20], "big")
    assert width == 900
