"""The side-memory file: bit-exact round trip, reload in a fresh process, `wise-gui export/eval`, refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_model import FIXTURES, TINY_SETTINGS, requests_from, save_tiny_model, tiny_loaded, tiny_tokenizer

from wise_gui.app.apply_loop import run_to_summary
from wise_gui.app.workspace import WorkspaceService
from wise_gui.cli import main
from wise_gui.core.datasets import load_requests
from wise_gui.core.edits import EditRequest
from wise_gui.core.evaluation import evaluate, teacher_forced
from wise_gui.core.inference import MAIN
from wise_gui.core.memory_file import (
    FORMAT_VERSION,
    MemoryFileMismatch,
    apply_to_editor,
    attach_memory_file,
    editor_identity,
    memory_file_contents,
    parse,
    save_memory_file,
)
from wise_gui.core.models import load_model
from wise_gui.core.wise.editor import WiseEditor
from wise_gui.store import EditStatus, import_requests, open_store

DATA = FIXTURES / "zsre_engine_30.json"
N_EDITS = 4
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def records():
    return json.loads(DATA.read_text())


def memories(editor):
    layout = editor.memories
    return layout.merged + layout.saved + [layout.shard]


def assert_same_state(a: WiseEditor, b: WiseEditor) -> None:
    assert [m.kind for m in memories(a)] == [m.kind for m in memories(b)]
    for x, y in zip(memories(a), memories(b)):
        assert torch.equal(x.weight, y.weight)
        assert (x.edit_ids, x.edit_scores, x.mask_seed) == (y.edit_ids, y.edit_scores, y.mask_seed)
    for name in ("total_edits", "shards_started", "merge_events"):
        assert getattr(a.memories, name) == getattr(b.memories, name)
    assert (a.edit_log, a.state.irrelevant_cursor, a.context_templates, a.layer_scale, a.settings) == (
        b.edit_log, b.state.irrelevant_cursor, b.context_templates, b.layer_scale, b.settings)


def test_the_whole_state_round_trips_bit_exactly_and_editing_goes_on_identically(tokenizer, records, tmp_path):
    # Small shards so the file holds a merged memory, a full shard and the current shard.
    settings = TINY_SETTINGS.replace(save_freq=2, merge_freq=4, n_iter=20)
    original = WiseEditor(tiny_loaded(tokenizer=tokenizer), settings)
    requests = requests_from(records, 7)
    for request in requests[:6]:
        original.apply_edit(request)
    assert [m.kind for m in memories(original)] == ["merged", "saved", "shard"]
    path = tmp_path / "memory.safetensors"
    save_memory_file(original, path)

    reloaded = attach_memory_file(tiny_loaded(tokenizer=tokenizer), path)
    assert_same_state(original, reloaded)
    # Each memory is stored as the positions and values of its changed entries (the shard being filled,
    # still equal to W, has none), named by the shard it started as.
    stored = load_file(path)
    assert sorted(n for n in stored if n.endswith(".positions")) == [f"state.memory.{i}.positions" for i in (1, 3, 4)]
    assert stored["state.memory.4.positions"].numel() == 0
    # The next edit trains the same shard with the same mask, templates and irrelevant samples.
    original.apply_edit(requests[6])
    reloaded.apply_edit(requests[6])
    assert_same_state(original, reloaded)

    # The in-memory pair of functions is the same round trip, without a file.
    third = WiseEditor(tiny_loaded(tokenizer=tokenizer), settings)
    tensors, metadata = memory_file_contents(editor_identity(original), original.settings, original.state_dict())
    parse(tensors, metadata, "test").restore_into(third)
    assert_same_state(original, third)


def test_a_first_format_file_is_still_read(tokenizer, records, tmp_path):
    """Format 1 kept a packed bit mask per memory; such files (and old workspaces' checkpoints) still load."""
    import hashlib

    from wise_gui.core.memory_file import _checksum

    editor = WiseEditor(tiny_loaded(tokenizer=tokenizer), TINY_SETTINGS.replace(n_iter=20))
    for request in requests_from(records, 2):
        editor.apply_edit(request)
    state = editor.state_dict()
    shifts = 2 ** torch.arange(7, -1, -1, dtype=torch.uint8)
    tensors, records_v1 = {}, []
    for i, record in enumerate(state.meta["memories"]):
        name = f"memory.{record['id']}"
        changed = torch.zeros(64 * 128, dtype=torch.bool)
        changed[state.tensors[f"{name}.positions"].long()] = True
        tensors[f"memory.{i}.changed"] = (changed.view(-1, 8).to(torch.uint8) * shifts).sum(-1, dtype=torch.uint8)
        tensors[f"memory.{i}.values"] = state.tensors[f"{name}.values"]
        records_v1.append({k: record[k] for k in ("kind", "edit_ids", "edit_scores", "mask_seed")} | {"mask_ratio": 0.5})
    saved = {"memories": records_v1, "total_edits": 2, "shards_started": state.meta["shards_started"],
             "merge_events": state.meta["merge_events"], "edit_log": state.meta["edit_log"],
             "irrelevant_cursor": state.meta["irrelevant_cursor"], "context_templates": state.meta["templates"],
             "layer_scale": state.meta["layer_scale"]}
    settings = json.loads(editor.settings.to_json())
    settings.pop("method")
    settings = {k: v for k, v in settings.items() if k in ("lr", "n_iter", "layer")} | {"retrieve": True,
                                                                                           "save_freq": 1, "merge_freq": 1}
    metadata = {"format": "wise-gui-memory", "format_version": "1",
                "identity": editor_identity(editor).to_json(), "state": json.dumps(saved), "settings": json.dumps(settings)}
    metadata["checksum"] = _checksum(tensors, metadata)
    old = tmp_path / "old.safetensors"
    save_file(tensors, old, metadata=metadata)
    assert hashlib.sha256(old.read_bytes()).hexdigest()  # a real file on disk
    reloaded = attach_memory_file(tiny_loaded(tokenizer=tokenizer), old, settings_override=editor.settings)
    assert [torch.equal(x.weight, y.weight) for x, y in zip(memories(editor), memories(reloaded))] == [True] * 3
    assert [d.route.memory for d in reloaded.route([r["src"] for r in records[:2]])] == [0, 1]


# ----------------------------------------------------------------------------------------------
# A workspace applied in this process, exported, and reloaded in fresh processes


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tokenizer, records):
    folder = tmp_path_factory.mktemp("memory")
    model_dir = save_tiny_model(folder / "tiny-model", tokenizer=tokenizer)
    db = folder / "ws.sqlite"
    with open_store(db) as store:
        import_requests(store, requests_from(records, N_EDITS), status=EditStatus.QUEUED)
    service = WorkspaceService(loader=lambda *_: load_model(str(model_dir)), settings_override=TINY_SETTINGS)
    service.load_model(str(model_dir))
    service.open(db)
    assert len(run_to_summary(service.apply()).applied) == N_EDITS
    editor = service.editor
    service.store.close()  # the editor stays attached, for the comparisons below
    memory = folder / "facts.safetensors"
    assert main(["export", "--db", str(db), "--out", str(memory)]) == 0
    return model_dir, memory, editor


