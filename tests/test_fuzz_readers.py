"""Readers of outside files, fed a few hundred damaged variants each: a clear error (a WiseGuiError with a
message) or a valid result, never another exception, a hang or a huge allocation."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_model import TINY_SETTINGS, requests_from, tiny_loaded

from wise_gui.core.datasets import read_dataset
from wise_gui.core.errors import WiseGuiError
from wise_gui.core.memory_file import MemoryFile, read_delta, read_memory_file, save_memory_file
from wise_gui.core.models import load_model
from wise_gui.core.wise.editor import WiseEditor
from wise_gui.core.wise.state import state_delta
from wise_gui.store.checkpoints import read_checkpoint

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
                database=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory, shared_tokenizer, records):
    """A memory file and a delta checkpoint of a tiny editor with two edits."""
    from wise_gui.core.memory_file import delta_contents
    from wise_gui.store.checkpoints import write_checkpoint_atomic

    folder = tmp_path_factory.mktemp("valid")
    editor = WiseEditor(tiny_loaded(tokenizer=shared_tokenizer), TINY_SETTINGS.replace(n_iter=3))
    first, second = requests_from(records, 2)
    editor.apply_edit(first)
    before = editor.state_dict()
    editor.apply_edit(second)
    save_memory_file(editor, folder / "memory.safetensors")
    write_checkpoint_atomic(folder / "delta.safetensors",
                            *delta_contents(editor.settings, state_delta(before, editor.state_dict()), 2))
    return (folder / "memory.safetensors").read_bytes(), (folder / "delta.safetensors").read_bytes()


CUTS = st.integers(min_value=0, max_value=2**20)
FLIPS = st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), max_size=4)


def damaged(data: bytes, draw_cut: int, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data[:draw_cut])
    for position, value in flips:
        if out:
            out[position % len(out)] ^= value or 1
    return bytes(out)


def header_of(data: bytes) -> dict:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length])


def with_header(data: bytes, header: dict) -> bytes:
    (length,) = struct.unpack("<Q", data[:8])
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + length:]


def expect_clear(read, path: Path):
    """`read(path)` either succeeds or raises a WiseGuiError that says something."""
    try:
        return read(path)
    except WiseGuiError as exc:
        assert str(exc).strip()
        return None


# ---- memory files and checkpoints -------------------------------------------------------------


@FUZZ
@given(cut=CUTS, flips=FLIPS)
def test_a_truncated_or_flipped_memory_file_is_refused_with_a_reason(tmp_path, valid_files, cut, flips):
    path = tmp_path / "m.safetensors"
    data = valid_files[0]
    path.write_bytes(damaged(data, min(cut, len(data)), flips))
    result = expect_clear(read_memory_file, path)
    assert result is None or isinstance(result, MemoryFile)


@FUZZ
@given(field=st.sampled_from(["format", "format_version", "identity", "settings", "state", "checksum"]),
       value=json_values)
def test_memory_file_metadata_of_the_wrong_type_is_refused(tmp_path, valid_files, field, value):
    data = valid_files[0]
    header = header_of(data)
    header["__metadata__"][field] = value if isinstance(value, str) else json.dumps(value)
    path = tmp_path / "m.safetensors"
    path.write_bytes(with_header(data, header))
    expect_clear(read_memory_file, path)


@FUZZ
@given(shape=st.lists(st.integers(min_value=0, max_value=2**40), min_size=1, max_size=3),
       end=st.integers(min_value=0, max_value=2**62))
def test_a_header_claiming_gigabytes_is_refused_without_allocating_them(tmp_path, valid_files, shape, end):
    data = valid_files[0]
    header = header_of(data)
    name = next(k for k in header if k != "__metadata__")
    header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [0, end]}
    path = tmp_path / "m.safetensors"
    path.write_bytes(with_header(data, header))
    expect_clear(read_memory_file, path)


@FUZZ
@given(cut=CUTS, flips=FLIPS)
def test_a_damaged_delta_checkpoint_is_refused_with_a_reason(tmp_path, valid_files, cut, flips):
    path = tmp_path / "d.safetensors"
    data = valid_files[1]
    path.write_bytes(damaged(data, min(cut, len(data)), flips))
    expect_clear(read_delta, path)
    expect_clear(read_checkpoint, path)


def test_a_header_length_of_exabytes_is_refused(tmp_path, valid_files):
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", 2**62) + valid_files[0][8:])
    with pytest.raises(WiseGuiError, match="damaged"):
        read_memory_file(path)


# ---- datasets ---------------------------------------------------------------------------------


@FUZZ
@given(document=json_values)
def test_any_json_document_is_read_or_refused_with_a_reason(tmp_path, document):
    path = tmp_path / "edits.json"
    path.write_text(json.dumps(document))
    result = expect_clear(read_dataset, path)
    if result is not None:
        assert all(r.prompt.strip() and r.target.strip() for r in result.requests)


@FUZZ
@given(records=st.lists(st.dictionaries(st.sampled_from(["src", "alt", "rephrase", "loc", "loc_ans", "prompt",
                                                         "target_new", "subject", "ground_truth", "answers"]),
                                        json_values, max_size=6), max_size=6))
def test_zsre_like_records_with_wrong_types_become_row_problems(tmp_path, records):
    path = tmp_path / "edits.json"
    path.write_text(json.dumps(records))
    result = expect_clear(read_dataset, path)
    if result is not None:
        assert len(result.requests) + len(result.problems) <= len(records)


@FUZZ
@given(text=st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=400),
       header=st.sampled_from(["prompt,target\n", "prompt,target,paraphrase,loc,loc_ans\n", ""]))
def test_any_csv_text_is_read_or_refused_with_a_reason(tmp_path, text, header):
    path = tmp_path / "edits.csv"
    path.write_text(header + text, encoding="utf-8")
    expect_clear(read_dataset, path)


@FUZZ
@given(data=st.binary(max_size=300))
def test_bytes_that_are_not_text_are_refused(tmp_path, data):
    for name in ("edits.json", "edits.csv"):
        path = tmp_path / name
        path.write_bytes(data)
        expect_clear(read_dataset, path)


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_json_is_refused(tmp_path, depth):
    path = tmp_path / "edits.json"
    path.write_text("[" * depth + "]" * depth)
    expect_clear(read_dataset, path)


# ---- model folders ----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          database=None)
@given(config=json_values)
def test_a_model_folder_with_any_config_is_refused_with_a_reason(tmp_path, config):
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WiseGuiError) as caught:
        load_model(str(folder))
    assert str(caught.value).strip()


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory) -> bytes:
    import gguf
    import numpy as np

    path = tmp_path_factory.mktemp("gguf") / "small.gguf"
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          database=None)
@given(cut=CUTS, flips=FLIPS)
def test_a_damaged_gguf_is_refused_with_a_reason(tmp_path, small_gguf, cut, flips):
    path = tmp_path / "model.gguf"
    path.write_bytes(damaged(small_gguf, min(cut, len(small_gguf)), flips))
    with pytest.raises(WiseGuiError) as caught:
        load_model(str(path))
    assert str(caught.value).strip()


def test_a_folder_with_only_a_pickled_checkpoint_never_runs_its_code(tmp_path):
    """A `.bin` that carries code (a pickle calling os.system) is read with weights_only: refused, not run."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                                                    "hidden_size": 8, "intermediate_size": 16,
                                                    "num_hidden_layers": 1, "num_attention_heads": 2,
                                                    "vocab_size": 16}))
    marker = tmp_path / "ran"
    # Pickle opcodes written out by hand (protocol 0): call os.system("touch <marker>") when unpickled.
    payload = f"cos\nsystem\n(Vtouch '{marker}'\ntR.".encode()
    (folder / "pytorch_model.bin").write_bytes(payload)
    with pytest.raises(WiseGuiError) as caught:
        load_model(str(folder))
    assert str(caught.value).strip()
    assert not marker.exists()
