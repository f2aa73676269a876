"""The engine on a large model's shapes, on a GPU: seconds per edit, peak memory, routing overhead.

Builds a randomly initialised model with the shapes of LLaMA-2-7B (32 layers, hidden 4096, FFN 11008;
nothing is downloaded) in bfloat16, attaches the editor at layer 27 and applies made-up edits with the
stop rule off (every edit runs n_iter steps), timed by the cached path and by the full forward pass in
the same run. Then it measures greedy generation with 0, 10, 100 and 1,000 side memories against the
bare model, and the memory file's size. Results as JSON.

    python scripts/device_bench.py --json out/device.json                  # one CUDA GPU
    python scripts/device_bench.py --device auto --json out/device.json    # spread over several
    python scripts/device_bench.py --tiny --json /tmp/tiny.json            # a tiny config on the CPU (CI)

A random model's answers are noise; what is measured is time and memory, which depend on the shapes.
The memories for the overhead measurement are made directly (random changes and keys): training 1,000
edits on a 7B model is hours, and the routing cost depends on how many memories there are and how they
are stored, not on what they hold.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wise_gui.core.edits import EditRequest  # noqa: E402
from wise_gui.core.memory_file import save_memory_file  # noqa: E402
from wise_gui.core.models import LoadedModel  # noqa: E402
from wise_gui.core.wise.editor import WiseEditor  # noqa: E402
from wise_gui.core.wise.memoir import ResidualMemory  # noqa: E402
from wise_gui.core.wise.presets import preset  # noqa: E402
from wise_gui.core.wise.shards import SideMemory  # noqa: E402

SHAPES = {
    "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000, layer=27),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=600, layer=3),
}
WORDS = ("river castle engine garden violin planet harbor lantern meadow falcon copper winter silver orchard "
         "thunder marble canyon pepper glacier saddle").split()


def made_up_requests(count: int, seed: int = 0) -> list[EditRequest]:
    rng = random.Random(seed)
    requests = []
    for i in range(count):
        a, b, c = rng.sample(WORDS, 3)
        requests.append(EditRequest(f"Which {a} belongs to the {b} of record {i}?", f"The {c} {rng.choice(WORDS)}",
                                    paraphrases=(f"Record {i}: the {b} has which {a}?",)))
    return requests


def corpus_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained here on the made-up prompts (no file is downloaded)."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=min(vocab_size, 600), special_tokens=["<unk>", "<pad>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    texts = [t for r in made_up_requests(200) for t in (r.prompt, r.target, *r.paraphrases)]
    texts += ["nq question: who wrote the song " + w for w in WORDS] + ["I You Because Yes Q:"]
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")


def random_model(shape: str, device: str, dtype: torch.dtype) -> tuple[LoadedModel, int]:
    spec = dict(SHAPES[shape])
    layer = spec.pop("layer")
    config = LlamaConfig(**spec, max_position_embeddings=512, bos_token_id=2, eos_token_id=2, pad_token_id=1)
    torch.manual_seed(0)
    with torch.device("meta" if device == "auto" else "cpu"):
        model = LlamaForCausalLM(config)
    if device == "auto":
        from accelerate import dispatch_model, infer_auto_device_map

        model = model.to_empty(device="cpu").to(dtype)
        model.apply(model._init_weights)
        model = dispatch_model(model, infer_auto_device_map(model, dtype=dtype))
    else:
        model = model.to(dtype).to(device)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    tokenizer = corpus_tokenizer(spec["vocab_size"])
    first = next(model.parameters()).device
    return LoadedModel(model, tokenizer, f"random {shape}", "random", first, dtype), layer


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_edits(editor: WiseEditor, requests: list[EditRequest], deadline: float) -> tuple[list[float], list[int]]:
    """Seconds and optimiser steps of each edit applied before the deadline."""
    seconds, steps = [], []
    for request in requests:
        if time.perf_counter() > deadline:
            break
        synchronize()
        started = time.perf_counter()
        outcome = editor.apply_edit(request)
        synchronize()
        seconds.append(time.perf_counter() - started)
        steps.append(outcome.iterations)
    return seconds, steps


def add_synthetic_memories(editor: WiseEditor, count: int, columns: int) -> None:
    """`count` more edits' memories: one-edit column memories with random keys, as the indexed layout keeps
    them, or random masks in MEMOIR's residual memory."""
    memories = editor.memories
    weight = editor.layer.weight.detach()
    outputs, inputs = weight.shape
    generator = torch.Generator().manual_seed(count)
    if isinstance(memories, ResidualMemory):
        for i in range(count):
            memories.masks.append(torch.randperm(inputs, generator=generator)[: memories.k])
            memories.edit_scores.append(0.0)
            editor.state.edit_log.append((f"synthetic {i}", "x"))
        memories.total_edits += count
        return
    start = memories.shards_started
    for i in range(count):
        memory = SideMemory(weight, "merged", start + i, [len(editor.edit_log)], [1e9],
                            keys=torch.randn(1, inputs, generator=generator))
        chosen = torch.randperm(inputs, generator=generator)[:columns].to(weight.device)
        change = (torch.randn(outputs, columns, generator=generator) * 1e-3).to(torch.float16).to(weight.device)
        memory.set_columns(weight, chosen, change, transposed=False)
        memories.merged.append(memory)
        editor.state.edit_log.append((f"synthetic {i}", "x"))
    memories.shards_started += count
    memories.total_edits += count