def probe_sets(records) -> dict[str, tuple[list[str], list[str]]]:
    """Prompt and answer lists: the edits, their paraphrases, unrelated prompts."""
    edited = records[:N_EDITS]
    return {
        "edit": ([r["src"] for r in edited], [r["alt"] for r in edited]),
        "paraphrase": ([r["rephrase"] for r in edited], [r["alt"] for r in edited]),
        "unrelated": ([r["loc"] for r in records[:8]], [r["loc_ans"] for r in records[:8]]),
    }


# Runs in a fresh interpreter: only the model folder, the memory file and the core package.
RELOAD_SCRIPT = textwrap.dedent("""
    import json, sys
    from safetensors.torch import save_file
    from wise_gui.core.edits import EditRequest
    from wise_gui.core.evaluation import teacher_forced
    from wise_gui.core.memory_file import attach_memory_file
    from wise_gui.core.models import load_model
    from wise_gui.core.tokens import pad_id, pad_rows

    model_dir, memory, probes_path, out = sys.argv[1:]
    probes = json.load(open(probes_path))
    editor = attach_memory_file(load_model(model_dir), memory)
    result, logits = {}, {}
    for name, (prompts, answers) in probes["sets"].items():
        result[name] = [[d.route.memory, d.route.score] for d in editor.route(prompts)]
        p = editor.prompter
        batch = pad_rows([p.with_target(p.question(q), a) for q, a in zip(prompts, answers)], pad_id(editor.tokenizer))
        with editor.layer.routed(batch.score_mask):
            logits[name] = editor._logits(batch).contiguous()
    edits = probes["sets"]["edit"]
    editor.apply_edit(EditRequest(*probes["next_edit"]))
    result["after_next_edit"] = {
        "routes": [d.route.memory for d in editor.route(edits[0])],
        "rel": [t.accuracy for t in teacher_forced(editor, edits[0], edits[1])],
        "answers": [a.text for a in editor.generate(edits[0], max_new_tokens=8)],
        "total_edits": editor.state.total_edits,
    }
    json.dump(result, open(out + ".json", "w"))
    save_file(logits, out + ".safetensors")
""")


