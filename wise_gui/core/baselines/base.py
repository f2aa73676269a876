"""What every editing method at one FFN down projection shares: tokenisation, the evaluation interface,
a training loop, and the attach/snapshot/detach life cycle.

`wise_gui.core.evaluation.evaluate` (and `target_perplexity`) call an editor through `teacher_forced`,
`generate`, `tokenizer`, `_rows`, `_forward` and `_last_logits`; `LayerMethod` gives a baseline the same
interface, with the same token layout as `WiseEditor`, so one evaluation measures every method alike.
A subclass says how its edit changes the layer (`_applied`), how it learns an edit (`_learn`) and what
its state is (`snapshot`/`restore`/`added_state_bytes`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from wise_gui.core.edits import EditRequest
from wise_gui.core.errors import WiseGuiError
from wise_gui.core.models import LoadedModel
from wise_gui.core.wise.architecture import Architecture
from wise_gui.core.wise.memory import MAIN, WiseLayer
from wise_gui.core.tokens import TokenBatch, encode_left_padded, encode_rows, pad_id, special_prefix

# ----------------------------------------------------------------------------------------------
# Token helpers


def last_marked(mask: torch.Tensor) -> torch.Tensor:
    """Per row, the index of the last True position of `mask` [B, T] (the last prompt token)."""
    positions = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    return (mask.long() * positions).max(dim=1).values - 1


def target_loss(logits: torch.Tensor, batch: TokenBatch) -> torch.Tensor:
    """Mean cross-entropy of the target tokens, each predicted from the position before it."""
    rows, cols = batch.target_mask.nonzero(as_tuple=True)
    targets = batch.input_ids[rows, cols].to(logits.device)
    return F.cross_entropy(logits[rows.to(logits.device), (cols - 1).to(logits.device)].float(), targets)


# ----------------------------------------------------------------------------------------------
# Settings and training


@dataclass
class TrainSettings:
    """Gradient steps on the method's trainable tensor, stopped early once the target loss is small."""

    lr: float = 1.0
    n_iter: int = 100
    early_stop_loss: float = 0.01

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def replace(self, **changes) -> "TrainSettings":
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown {type(self).__name__} fields: {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)


def optimise(parameters: list[torch.Tensor], loss_fn: Callable[[], torch.Tensor], settings: TrainSettings,
             after_step: Callable[[], None] | None = None) -> int:
    """Adam on `parameters` until the loss is at most `early_stop_loss` or `n_iter` steps are done
    (ROME's FT and EasyEdit's GRACE both use Adam). Returns the number of forward passes."""
    optimizer = torch.optim.Adam(parameters, lr=settings.lr)
    with torch.enable_grad():
        for iteration in range(settings.n_iter):
            loss = loss_fn()
            if float(loss.detach()) <= settings.early_stop_loss:
                return iteration + 1
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if after_step is not None:
                with torch.no_grad():
                    after_step()
    return settings.n_iter


@dataclass
class EditResult:
    """What `apply_edit` reports (the fields of WiseEditor's EditOutcome the benchmark reads)."""

    seconds: float
    iterations: int


# ----------------------------------------------------------------------------------------------
# The shared method


class ProjectionWrapper(nn.Module):
    """Base of the modules a method puts in place of the down projection; `original` is the one replaced."""

    def __init__(self, original: nn.Module):
        super().__init__()
        self.original = original