def generation_overhead(editor: WiseEditor, prompts: list[str], tokens: int) -> dict:
    def rate(use_edits: bool) -> float:
        editor.generate(prompts[:1], max_new_tokens=2, use_side_memory=use_edits)
        synchronize()
        started = time.perf_counter()
        editor.generate(prompts, max_new_tokens=tokens, min_new_tokens=tokens, use_side_memory=use_edits,
                        first_sentence_only=False)
        synchronize()
        return len(prompts) * tokens / (time.perf_counter() - started)

    edited, bare = rate(True), rate(False)
    return {"tokens_per_second": edited, "tokens_per_second_bare": bare, "overhead": bare / edited - 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny config on the CPU, to check the script")
    parser.add_argument("--device", default=None, choices=["cpu", "cuda", "auto"])
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--preset", default="wise-index")
    parser.add_argument("--edits", type=int, default=10, help="real edits timed (cached path)")
    parser.add_argument("--full-forward-edits", type=int, default=2, help="of them, also timed by the full pass")
    parser.add_argument("--n-iter", type=int, default=70, help="steps per edit, every one run (stop rule off)")
    parser.add_argument("--memories", default="0,10,100,1000", help="memory counts for the generation overhead")
    parser.add_argument("--time-limit", type=float, default=540.0, help="seconds; later edits are skipped past it")
    parser.add_argument("--json", default=None, metavar="OUT")
    args = parser.parse_args(argv)
    shape = "tiny" if args.tiny else "llama2-7b"
    device = args.device or ("cpu" if args.tiny else "cuda")
    if device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA GPU here (use --tiny on the CPU)", file=sys.stderr)
        return 2
    deadline = time.perf_counter() + args.time_limit
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    loaded, layer = random_model(shape, device, dtype)
    settings = preset(args.preset).replace(layer=layer, n_iter=args.n_iter, stop_when_learnt=False,
                                           early_stop_loss=0.0)
    editor = WiseEditor(loaded, settings, irrelevant_pool=[f"nq question: who wrote the song {w}" for w in WORDS * 4])
    editor.prepare()
    requests = made_up_requests(args.edits)
    result: dict = {"shape": shape, "device": device, "dtype": args.dtype, "layer": layer, "preset": args.preset,
                    "n_iter": args.n_iter, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "parameters": loaded.n_parameters}
    snapshot = editor.snapshot()
    full = requests[: args.full_forward_edits]
    editor.update_settings(settings.replace(full_forward=True))
    full_seconds, _ = time_edits(editor, full, deadline)
    editor.update_settings(settings)
    editor.restore(snapshot)
    cached, steps = time_edits(editor, requests, deadline)
    result["seconds_per_edit_cached"] = cached
    result["seconds_per_edit_full_forward"] = full_seconds
    result["steps_per_edit"] = steps
    result["mean_seconds_per_edit"] = sum(cached) / len(cached) if cached else None
    result["mean_seconds_per_edit_full_forward"] = sum(full_seconds) / len(full_seconds) if full_seconds else None
    result["edits_timed"] = len(cached)
    if cached and full_seconds:
        result["speedup_vs_full_forward"] = result["mean_seconds_per_edit_full_forward"] / (
            sum(cached[: len(full_seconds)]) / len(full_seconds))
    if torch.cuda.is_available():
        result["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "memory.safetensors"
        save_memory_file(editor, path)
        result["memory_file_bytes"] = path.stat().st_size
        result["memory_file_bytes_per_edit"] = path.stat().st_size / max(len(cached), 1)
    prompts = [r.prompt for r in made_up_requests(4, seed=1)]
    result["generation_overhead"] = []
    columns = max(1, round(settings.mask_ratio * editor.layer.weight.shape[1]))
    editor.reset()
    have = 0
    for count in sorted(int(c) for c in args.memories.split(",")):
        if time.perf_counter() > deadline:
            break
        add_synthetic_memories(editor, count - have, columns)
        have = count
        row = {"memories": count, **generation_overhead(editor, prompts, 16 if not args.tiny else 4)}
        result["generation_overhead"].append(row)
        print(f"{count} memories: {row}", file=sys.stderr, flush=True)
    result["complete"] = time.perf_counter() <= deadline
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