def test_a_fresh_process_reproduces_routing_and_logits_and_can_go_on_editing(exported, records, tmp_path):
    model_dir, memory, editor = exported
    sets = probe_sets(records)
    next_edit = records[N_EDITS]
    probes = tmp_path / "probes.json"
    probes.write_text(json.dumps({"sets": sets, "next_edit": [next_edit["src"], next_edit["alt"]]}))
    out = tmp_path / "reloaded"
    subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, str(model_dir), str(memory), str(probes), str(out)],
                   check=True, env=ENV, capture_output=True, text=True)
    result = json.loads(out.with_suffix(".json").read_text())
    logits = load_file(out.with_suffix(".safetensors"))

    from wise_gui.core.tokens import pad_id, pad_rows

    for name, (prompts, answers) in sets.items():
        expected_routes = editor.route(prompts)
        assert [memory for memory, _ in result[name]] == [d.route.memory for d in expected_routes], name
        assert [score for _, score in result[name]] == pytest.approx([d.route.score for d in expected_routes], abs=1e-6)
        p = editor.prompter
        batch = pad_rows([p.with_target(p.question(q), a) for q, a in zip(prompts, answers)], pad_id(editor.tokenizer))
        with editor.layer.routed(batch.score_mask):
            here = editor._logits(batch)
        assert torch.allclose(logits[name], here, atol=1e-6, rtol=0), name
    assert all(memory != MAIN for memory, _ in result["edit"])
    assert any(memory == MAIN for memory, _ in result["unrelated"])  # both routes were compared

    # Editing went on in that process exactly as it goes on here, and the earlier edits still hold.
    snapshot = editor.snapshot()
    editor.apply_edit(EditRequest(next_edit["src"], next_edit["alt"]))
    prompts, targets = sets["edit"]
    later = result["after_next_edit"]
    assert later["total_edits"] == editor.state.total_edits == N_EDITS + 1
    assert later["routes"] == [d.route.memory for d in editor.route(prompts)]
    assert all(route != MAIN for route in later["routes"])
    assert later["rel"] == [t.accuracy for t in teacher_forced(editor, prompts, targets)]
    assert later["answers"] == [a.text for a in editor.generate(prompts, max_new_tokens=8)]
    editor.restore(snapshot)


def test_eval_command_gives_the_in_process_metrics(exported, tmp_path):
    model_dir, memory, editor = exported
    out = tmp_path / "eval.json"
    subprocess.run([sys.executable, "-m", "wise_gui", "eval", "--memory", str(memory), "--data", str(DATA),
                    "--limit", str(N_EDITS), "--json", str(out), "--model", str(model_dir)],
                   check=True, env=ENV, capture_output=True, text=True)
    result = json.loads(out.read_text())
    expected = evaluate(editor, load_requests(DATA, limit=N_EDITS), edit_indices=list(range(N_EDITS)))
    assert result["n_edits"] == N_EDITS and result["layer"] == TINY_SETTINGS.layer
    for key in ("rel", "gen", "loc", "gen_success"):
        assert result[key] == getattr(expected.mean, key), key
    assert result["per_edit"] == json.loads(json.dumps([edit.to_dict() for edit in expected.edits]))
    assert result["rel"] > 0


# ----------------------------------------------------------------------------------------------
# Refusals


def truncated(path, tmp_path):
    data = path.read_bytes()
    target = tmp_path / "truncated.safetensors"
    target.write_bytes(data[: len(data) - 100])
    return target


def tampered(path, tmp_path):
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01  # one bit of the last side memory's values
    target = tmp_path / "tampered.safetensors"
    target.write_bytes(bytes(data))
    return target


def newer_version(path, tmp_path):
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        metadata = {**handle.metadata(), "format_version": "99"}
    target = tmp_path / "future.safetensors"
    save_file(load_file(path), target, metadata=metadata)
    return target


def not_a_memory_file(path, tmp_path):
    target = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(3)}, target, metadata={"format": "pt"})
    return target


def missing(path, tmp_path):
    return tmp_path / "nowhere.safetensors"


@pytest.mark.parametrize("damage, message", [
    (truncated, "is truncated or damaged"),
    (tampered, "checksum does not match"),
    (newer_version, f"format version 99, but this wise-gui reads versions up to {FORMAT_VERSION}"),
    (not_a_memory_file, "is not a WISE memory file"),
    (missing, "No memory file at"),
])
def test_eval_refuses_a_damaged_or_unknown_file(exported, tmp_path, capsys, damage, message):
    model_dir, memory, _ = exported
    broken = damage(memory, tmp_path)
    code = main(["eval", "--memory", str(broken), "--data", str(DATA), "--limit", "1", "--model", str(model_dir)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith("error: ") and message in captured.err
    assert "Traceback" not in captured.err + captured.out


def test_eval_refuses_another_model(exported, tmp_path, tokenizer, capsys):
    _, memory, _ = exported
    other = save_tiny_model(tmp_path / "other-model", seed=1, tokenizer=tokenizer)
    code = main(["eval", "--memory", str(memory), "--data", str(DATA), "--limit", "1", "--model", str(other)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "same configuration, but the original weight of model.layers.3.mlp.down_proj differs" in err

    gpt2 = tiny_loaded(tokenizer=tokenizer, family="gpt2")
    with pytest.raises(MemoryFileMismatch, match=r"was made for the model 'tiny-model' .*config hash"):
        attach_memory_file(gpt2, memory)
    WiseEditor(gpt2).detach()  # the refused attach left the model free for an editor


def test_a_file_for_another_layer_is_refused(exported, tokenizer):
    _, memory, _ = exported
    editor = WiseEditor(load_model(str(exported[0])), TINY_SETTINGS.replace(layer=2))
    with pytest.raises(MemoryFileMismatch, match="for the layer model.layers.3.mlp.down_proj, but this editor edits "
                                                 "model.layers.2.mlp.down_proj"):
        apply_to_editor(editor, memory)
    assert editor.state.total_edits == 0