class LayerMethod(ABC):
    """An editing method attached to one decoder layer's FFN down projection of a loaded model."""

    name = ""
    overwrites_weights = False  # True: the edit lives in the model's own weight, not in added state

    def __init__(self, loaded: LoadedModel, layer_index: int, settings: TrainSettings):
        self.loaded = loaded
        self.settings = settings
        self.arch = Architecture.of(loaded.model, layer_index)
        current = self.arch.down_projection()
        if isinstance(current, (WiseLayer, ProjectionWrapper)):
            raise WiseGuiError(f"Layer {layer_index} already has an editor attached ({type(current).__name__}); "
                               "detach it first.")
        self._special_prefix = special_prefix(loaded.tokenizer)
        self._last_logits: torch.Tensor | None = None

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    @property
    def layer_index(self) -> int:
        return self.arch.layer_index

    @property
    def down_projection(self) -> nn.Module:
        return self.arch.down_projection()

    # ---- what a subclass defines ------------------------------------------------------------------

    @abstractmethod
    def _applied(self, use_edits: bool, query_positions: torch.Tensor,
                 keep_decision: bool) -> AbstractContextManager[None]:
        """A context: forward passes inside run with the edits (or without them, as the unedited model).
        A method that looks its edits up decides on the `query_positions` token of each row and, with
        `keep_decision`, keeps that decision for later passes (generated tokens)."""

    @abstractmethod
    def _learn(self, request: EditRequest, batch: TokenBatch) -> int:
        """Train one edit on `prompt + " " + target`; returns the number of forward passes."""

    def _choices(self) -> torch.Tensor | None:
        """Per row of the last forward pass, which stored edit answered (MAIN: none); None: no lookup."""
        return None

    @abstractmethod
    def snapshot(self):
        """A copy of everything the edits changed, for `restore`."""

    @abstractmethod
    def restore(self, snapshot) -> None:
        ...

    @abstractmethod
    def added_state_bytes(self) -> int:
        ...

    @abstractmethod
    def detach(self) -> None:
        """Give the model back exactly as it was before this method was attached."""

    # ---- the interface evaluation and the benchmark use -----------------------------------------

    def apply_edit(self, request: EditRequest) -> EditResult:
        problems = request.validate()
        if problems:
            raise WiseGuiError("This edit cannot be applied: " + "; ".join(problems) + ".")
        started = time.perf_counter()
        before = self.snapshot()
        try:
            iterations = self._learn(request, self._rows([request.prompt], [request.target]))
        except BaseException:  # e.g. Ctrl+C mid-training: no half-learnt edit stays behind
            self.restore(before)
            raise
        return EditResult(seconds=time.perf_counter() - started, iterations=iterations)

    def _rows(self, prompts: list[str], targets: list[str] | None) -> TokenBatch:
        return encode_rows(self.tokenizer, self._special_prefix, prompts, targets)

    def _model_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        device = self.loaded.input_device
        return self.loaded.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                 use_cache=False).logits

    def _forward(self, batch: TokenBatch, score_mask: torch.Tensor,
                 use_side_memory: bool = True) -> torch.Tensor | None:
        """One forward pass, edits looked up on each row's last `score_mask` token; keeps the logits."""
        with self._applied(use_side_memory, last_marked(score_mask), keep_decision=False):
            self._last_logits = self._model_logits(batch.input_ids, batch.attention_mask)
        return self._choices() if use_side_memory else None

    @torch.no_grad()
    def teacher_forced(self, prompts: list[str], targets: list[str], use_side_memory: bool = True):
        """As WiseEditor.teacher_forced: per row (predicted target-token ids, target ids, choice)."""
        batch = self._rows(prompts, targets)
        choices = self._forward(batch, batch.score_mask, use_side_memory)
        results = []
        for row in range(len(prompts)):
            positions = batch.target_mask[row].nonzero().flatten()
            predicted = self._last_logits[row, positions - 1].argmax(-1).cpu().tolist()
            choice = int(choices[row]) if choices is not None else MAIN
            results.append((predicted, batch.input_ids[row, positions].tolist(), choice))
        return results

    @torch.no_grad()
    def generate(self, prompts: list[str], max_new_tokens: int = 20, use_side_memory: bool = True,
                 chat: bool = False, min_new_tokens: int = 0) -> list[str]:
        """Greedy answers; a lookup decided on the prompt's last token holds for every generated token."""
        texts = [self.loaded.format_question(p, chat) for p in prompts]
        input_ids, attention = encode_left_padded(self.tokenizer, self._special_prefix, texts)
        last = torch.full((len(texts),), input_ids.shape[1] - 1, dtype=torch.long)
        device = self.loaded.input_device
        with self._applied(use_side_memory, last, keep_decision=True):
            output = self.loaded.model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                                max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, do_sample=False,
                                                pad_token_id=pad_id(self.tokenizer))
        return [self.tokenizer.decode(row[input_ids.shape[1]:], skip_special_tokens=True) for row in output]
