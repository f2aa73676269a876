"""A tiny randomly initialised Llama (hidden size 64) and a word-level tokenizer, built in-process."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from wise_gui.core.edits import EditRequest, LocalityCheck
from wise_gui.core.models import LoadedModel
from wise_gui.core.wise.settings import WiseSettings

INIT_RANGE = 0.1
FIXTURES = Path(__file__).parent / "fixtures"

# What makes edits stick on a 4-layer random model (its logits are nearly flat, so it needs a
# stronger push than a trained model): the last layer, a larger shard subspace, more steps; like
# the SmolLM2 presets, relative margins and one retrieve memory per edit.
TINY_SETTINGS = WiseSettings(layer=3, lr=1.0, n_iter=100, mask_ratio=0.5, margin_scale="relative",
                             alpha=0.3, beta=2.0, gamma=1.0, n_templates=2, n_irrelevant=4, act_ratio=0.5,
                             method="wise-retrieve", save_freq=1, merge_freq=1)


def requests_from(records, n, start=0) -> list[EditRequest]:
    return [EditRequest(r["src"], r["alt"], paraphrases=(r["rephrase"],), locality=(LocalityCheck(r["loc"], r["loc_ans"]),))
            for r in records[start:start + n]]


def corpus() -> list[str]:
    records = json.loads((FIXTURES / "zsre_engine_30.json").read_text())
    texts = []
    for r in records:
        texts += [r["src"], r["alt"], r["rephrase"], r["loc"], r["loc_ans"]]
    pool = json.loads((Path(__file__).parents[1] / "resources" / "irrelevant_pool.json").read_text())["samples"]
    return texts + pool[:200] + ["I You Because Yes Q:"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<pad>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")


def tiny_loaded(seed: int = 0, n_layers: int = 4, family: str = "llama", tokenizer=None) -> LoadedModel:
    tokenizer = tokenizer or tiny_tokenizer()
    torch.manual_seed(seed)
    if family == "gpt2":
        config = GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=n_layers, n_head=4, n_positions=256,
                            bos_token_id=2, eos_token_id=2, pad_token_id=1)
        model = GPT2LMHeadModel(config)
    else:
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=n_layers,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                             bos_token_id=2, eos_token_id=2, pad_token_id=1, tie_word_embeddings=True,
                             initializer_range=INIT_RANGE)
        model = LlamaForCausalLM(config)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedModel(model=model, tokenizer=tokenizer, name=f"tiny-{family}", source="tiny",
                       device=torch.device("cpu"), dtype=torch.float32)


def save_tiny_model(folder: Path, seed: int = 0, tokenizer=None) -> Path:
    """The tiny Llama as a Hugging Face folder, for commands that load `--model FOLDER` in a subprocess."""
    loaded = tiny_loaded(seed=seed, tokenizer=tokenizer)
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder
