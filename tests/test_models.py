"""Model loading: the embedded default model, the cache, and a clear message for every bad path."""

from __future__ import annotations

import pytest
import torch
from tiny_model import save_tiny_model, tiny_tokenizer
from transformers import BertConfig, BertModel

from wise_gui.cli import main
from wise_gui.core.inference import BareModel
from wise_gui.core.models import ModelLoadError, default_cache_folder, load_model


@pytest.fixture(scope="module")
def default_model():
    return load_model("default")


@pytest.mark.slow
def test_default_model_answers_paris(default_model):
    assert default_model.name == "SmolLM2-135M-Instruct"
    assert default_model.dtype == torch.float32 and default_model.device.type == "cpu"
    assert default_model.has_chat_template
    answer = BareModel(default_model).generate(["The capital of France is"], max_new_tokens=8, first_sentence_only=False)
    assert "Paris" in answer[0].text


@pytest.mark.slow
def test_second_load_uses_the_safetensors_cache(default_model):
    cached = default_cache_folder()
    assert (cached / "config.json").exists() and any(cached.glob("*.safetensors"))
    again = load_model("default")
    assert again.from_cache


@pytest.mark.slow
def test_first_load_converts_the_gguf_once(tmp_path, monkeypatch):
    monkeypatch.setenv("WISE_GUI_CACHE_DIR", str(tmp_path))
    messages = []
    first = load_model("default", progress=lambda message, fraction: messages.append(message))
    assert not first.from_cache and any("Converting" in m for m in messages)
    assert load_model("default").from_cache


@pytest.mark.slow
def test_generate_command_prints_the_answer(capsys):
    assert main(["generate", "--model", "default", "--raw", "--prompt", "The capital of France is"]) == 0
    assert "Paris" in capsys.readouterr().out


@pytest.mark.slow
def test_a_question_is_asked_through_the_chat_template_and_never_answered_blank(capsys):
    # Asked as a raw completion, SmolLM2 ends this question at once (an empty answer); through its chat
    # template, the default, it answers.
    assert main(["generate", "--model", "default", "--prompt", "What is the capital of France?"]) == 0
    printed = capsys.readouterr().out.strip()
    assert "Paris" in printed and printed.splitlines()[0].strip()


def test_missing_path_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match="Model path not found"):
        load_model(str(tmp_path / "nowhere"))


def test_folder_without_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match="No model found"):
        load_model(str(tmp_path))


def test_model_that_is_not_a_causal_lm(tmp_path):
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         vocab_size=100)).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="not a causal language model"):
        load_model(str(tmp_path))


def test_truncated_weights_file(tmp_path):
    folder = tmp_path / "tiny"
    save_tiny_model(folder, tokenizer=tiny_tokenizer())
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        load_model(str(folder))


def test_gguf_architecture_transformers_cannot_read(tmp_path):
    import gguf

    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), arch="rwkv-unknown")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", torch.zeros(4, 4).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelLoadError, match="GGUF"):
        load_model(str(path))


def test_cli_reports_bad_path_without_traceback(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "missing"), "--prompt", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Model path not found") and "Traceback" not in err
