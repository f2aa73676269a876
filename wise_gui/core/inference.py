"""Asking an edited model: teacher-forced target accuracy and greedy answers, in raw or chat form.

`EditedModel` is what WISE, MEMOIR and the baselines share, so every method is asked and measured the
same way. A subclass says how its edits join a forward pass (`_edits`) and which memory answered each
row of the last pass (`_routes`).

Answers are decoded greedily to a natural stop: the end of the model's turn, the end of the sequence, or
the end of the first sentence, with a cap on new tokens.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from wise_gui.core.models import LoadedModel
from wise_gui.core.tokens import Prompter, QueryForm, pad_id, pad_rows

MAIN = -1
"""The main memory's index in a route: the original weight."""

ANSWER_CAP = 40
"""New tokens an answer may take at most before its first sentence ends."""

_END_MARK = re.compile(r"(\S*?)([.!?])[\"')\]]*(?=\s)|\n")


@dataclass(frozen=True)
class Route:
    """Which memory answered a question, and the router's evidence for it."""

    memory: int  # MAIN or the memory's index among the routable ones
    kind: str  # "main", or the memory's kind: "merged", "saved", "shard" (WISE), "residual" (MEMOIR)
    score: float | None = None  # the shown memory's score (None: no side memory exists yet)
    threshold: float | None = None

    @property
    def to_side_memory(self) -> bool:
        return self.memory != MAIN

    def to_dict(self) -> dict:
        return {"memory": self.memory, "kind": self.kind, "score": self.score, "threshold": self.threshold}

    @classmethod
    def from_dict(cls, values: dict) -> Route:
        return cls(int(values["memory"]), str(values["kind"]), values.get("score"), values.get("threshold"))


MAIN_ROUTE = Route(MAIN, "main")


@dataclass(frozen=True)
class Answer:
    """A generated answer to one question, asked in one form."""

    question: str
    form: QueryForm
    text: str  # up to the natural stop, special tokens removed
    route: Route


@dataclass(frozen=True)
class TeacherForced:
    predicted: list[int]  # argmax token at each target position
    target: list[int]
    route: Route

    @property
    def accuracy(self) -> float:
        return sum(int(p == t) for p, t in zip(self.predicted, self.target)) / max(len(self.target), 1)


def sentence_end(text: str) -> int | None:
    """Where the first sentence (or line) of `text` ends, or None while it goes on. A full stop after
    an abbreviation ("St.", "U.S.") does not end it: the word before it must be a number or have three
    letters or more."""
    for match in _END_MARK.finditer(text):
        if match.group(0) == "\n":
            if text[: match.start()].strip():
                return match.start()
            continue
        word, mark = match.group(1), match.group(2)
        if mark != "." or word.isdigit() or (len(word) >= 3 and "." not in word):
            return match.end()
    return None


def first_sentence(text: str) -> str:
    """The answer up to the end of its first sentence (or line), leading blank lines dropped."""
    text = text.lstrip()
    end = sentence_end(text)
    return (text if end is None else text[:end]).strip()


class _SentenceEnded(StoppingCriteria):
    """Stops each row once its new text holds a complete first sentence."""

    def __init__(self, tokenizer, prompt_length: int):
        self.tokenizer, self.prompt_length = tokenizer, prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length:], skip_special_tokens=True)
        return torch.tensor([sentence_end(t.lstrip()) is not None for t in texts], device=input_ids.device)


class _Asked(StoppingCriteria):
    """Stops every row when `stop_when()` says so (a user's cancel)."""

    def __init__(self, stop_when: Callable[[], bool]):
        self.stop_when = stop_when

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), bool(self.stop_when()), device=input_ids.device)


class EditedModel(ABC):
    """A loaded model with an editing method attached, asked in raw or chat form."""

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.prompter = Prompter(loaded.tokenizer)

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    @property
    def forms(self) -> tuple[QueryForm, ...]:
        return self.prompter.forms

    @abstractmethod
    def _edits(self, use_edits: bool, question_mask: torch.Tensor, lock: bool) -> AbstractContextManager:
        """Forward passes inside run with the edits (routed on the question tokens) or without them.
        lock=True: the first pass decides per row and later passes (generated tokens) keep the decision."""

    @abstractmethod
    def _routes(self, rows: int) -> list[Route]:
        """Per row of the last routed pass, which memory answered."""

    def memory_of_edit(self, edit_index: int) -> int | None:
        """The memory that holds the edit at `edit_index` of the edit log (None: the method has no such
        memory, or the edit is not held)."""
        return None

    def _logits(self, batch) -> torch.Tensor:
        device = self.loaded.input_device
        return self.loaded.model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                                 use_cache=False).logits

    @torch.no_grad()
    def teacher_forced(self, prompts: list[str], targets: list[str], form: QueryForm = "raw",
                       use_side_memory: bool = True) -> list[TeacherForced]:
        """Feed question + target once, routed on the question; the argmax at every target position."""
        p = self.prompter
        batch = pad_rows([p.with_target(p.question(q, form), t, form) for q, t in zip(prompts, targets)],
                         pad_id(self.tokenizer))
        with self._edits(use_side_memory, batch.score_mask.to(self.loaded.input_device), lock=False):
            logits = self._logits(batch)
        routes = self._routes(len(prompts)) if use_side_memory else [MAIN_ROUTE] * len(prompts)
        results = []
        for row, route in enumerate(routes):
            positions = batch.target_mask[row].nonzero().flatten()
            predicted = logits[row, positions - 1].argmax(-1).cpu().tolist()
            results.append(TeacherForced(predicted, batch.input_ids[row, positions].tolist(), route))
        return results

    @torch.no_grad()
    def target_perplexity(self, prompt: str, target: str, form: QueryForm = "raw", clip: float = 100.0) -> float:
        """Perplexity of the target after the prompt (the paper's hallucination metric), clipped."""
        p = self.prompter
        batch = pad_rows([p.with_target(p.question(prompt, form), target, form)], pad_id(self.tokenizer))
        with self._edits(True, batch.score_mask.to(self.loaded.input_device), lock=False):
            logits = self._logits(batch)[0]
        positions = batch.target_mask[0].nonzero().flatten()
        log_probs = torch.log_softmax(logits[positions - 1].float(), dim=-1)
        nll = -log_probs[torch.arange(len(positions)), batch.input_ids[0, positions].to(log_probs.device)].mean()
        return min(clip, math.exp(float(nll)))

    @torch.no_grad()
    def generate(self, prompts: list[str], form: QueryForm = "raw", max_new_tokens: int = ANSWER_CAP,
                 use_side_memory: bool = True, min_new_tokens: int = 0, first_sentence_only: bool = True,
                 stop_when: Callable[[], bool] | None = None) -> list[Answer]:
        """Greedy answers. Each question is routed once, on its own tokens in the prefill, and keeps that
        memory for every generated token. With first_sentence_only the answer ends with its first sentence;
        `stop_when` is asked after every token and ends every row when it says so."""
        p = self.prompter
        form = p.resolve(form)
        batch = pad_rows([p.question(q, form) for q in prompts], pad_id(self.tokenizer), left=True)
        device = self.loaded.input_device
        length = batch.input_ids.shape[1]
        stops = StoppingCriteriaList([_SentenceEnded(self.tokenizer, length)] if first_sentence_only else [])
        if stop_when is not None:
            stops.append(_Asked(stop_when))
        with self._edits(use_side_memory, batch.score_mask.to(device), lock=True):
            output = self.loaded.model.generate(
                input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, do_sample=False,
                pad_token_id=pad_id(self.tokenizer), stopping_criteria=stops)
            routes = self._routes(len(prompts)) if use_side_memory else [MAIN_ROUTE] * len(prompts)
        texts = self.tokenizer.batch_decode(output[:, length:], skip_special_tokens=True)
        return [Answer(q, form, first_sentence(t) if first_sentence_only else t.strip(), route)
                for q, t, route in zip(prompts, texts, routes)]


class BareModel(EditedModel):
    """The loaded model without any edit: its own answers, asked the same way as an edited one."""

    def _edits(self, use_edits: bool, question_mask: torch.Tensor, lock: bool) -> AbstractContextManager:
        return nullcontext()

    def _routes(self, rows: int) -> list[Route]:
        return [MAIN_ROUTE] * rows
