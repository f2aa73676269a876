"""Rel / Gen / Loc as the paper and EasyEdit define them, plus generation success.

- Rel, Gen: teacher-forced token accuracy on the target (edit prompt, paraphrase).
- Loc: fraction of answer positions where the edited model's argmax equals the unedited model's.
- Generation success: the greedy answer, normalised, starts with or contains the normalised target;
  teacher forcing overstates what a user reading generated answers sees.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass, field

import torch

from wise_gui.core.edits import EditRequest

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    text = text.strip().splitlines()[0] if text.strip() else ""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def generation_matches(generated: str, target: str) -> bool:
    expected = normalize_answer(target)
    produced = normalize_answer(generated)
    return bool(expected) and (produced.startswith(expected) or f" {expected} " in f" {produced} ")


def token_accuracy(predicted: list[int], target: list[int]) -> float:
    return sum(int(p == t) for p, t in zip(predicted, target)) / max(len(target), 1)


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def teacher_forced_accuracy(editor, prompts: list[str], targets: list[str], batch_size: int = 16) -> list[float]:
    scores = []
    for chunk in _batches(list(zip(prompts, targets)), batch_size):
        results = editor.teacher_forced([p for p, _ in chunk], [t for _, t in chunk])
        scores.extend(token_accuracy(pred, tgt) for pred, tgt, _ in results)
    return scores


def locality_agreement(editor, prompts: list[str], answers: list[str], batch_size: int = 16) -> list[float]:
    """Agreement of the edited model's argmax with the unedited model's on loc + " " + loc_ans."""
    scores = []
    for chunk in _batches(list(zip(prompts, answers)), batch_size):
        ps, ans = [p for p, _ in chunk], [a for _, a in chunk]
        before = editor.teacher_forced(ps, ans, use_side_memory=False)
        after = editor.teacher_forced(ps, ans, use_side_memory=True)
        scores.extend(token_accuracy(a[0], b[0]) for a, b in zip(after, before))
    return scores


def generation_success(editor, prompts: list[str], targets: list[str], batch_size: int = 8) -> list[float]:
    results = []
    for chunk in _batches(list(zip(prompts, targets)), batch_size):
        longest = max(len(editor.tokenizer(" " + t, add_special_tokens=False)["input_ids"]) for _, t in chunk)
        answers = editor.generate([p for p, _ in chunk], max_new_tokens=longest + 4)
        results.extend(float(generation_matches(a, t)) for a, (_, t) in zip(answers, chunk))
    return results


def target_perplexity(editor, prompts: list[str], targets: list[str], clip: float = 100.0) -> list[float]:
    """Perplexity of each target after its prompt, clipped per sample (the paper's hallucination metric)."""
    values = []
    for prompt, target in zip(prompts, targets):
        batch = editor._rows([prompt], [target])
        editor._forward(batch, batch.score_mask)
        logits = editor._last_logits[0]
        positions = batch.target_mask[0].nonzero().flatten()
        log_probs = torch.log_softmax(logits[positions - 1].float(), dim=-1)
        nll = -log_probs[torch.arange(len(positions)), batch.input_ids[0, positions].to(log_probs.device)].mean()
        values.append(min(clip, math.exp(float(nll))))
    return values


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass
class Metrics:
    rel: float | None = None
    gen: float | None = None
    loc: float | None = None
    gen_success: float | None = None
    portability: float | None = None
    ood: float | None = None
    per_edit: list[dict] = field(default_factory=list)


@torch.no_grad()
def evaluate(editor, requests: list[EditRequest], generation: bool = True) -> Metrics:
    """Evaluate every request with the editor's current side memory (the paper's protocol: after the last edit)."""
    prompts = [r.prompt for r in requests]
    targets = [r.target for r in requests]
    rel = teacher_forced_accuracy(editor, prompts, targets)
    para = [(i, p, r.target) for i, r in enumerate(requests) for p in r.paraphrases]
    gen = teacher_forced_accuracy(editor, [p for _, p, _ in para], [t for _, _, t in para]) if para else []
    loc_items = [(i, c.prompt, c.answer) for i, r in enumerate(requests) for c in r.locality if c.answer]
    loc = locality_agreement(editor, [p for _, p, _ in loc_items], [a for _, _, a in loc_items]) if loc_items else []
    port_items = [(i, q, a) for i, r in enumerate(requests) for q, a in r.portability]
    port = teacher_forced_accuracy(editor, [q for _, q, _ in port_items], [a for _, _, a in port_items]) if port_items else []
    ood_items = [(i, q, a) for i, r in enumerate(requests) for q, a in r.ood]
    ood = teacher_forced_accuracy(editor, [q for _, q, _ in ood_items], [a for _, _, a in ood_items]) if ood_items else []
    success = generation_success(editor, prompts, targets) if generation else []
    per_edit = []
    for i, request in enumerate(requests):
        row = {"prompt": request.prompt, "target": request.target, "rel": rel[i]}
        gens = [g for (j, _, _), g in zip(para, gen) if j == i]
        locs = [v for (j, _, _), v in zip(loc_items, loc) if j == i]
        if gens:
            row["gen"] = sum(gens) / len(gens)
        if locs:
            row["loc"] = sum(locs) / len(locs)
        if success:
            row["gen_success"] = success[i]
        per_edit.append(row)
    return Metrics(rel=_mean(rel), gen=_mean(gen), loc=_mean(loc), gen_success=_mean(success),
                   portability=_mean(port), ood=_mean(ood), per_edit=per_edit)
