"""The module that replaces one FFN down projection: main weight W, side memories, per-sequence routing.

Activation score of a sequence under side weight W' (wise-method.md section 2; we keep `act`, as the
reference code does, in training and routing alike):

    d_t   = || act(W' a_t) - act(W a_t) ||_2       per question token t (the token mask decides)
    score = mean of d_t over the sequence's question tokens

The layer is in one mode at a time, set by a context manager: routed (the default), off (the
unedited model, bit for bit), through one weight (every sequence, as in training); `capturing()` records
the layer's input. Routing is decided on the prompt and, inside `routed(lock=True)`, kept for every
token generated after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from wise_gui.core.inference import MAIN


@dataclass
class RouteInfo:
    """What the router saw for one batch: per sequence the chosen memory, and the best candidate's
    score against its threshold (the best one even when it stays below, so a user sees how close it was)."""

    choice: torch.Tensor  # [B] long: MAIN or a memory index
    best: torch.Tensor  # [B] long: the memory shown: the chosen one, else the best-scoring (MAIN: none)
    score: torch.Tensor  # [B] its score
    threshold: torch.Tensor  # [B] its threshold
    per_token: torch.Tensor  # [B, T] its per-token distances (0 outside the question)
    scored: int  # memories whose score was computed for this batch (the routing work)


def token_distances(act_fn, side_out: torch.Tensor, main_out: torch.Tensor) -> torch.Tensor:
    """Per token ||act(side) - act(main)||, in float32: in bfloat16 the difference of two close outputs
    would lose most of its digits and routing decisions with it."""
    return torch.linalg.vector_norm(act_fn(side_out.float()) - act_fn(main_out.float()), dim=-1)


def sequence_scores(distances: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean distance over the question tokens of each sequence (all tokens without a mask)."""
    if token_mask is None:
        return distances.mean(dim=-1)
    mask = token_mask.to(distances.dtype)
    return (distances * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


def question_features(x: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
    """[B, in]: each sequence's mean projection input over its question tokens (in float32)."""
    x = x.float()
    if token_mask is None:
        return x.mean(dim=1)
    mask = token_mask.to(x.dtype).unsqueeze(-1)
    return (x * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class Memories(Protocol):
    """A memory layout: what the router chooses among, and what a chosen memory adds to the output."""

    def __len__(self) -> int: ...

    def route(self, layer: WiseLayer, x: torch.Tensor, main_out: torch.Tensor,
              token_mask: torch.Tensor | None) -> RouteInfo: ...

    def output(self, layer: WiseLayer, x: torch.Tensor, main_out: torch.Tensor, index: int) -> torch.Tensor: ...


class WiseLayer(nn.Module):
    """Drop-in replacement for a down projection (nn.Linear, or GPT-2's transposed Conv1D)."""

    def __init__(self, original: nn.Module, act_fn, transposed: bool):
        super().__init__()
        self.original = original
        self.act_fn = act_fn
        self.transposed = transposed  # GPT-2 Conv1D stores the weight as [in, out]
        self.memories: Memories | None = None  # set by the editor
        self._off = False
        self._training_weight: torch.Tensor | None = None
        self._token_mask: torch.Tensor | None = None
        self._lock_after_routing = False
        self._locked: torch.Tensor | None = None
        self._captured: list[torch.Tensor] | None = None
        self.last_route: RouteInfo | None = None
        self.memory_projections = 0  # memories projected while routing so far (tests count them)

    @property
    def weight(self) -> torch.Tensor:
        return self.original.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.original, "bias", None)

    # ---- modes ------------------------------------------------------------------------------------

    @contextmanager
    def off(self) -> Iterator[None]:
        """The original weight only: the unedited model."""
        previous, self._off = self._off, True
        try:
            yield
        finally:
            self._off = previous

    @contextmanager
    def through(self, weight: torch.Tensor) -> Iterator[None]:
        """Every sequence through `weight` (the edit's forward pass)."""
        previous, self._training_weight = self._training_weight, weight
        try:
            yield
        finally:
            self._training_weight = previous

    @contextmanager
    def capturing(self) -> Iterator[list[torch.Tensor]]:
        """Collects the input of every forward pass inside (detached)."""
        previous, self._captured = self._captured, []
        try:
            yield self._captured
        finally:
            self._captured = previous

    @contextmanager
    def routed(self, token_mask: torch.Tensor | None, lock: bool = False,
               forced: torch.Tensor | None = None) -> Iterator[None]:
        """Route each sequence on its `token_mask` tokens. lock=True: the first pass (the prompt) decides,
        and every later pass (one generated token each) keeps that memory. `forced`: the choice per
        sequence given in advance (MAIN rows answer as the unedited model)."""
        saved = (self._token_mask, self._lock_after_routing, self._locked)
        self._token_mask, self._lock_after_routing, self._locked = token_mask, lock, forced
        self.last_route = None
        try:
            yield
        finally:
            self._token_mask, self._lock_after_routing, self._locked = saved

    # ---- computation --------------------------------------------------------------------------------

    def project(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The original module's computation with another weight of the same layout."""
        weight = weight.to(x.dtype)  # a float32 weight in training, for a bfloat16 model
        if self.transposed:
            out_shape = x.shape[:-1] + (weight.shape[1],)
            flat = x.reshape(-1, x.shape[-1])
            out = torch.addmm(self.bias, flat, weight) if self.bias is not None else flat @ weight
            return out.view(out_shape)
        return F.linear(x, weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._captured is not None:
            self._captured.append(x.detach())
        if self._off:
            return self.original(x)
        if self._training_weight is not None:
            return self.project(x, self._training_weight)
        return self._routed_forward(x)

    def _routed_forward(self, x: torch.Tensor) -> torch.Tensor:
        main_out = self.original(x)
        memories = self.memories
        if memories is None or len(memories) == 0:
            return main_out
        if self._locked is not None and self._locked.shape[0] == x.shape[0]:
            choice = self._locked
        else:
            token_mask = self._token_mask
            if token_mask is not None and token_mask.shape != x.shape[:-1]:
                token_mask = None  # a pass the mask was not meant for
            info = memories.route(self, x, main_out, token_mask)
            self.memory_projections += info.scored
            self.last_route = info
            choice = info.choice
            if self._lock_after_routing:
                self._locked = choice
        out = main_out
        for index in sorted(set(choice.tolist()) - {MAIN}):
            rows = (choice.to(x.device) == index).view(-1, *([1] * (x.dim() - 1)))
            out = torch.where(rows, memories.output(self, x, main_out, index), out)
        return out
