"""Token layout shared by the WISE editor and the baselines, so every method is scored on the same tokens.

A row is `special prefix (e.g. BOS) + prompt [+ " " + target]`, the three parts tokenised separately and
concatenated, so the prompt and target positions are exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TokenBatch:
    """Right-padded rows with, per row, which tokens count for the score and which are targets."""

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    score_mask: torch.Tensor  # [B, T] tokens whose distances make the activation score
    target_mask: torch.Tensor  # [B, T] positions whose token is a target token (CE)


def encode_pair(tokenizer, prefix: str, prompt: str, target: str | None) -> tuple[list[int], list[int], list[int]]:
    """Token ids of `prefix`, of the prompt after it, and of " target": concatenated, never re-merged,
    so the score and target positions are exact."""
    ids_prefix = tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
    prompt_text = (" " + prompt) if prefix else prompt
    ids_prompt = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    ids_target = tokenizer(" " + target, add_special_tokens=False)["input_ids"] if target else []
    return ids_prefix, ids_prompt, ids_target


def pad_rows(rows: list[tuple[list[int], list[int], list[int]]], pad_token: int, score_whole_row: list[bool]) -> TokenBatch:
    length = max(len(a) + len(b) + len(c) for a, b, c in rows)
    batch = len(rows)
    input_ids = torch.full((batch, length), pad_token, dtype=torch.long)
    attention = torch.zeros((batch, length), dtype=torch.long)
    score = torch.zeros((batch, length), dtype=torch.bool)
    target = torch.zeros((batch, length), dtype=torch.bool)
    for i, (prefix, prompt, tgt) in enumerate(rows):
        ids = prefix + prompt + tgt
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[i, : len(ids)] = 1
        if score_whole_row[i]:
            score[i, : len(ids)] = True
        else:
            score[i, len(prefix): len(prefix) + len(prompt)] = True
        target[i, len(prefix) + len(prompt): len(ids)] = True
    return TokenBatch(input_ids, attention, score, target)


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def special_prefix(tokenizer) -> list[int]:
    """Tokens the tokenizer puts before any text (e.g. BOS); every row starts with them."""
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    if len(with_special) > len(without) and with_special[-len(without):] == without:
        return with_special[: len(with_special) - len(without)]
    return []


def encode_rows(tokenizer, prefix: list[int], prompts: list[str], targets: list[str] | None) -> TokenBatch:
    """Right-padded `prefix + prompt [+ " " + target]` rows; score_mask marks the prompt tokens."""
    rows = []
    for i, prompt in enumerate(prompts):
        _, ids_prompt, ids_target = encode_pair(tokenizer, "", prompt, targets[i] if targets else None)
        rows.append((list(prefix), ids_prompt, ids_target))
    return pad_rows(rows, pad_id(tokenizer), [False] * len(rows))


def encode_left_padded(tokenizer, prefix: list[int], texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded rows for generation, so every row's next token follows its last real token."""
    encoded = [list(prefix) + tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    length = max(len(e) for e in encoded)
    input_ids = torch.full((len(encoded), length), pad_id(tokenizer), dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    for row, ids in enumerate(encoded):
        input_ids[row, length - len(ids):] = torch.tensor(ids)
        attention[row, length - len(ids):] = 1
    return input_ids, attention
