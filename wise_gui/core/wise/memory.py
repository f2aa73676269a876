"""The module that replaces one FFN down projection: main weight W, side memories, per-sequence routing.

Activation score of a sequence under side weight W' (wise-method.md section 2; we keep `act`, as the
reference code does, in training and routing alike):

    d_t   = || act(W' a_t) - act(W a_t) ||_2       per real token t (the attention mask decides)
    score = mean of d_t over the sequence's real tokens
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

MAIN = -1
"""Route label of the main memory (the original weight)."""


class SideMemory:
    """One routable side memory: a weight of W's shape and the edits it holds. Compared by identity.

    A finished memory can be kept compact, as the entries where it differs from W (a fifth of them
    with the default mask ratio), and is rebuilt when used: 100 memories of SmolLM2's layer then take
    142 MB instead of 354 MB."""

    def __init__(self, weight: torch.Tensor, kind: str, edit_ids: list[int] | None = None,
                 edit_scores: list[float] | None = None, mask_seed: int | None = None):
        self.weight = weight
        self.kind = kind  # "shard" (being filled), "saved" (full, waiting for a merge) or "merged"
        self.edit_ids = list(edit_ids or [])
        self.edit_scores = list(edit_scores or [])  # each edit's score when its training ended
        self.mask_seed = mask_seed  # the gradient mask of a shard is regenerated from this seed

    @property
    def weight(self) -> torch.Tensor:
        if self._dense is not None:
            return self._dense
        rebuilt = self._base.clone()
        rebuilt.view(-1)[self._changed] = self._values
        return rebuilt

    @weight.setter
    def weight(self, value: torch.Tensor) -> None:
        self._dense, self._base, self._changed, self._values = value, None, None, None

    @property
    def nbytes(self) -> int:
        """Bytes this memory keeps in RAM."""
        if self._dense is not None:
            return self._dense.nbytes
        return self._changed.nbytes + self._values.nbytes

    def compact(self, base: torch.Tensor) -> None:
        """Keep only the entries that differ from `base` (W itself, shared, never copied), as int32
        positions and values: rebuilding them takes about half the time of one projection."""
        dense = self.weight
        changed = (dense != base).reshape(-1).nonzero().squeeze(1)
        if 2 * changed.numel() < dense.numel():  # a position and a value per entry: smaller below half
            self._base, self._changed = base, changed.to(torch.int32)
            self._values, self._dense = dense.reshape(-1)[changed].clone(), None

    @property
    def min_score(self) -> float:
        return min(self.edit_scores) if self.edit_scores else float("inf")


@dataclass
class WiseState:
    """Everything that changes when edits are applied; snapshot = deep copy, restore = swap back."""

    shard: SideMemory
    saved: list[SideMemory] = field(default_factory=list)
    merged: list[SideMemory] = field(default_factory=list)
    total_edits: int = 0
    shards_started: int = 1
    merge_events: list[int] = field(default_factory=list)  # total_edits at each merge

    def routable(self) -> list[SideMemory]:
        """Memories a query may be routed to, in a fixed order (their index is the route label)."""
        memories = self.merged + self.saved
        if self.shard.edit_ids:
            memories = memories + [self.shard]
        return memories

    def clone(self) -> "WiseState":
        """Only the shard being filled is ever changed in place (training, `_finish`); full and merged
        memories are replaced, never modified, so a snapshot shares them instead of copying each one."""
        return WiseState(
            shard=copy.deepcopy(self.shard), saved=list(self.saved), merged=list(self.merged),
            total_edits=self.total_edits, shards_started=self.shards_started, merge_events=list(self.merge_events),
        )


@dataclass
class RouteInfo:
    """What the router saw for one batch: per sequence, the chosen memory and the scores."""

    choice: torch.Tensor  # [B] long: MAIN or an index into routable()
    scores: torch.Tensor  # [B, M] score against each routable memory
    thresholds: torch.Tensor  # [M]
    per_token: torch.Tensor  # [B, M, T] token distances (0 at padding)


def mask_from_seed(seed: int, shape: torch.Size, ratio: float, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=generator) < ratio).to(device)


class WiseLayer(nn.Module):
    """Drop-in replacement for a down projection (nn.Linear, or GPT-2's transposed Conv1D).

    Modes:
      "route": each sequence goes to the main weight or to the best side memory above its threshold;
      "train": every sequence goes through the shard being trained (the edit's forward pass);
      "off":   the original weight only (the unedited model, bit for bit).
    """

    def __init__(self, original: nn.Module, act_fn, transposed: bool):
        super().__init__()
        self.original = original
        self.act_fn = act_fn
        self.transposed = transposed  # GPT-2 Conv1D stores the weight as [in, out]
        weight = original.weight.detach()
        self.state = WiseState(shard=SideMemory(weight=weight.clone(), kind="shard"))
        self.mode = "route"
        self.act_ratio = 0.88
        self.threshold_floor = 0.0  # no threshold below this, whatever the edits' scores
        self.shared_threshold = True  # WISE-Merge: one threshold for all; WISE-Retrieve: one each
        # Set by the editor around a forward pass: which tokens are real and count for the score ...
        self.token_mask: torch.Tensor | None = None
        # ... or a routing decision already taken on the prompt, kept for every generated token.
        self.route_lock = None
        self.last_route: RouteInfo | None = None
        # Captured inputs for the cached training path and for statistics.
        self.capture_input = False
        self.captured_input: torch.Tensor | None = None

    @property
    def weight(self) -> torch.Tensor:
        return self.original.weight

    @property
    def route_lock(self) -> torch.Tensor | None:
        return self._route_lock

    @route_lock.setter
    def route_lock(self, choice: torch.Tensor | None) -> None:
        self._route_lock = choice
        # The locked memories' weights, rebuilt once (compact memories) rather than for every token.
        self._locked_weights: dict[int, torch.Tensor] = {}

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.original, "bias", None)

    def project(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The original module's computation with another weight of the same layout."""
        if self.transposed:
            out_shape = x.shape[:-1] + (weight.shape[1],)
            flat = x.reshape(-1, x.shape[-1])
            out = torch.addmm(self.bias, flat, weight) if self.bias is not None else flat @ weight
            return out.view(out_shape)
        return F.linear(x, weight, self.bias)

    def token_distances(self, side_out: torch.Tensor, main_out: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(self.act_fn(side_out) - self.act_fn(main_out), dim=-1)

    @staticmethod
    def sequence_scores(distances: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
        if token_mask is None:
            return distances.mean(dim=-1)
        mask = token_mask.to(distances.dtype)
        return (distances * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)

    def thresholds(self, memories: list[SideMemory]) -> torch.Tensor:
        if self.shared_threshold and memories:
            weakest = min(m.min_score for m in memories)
            values = [self.act_ratio * weakest] * len(memories)
        else:
            values = [self.act_ratio * m.min_score for m in memories]
        return torch.tensor(values, dtype=torch.float32).clamp_min(self.threshold_floor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.capture_input:
            self.captured_input = x.detach()
        if self.mode == "off":
            return self.original(x)
        if self.mode == "train":
            return self.project(x, self.state.shard.weight)
        return self._routed_forward(x)

    def _routed_forward(self, x: torch.Tensor) -> torch.Tensor:
        main_out = self.original(x)
        memories = self.state.routable()
        if not memories:
            return main_out
        locked = self.route_lock is not None and self.route_lock.shape[0] == x.shape[0]
        if locked:
            choice = self.route_lock.to(x.device)  # decided on the prompt, kept for each generated token
        else:
            info = self.route(x, main_out, memories)
            self.last_route = info
            choice = info.choice.to(x.device)
        # Only the chosen memories' outputs are computed here; routing kept none of them, so memory
        # use does not grow with the number of memories.
        out = main_out
        for index in sorted(set(choice.tolist()) - {MAIN}):
            weight = self._locked_weight(memories, index) if locked else memories[index].weight
            rows = (choice == index).view(-1, *([1] * (x.dim() - 1)))
            out = torch.where(rows, self.project(x, weight), out)
        return out

    def _locked_weight(self, memories: list[SideMemory], index: int) -> torch.Tensor:
        if index not in self._locked_weights:
            self._locked_weights[index] = memories[index].weight
        return self._locked_weights[index]

    def route(self, x, main_out, memories) -> RouteInfo:
        token_mask = self.token_mask
        if token_mask is not None and token_mask.shape != x.shape[:-1]:
            token_mask = None  # a forward the mask was not meant for (e.g. one generated token)
        per_token = torch.stack([self.token_distances(self.project(x, m.weight), main_out) for m in memories],
                                dim=1)  # [B, M, T]
        if token_mask is not None:
            per_token = per_token * token_mask.unsqueeze(1).to(per_token.dtype)
            scores = self.sequence_scores(per_token, token_mask.unsqueeze(1))
        else:
            scores = per_token.mean(-1)
        thresholds = self.thresholds(memories).to(scores.device)
        above = scores > thresholds
        masked = torch.where(above, scores, torch.full_like(scores, float("-inf")))
        best = masked.argmax(dim=1)
        choice = torch.where(above.any(dim=1), best, torch.full_like(best, MAIN))
        return RouteInfo(choice=choice.cpu(), scores=scores.detach().float().cpu(),
                         thresholds=thresholds.cpu(), per_token=per_token.detach().float().cpu())
