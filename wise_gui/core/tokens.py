"""Token rows shared by the WISE editor, MEMOIR and the baselines, so every method sees the same tokens.

A row is a sequence of segments, each tokenised on its own and concatenated (never re-merged), so the
positions of the question and of the target are exact:

    raw form   special prefix | [context template] | question | " " + target
    chat form  template before the user's text | question | template up to the reply | target [end of turn]

Only question tokens count for the activation score and the mask fingerprint, in training, in the
threshold statistics and at inference alike; only target tokens are learnt and measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

QueryForm = Literal["raw", "chat"]
FORMS: tuple[QueryForm, ...] = ("raw", "chat")
Role = Literal["context", "question", "target"]
_SENTINEL = "\u2063WISEQ\u2063"  # text no real question contains, to find the user's slot in a template


@dataclass(frozen=True)
class Segment:
    ids: tuple[int, ...]
    role: Role


Row = tuple[Segment, ...]


@dataclass
class TokenBatch:
    """Padded rows with, per row, which tokens count for the score and which are targets."""

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    score_mask: torch.Tensor  # [B, T] question tokens: their distances make the activation score
    target_mask: torch.Tensor  # [B, T] target tokens (learnt and measured)


@dataclass(frozen=True)
class ChatFormat:
    """An instruct model's chat template, cut around the user's message."""

    before: tuple[int, ...]  # everything up to the user's text (system prompt, role markers)
    after: tuple[int, ...]  # from the end of the user's text to where the assistant's reply begins
    end_of_turn: int | None  # the token that ends the assistant's reply


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def _ids(tokenizer, text: str) -> tuple[int, ...]:
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else ()


def special_prefix(tokenizer) -> tuple[int, ...]:
    """Tokens the tokenizer puts before any text (e.g. BOS); every raw row starts with them."""
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    if len(with_special) > len(without) and with_special[-len(without):] == without:
        return tuple(with_special[: len(with_special) - len(without)])
    return ()


def chat_format(tokenizer, system_prompt: str | None = None) -> ChatFormat | None:
    """The tokenizer's chat template around one user message (None: the model has no usable template)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    messages = [{"role": "user", "content": _SENTINEL}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception:  # a template that cannot render a plain user turn: treat the model as raw-only
        return None
    if not isinstance(text, str) or text.count(_SENTINEL) != 1:
        return None
    before, after = text.split(_SENTINEL)
    return ChatFormat(_ids(tokenizer, before), _ids(tokenizer, after), tokenizer.eos_token_id)


class Prompter:
    """Turns questions (and targets) into rows in raw or chat form for one tokenizer."""

    def __init__(self, tokenizer, system_prompt: str | None = None):
        self.tokenizer = tokenizer
        self.special = special_prefix(tokenizer)
        self.chat = chat_format(tokenizer, system_prompt)

    @property
    def forms(self) -> tuple[QueryForm, ...]:
        """The forms this model can be asked in: raw always, chat when it has a template."""
        return FORMS if self.chat is not None else ("raw",)

    def resolve(self, form: QueryForm) -> QueryForm:
        """`form`, or raw for a model without a chat template (which keeps the raw behaviour)."""
        if form not in FORMS:
            raise ValueError(f"unknown query form {form!r}: choose raw or chat")
        return form if self.chat is not None else "raw"

    def question(self, text: str, form: QueryForm = "raw", context: str = "") -> Row:
        """The question as the model reads it; `context`: a template the question follows (raw and chat)."""
        form = self.resolve(form)
        head = (Segment(self._ids(context), "context"),) if context else ()  # context, not question
        body = Segment(self._ids((" " + text) if context else text), "question")
        if form == "chat":
            return (Segment(self.chat.before, "context"), *head, body, Segment(self.chat.after, "context"))
        return (Segment(self.special, "context"), *head, body)

    def with_target(self, row: Row, target: str, form: QueryForm = "raw", end_of_turn: bool = False) -> Row:
        """`row` followed by the answer: " target" after a raw prompt, the assistant's reply in chat form
        (with the end-of-turn token when it is learnt, so the reply stops there)."""
        form = self.resolve(form)
        if form == "chat":
            ids = self._ids(target)
            if end_of_turn and self.chat.end_of_turn is not None:
                ids = ids + (self.chat.end_of_turn,)
            return row + (Segment(ids, "target"),)
        return row + (Segment(self._ids(" " + target), "target"),)

    def unrelated(self, text: str, form: QueryForm = "raw") -> Row:
        """An unrelated sample the memory must stay quiet on: every token of its text counts for the score."""
        return self.question(text, form)

    def _ids(self, text: str) -> tuple[int, ...]:
        return _ids(self.tokenizer, text)


def pad_rows(rows: list[Row], pad_token: int, left: bool = False) -> TokenBatch:
    """Rows padded to one length: right-padded for teacher forcing and training, left-padded for
    generation (every row's next token then follows its last real token)."""
    flat = [[(token, segment.role) for segment in row for token in segment.ids] for row in rows]
    length = max((len(tokens) for tokens in flat), default=0)
    batch = len(rows)
    input_ids = torch.full((batch, length), pad_token, dtype=torch.long)
    attention = torch.zeros((batch, length), dtype=torch.long)
    score = torch.zeros((batch, length), dtype=torch.bool)
    target = torch.zeros((batch, length), dtype=torch.bool)
    for i, tokens in enumerate(flat):
        start = length - len(tokens) if left else 0
        if not tokens:
            continue
        span = slice(start, start + len(tokens))
        input_ids[i, span] = torch.tensor([t for t, _ in tokens], dtype=torch.long)
        attention[i, span] = 1
        score[i, span] = torch.tensor([role == "question" for _, role in tokens])
        target[i, span] = torch.tensor([role == "target" for _, role in tokens])
    return TokenBatch(input_ids, attention, score, target)
