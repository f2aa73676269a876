"""WISE's side memories: knowledge shards, merged memories, and how a query is routed among them.

A side memory is a copy W' of the down projection W that differs from it in a few entries (its
gradient mask). A finished memory is kept as those entries (positions and values), not as a dense copy;
when few entries changed, its output is W a plus the sparse change times a, without ever rebuilding W'.

WISE-Merge keeps one merged memory with one threshold; WISE-Retrieve keeps each merged memory apart,
each with its own threshold, and a query goes to the best-scoring one above its threshold. With
`route_candidates` > 0 each memory also has a key (the mean projection input over its edits' questions,
minus that of unrelated text) and only the memories whose keys lie nearest the query's are scored, so the
routing work stays the same however many memories there are. Keys and queries are compared by cosine,
optionally after a `KeyWhitening` (docs/engine-findings.md, "The key gate at 1,000 memories").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from wise_gui.core.inference import MAIN
from wise_gui.core.wise.memory import RouteInfo, WiseLayer, question_features, sequence_scores, token_distances

# Below this fraction of changed entries a memory's output is W a + (W' - W) a with a sparse change;
# above it rebuilding W' and projecting once is faster.
_SPARSE_BELOW = 0.05


class SideMemory:
    """One routable side memory: its weight, the edits it holds, and their keys. Compared by identity."""

    def __init__(self, weight: torch.Tensor, kind: str, memory_id: int, edit_ids: list[int] | None = None,
                 edit_scores: list[float] | None = None, keys: torch.Tensor | None = None,
                 mask_seed: int | None = None):
        self.factors: tuple[torch.Tensor, torch.Tensor] | None = None  # (U [out, r], V [in, r]): W' = W + U V^T
        self.columns: tuple[torch.Tensor, torch.Tensor] | None = None  # (inputs [k], change [out, k] float16)
        self.weight = weight
        self.kind = kind  # "shard" (being filled), "saved" (full, waiting for a merge) or "merged"
        self.memory_id = memory_id  # stable name in state dicts: the shard number it started as
        self.edit_ids = list(edit_ids or [])
        self.edit_scores = list(edit_scores or [])  # each edit's score when its training ended
        self.keys = keys  # [edits, in] float32, one per edit (None before the first)
        self.mask_seed = mask_seed  # a random gradient mask is regenerated from this seed

    # ---- storage ----------------------------------------------------------------------------------

    @property
    def weight(self) -> torch.Tensor:
        if self.columns is not None:
            inputs, change = self.columns
            rebuilt = self._base.clone()
            if self._transposed:
                rebuilt[inputs] += change.t().to(rebuilt.dtype)
            else:
                rebuilt[:, inputs] += change.to(rebuilt.dtype)
            return rebuilt
        if self.factors is not None:
            u, v = self.factors
            change = u @ v.t()
            return self._base + (change.t() if self._transposed else change).to(self._base.dtype)
        if self._dense is not None:
            return self._dense
        rebuilt = self._base.clone()
        rebuilt.view(-1)[self.positions] = self.values
        return rebuilt

    @weight.setter
    def weight(self, value: torch.Tensor) -> None:
        self._dense, self._base, self.positions, self.values, self.factors = value, None, None, None, None
        self.columns = None
        self._delta: tuple[torch.Tensor | None, torch.Tensor] | None = None

    def set_factors(self, base: torch.Tensor, u: torch.Tensor, v: torch.Tensor, transposed: bool) -> None:
        """Keep the memory as W + U V^T (a rank-r change of `base`, W itself, shared)."""
        self._dense, self._base, self.positions, self.values, self._delta = None, base, None, None, None
        self.factors, self.columns, self._transposed = (u, v), None, transposed

    def set_columns(self, base: torch.Tensor, inputs: torch.Tensor, change: torch.Tensor, transposed: bool) -> None:
        """Keep the memory as W plus `change` [out, k] on the inputs `inputs` (its column mask)."""
        self._dense, self._base, self.positions, self.values, self._delta = None, base, None, None, None
        self.factors, self.columns, self._transposed = None, (inputs, change), transposed

    @property
    def is_compact(self) -> bool:
        """Kept as changed entries (positions and values)."""
        return self._dense is None and self.factors is None and self.columns is None

    @property
    def nbytes(self) -> int:
        """Bytes this memory keeps in RAM (its key included)."""
        keys = self.keys.nbytes if self.keys is not None else 0
        if self.factors is not None or self.columns is not None:
            return sum(t.nbytes for t in (self.factors or self.columns)) + keys
        if self._dense is not None:
            return self._dense.nbytes + keys
        return self.positions.nbytes + self.values.nbytes + keys

    def compact(self, base: torch.Tensor) -> None:
        """Keep only the entries that differ from `base` (W itself, shared, never copied), as int32
        positions and values, when that is smaller than the dense copy."""
        if self.factors is not None or self.columns is not None:
            return
        dense = self.weight
        changed = (dense != base).reshape(-1).nonzero().squeeze(1)
        if 2 * changed.numel() < dense.numel():  # a position and a value per entry: smaller below half
            self.set_entries(base, changed.to(torch.int32), dense.reshape(-1)[changed].clone())

    def set_entries(self, base: torch.Tensor, positions: torch.Tensor, values: torch.Tensor) -> None:
        self._dense, self._base, self.positions, self.values = None, base, positions, values
        self._delta, self.factors = None, None

    def output(self, layer: WiseLayer, x: torch.Tensor, main_out: torch.Tensor) -> torch.Tensor:
        """The layer's output through this memory."""
        if self.columns is not None:
            inputs, change = self.columns
            return main_out + (x[..., inputs.to(x.device)] @ change.t().to(x.dtype)).to(main_out.dtype)
        if self.factors is not None:
            u, v = self.factors
            change = (x.float() @ v) @ u.t()
            return main_out + change.to(main_out.dtype)
        if self._dense is not None or self.positions.numel() >= _SPARSE_BELOW * self._base.numel():
            return layer.project(x, self.weight)
        columns, change = self._change(layer)
        flat = x.reshape(-1, x.shape[-1])
        if columns is not None:  # the change lives in a few inputs: a small dense product
            added = flat[:, columns].to(change.dtype) @ change.t()
        else:
            added = torch.sparse.mm(change, flat.t().to(change.dtype)).t()
        return main_out + added.to(main_out.dtype).view(main_out.shape)

    def _change(self, layer: WiseLayer) -> tuple[torch.Tensor | None, torch.Tensor]:
        """W' - W as [out, in], built once: (the inputs it touches, the dense [out, those inputs] block)
        when they are few, else (None, a sparse matrix)."""
        if self._delta is None:
            base = self._base.reshape(-1)
            positions = self.positions.long()
            delta = self.values - base[positions]
            width = self._base.shape[1]
            rows, cols = positions // width, positions % width
            if layer.transposed:  # the weight is [in, out]: its rows are the inputs
                rows, cols = cols, rows
            outputs, inputs = (self._base.shape[1], self._base.shape[0]) if layer.transposed else self._base.shape
            used, local = torch.unique(cols, return_inverse=True)
            if 4 * used.numel() <= inputs:
                block = torch.zeros((outputs, used.numel()), dtype=delta.dtype, device=delta.device)
                block[rows, local] = delta
                self._delta = (used, block)
            else:
                sparse = torch.sparse_coo_tensor(torch.stack([rows, cols]), delta, (outputs, inputs),
                                                 check_invariants=False).coalesce()
                self._delta = (None, sparse)
        return self._delta

    @property
    def min_score(self) -> float:
        return min(self.edit_scores) if self.edit_scores else float("inf")


@dataclass
class RoutingRule:
    """How a query picks a memory: the thresholds and, for many memories, the key pre-selection."""

    act_ratio: float = 0.88
    threshold_floor: float = 0.0  # absolute: no threshold below it, whatever the edits' scores
    shared_threshold: bool = True  # WISE-Merge: one threshold for all; WISE-Retrieve: one each
    candidates: int = 0  # score only the memories with the nearest keys (0: all)
    key_similarity: float = -1.0  # ... and only those whose key's cosine similarity reaches this


@dataclass(frozen=True, eq=False)
class KeyWhitening:
    """A linear map under which the question features of unrelated text have (nearly) equal variance in
    every direction, so a cosine between a query and a key weighs the directions all questions share
    (the template, the question form) less than those that tell questions apart.

    It is (C + eps I)^(-1/2), up to scale, for the features' covariance C about the background and eps a
    fraction of its mean variance, kept to C's leading directions: x -> x + ((x V) * gains) V^T, with V
    [in, r] orthonormal and gains in (-1, 0]. Its size is fixed (r columns), whatever the number of edits.
    """

    directions: torch.Tensor  # [in, r] float32
    gains: torch.Tensor  # [r] float32

    @classmethod
    def measure(cls, relative: torch.Tensor, shrink: float, rank: int) -> KeyWhitening:
        """From unrelated questions' features minus the background, [n, in]."""
        relative = relative.float()
        _, singular, right = torch.linalg.svd(relative, full_matrices=False)
        variances = singular.square() / relative.shape[0]  # C's eigenvalues, largest first
        eps = shrink * variances.sum() / relative.shape[1]  # shrink x the mean variance over all inputs
        kept = min(rank, variances.numel())
        gains = (eps / (variances[:kept] + eps)).sqrt() - 1.0
        return cls(right[:kept].t().contiguous(), gains)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        directions = self.directions.to(x.device)
        return x + ((x @ directions) * self.gains.to(x.device)) @ directions.t()

    @property
    def nbytes(self) -> int:
        return self.directions.nbytes + self.gains.nbytes


def key_directions(relative: torch.Tensor, whitening: KeyWhitening | None) -> torch.Tensor:
    """Unit vectors compared by cosine: features minus the background, whitened when a whitening is set."""
    relative = relative.float()
    return torch.nn.functional.normalize(whitening(relative) if whitening is not None else relative, dim=-1)


class _Rows:
    """A tensor that grows by appended rows, its storage doubled when full, so appending stays cheap."""

    def __init__(self) -> None:
        self._buffer: torch.Tensor | None = None
        self.count = 0

    def append(self, rows: torch.Tensor) -> None:
        needed = self.count + rows.shape[0]
        if self._buffer is None or needed > self._buffer.shape[0]:
            grown = rows.new_empty((max(64, 2 * needed), *rows.shape[1:]))
            if self._buffer is not None:
                grown[: self.count] = self._buffer[: self.count]
            self._buffer = grown
        self._buffer[self.count: needed] = rows
        self.count = needed

    def value(self) -> torch.Tensor | None:
        return None if self._buffer is None else self._buffer[: self.count]


class _FinishedIndex:
    """Routing data of the finished memories (merged, then saved): each one's lowest edit score and its
    edits' normalised keys. Finished memories are replaced, never changed in place, so the index is
    extended when memories are appended and built again only when the list is not an extension."""

    def __init__(self, whitening: KeyWhitening | None) -> None:
        self.whitening = whitening  # the keys' space: an index is built for one
        self.memories: list[SideMemory] = []
        self.min_scores = _Rows()
        self.keys = _Rows()
        self.owners = _Rows()  # the memory each key belongs to
        self.keyed = True  # every memory has keys
        self.nbytes = 0

    def extends_to(self, finished: list[SideMemory]) -> bool:
        """Whether `finished` is the indexed memories with more appended (or the same)."""
        return finished[: len(self.memories)] == self.memories and len(finished) >= len(self.memories)

    def extend(self, finished: list[SideMemory]) -> None:
        """Indexes the memories `finished` has beyond the indexed ones (see `extends_to`)."""
        for position, memory in enumerate(finished[len(self.memories):], start=len(self.memories)):
            self.nbytes += memory.nbytes
            self.min_scores.append(torch.tensor([memory.min_score], dtype=torch.float32))
            if memory.keys is None:
                self.keyed = False
            elif self.keyed:
                self.keys.append(key_directions(memory.keys, self.whitening))
                self.owners.append(torch.full((memory.keys.shape[0],), position, dtype=torch.long))
        self.memories = list(finished)


@dataclass(frozen=True)
class Routing:
    """What a query is routed among, in route order, with each memory's lowest edit score and, when every
    memory has keys, the normalised keys and the memory each belongs to."""

    memories: list[SideMemory]
    min_scores: torch.Tensor
    keys: torch.Tensor | None
    owners: torch.Tensor | None


@dataclass
class ShardMemories:
    """WISE's memory layout: the shard being filled, full shards waiting for a merge, merged memories."""

    shard: SideMemory
    saved: list[SideMemory] = field(default_factory=list)
    merged: list[SideMemory] = field(default_factory=list)
    total_edits: int = 0
    shards_started: int = 1
    merge_events: list[int] = field(default_factory=list)  # total_edits at each merge
    rule: RoutingRule = field(default_factory=RoutingRule)
    background: torch.Tensor | None = None  # mean question feature of unrelated text; keys are relative to it
    whitening: KeyWhitening | None = None  # keys and queries compared after it (None: plain cosine)

    def __post_init__(self) -> None:
        self._finished = _FinishedIndex(self.whitening)

    def _finished_index(self) -> _FinishedIndex:
        finished = self.merged + self.saved
        # A merge or a restore replaced the memories, or the settings changed the keys' space: indexed again.
        if not self._finished.extends_to(finished) or self._finished.whitening is not self.whitening:
            self._finished = _FinishedIndex(self.whitening)
        self._finished.extend(finished)
        return self._finished

    def routable(self) -> list[SideMemory]:
        """Memories a query may be routed to, in a fixed order (their index is the route)."""
        memories = self.merged + self.saved
        if self.shard.edit_ids:
            memories = memories + [self.shard]
        return memories

    def routing(self) -> Routing:
        """The memories a query is routed among now, with their scores and keys (see `Routing`)."""
        index = self._finished_index()
        finished = index.memories
        memories, min_scores = finished, index.min_scores.value()
        keys, owners = (index.keys.value(), index.owners.value()) if index.keyed and finished else (None, None)
        if min_scores is None:
            min_scores = torch.empty(0)
        shard = self.shard
        if shard.edit_ids:  # the shard being filled changes in place: taken as it is now
            memories = finished + [shard]
            min_scores = torch.cat([min_scores, torch.tensor([shard.min_score], dtype=torch.float32)])
            if shard.keys is None or not index.keyed:
                keys, owners = None, None
            else:
                shard_keys = key_directions(shard.keys, self.whitening)
                shard_owners = torch.full((shard.keys.shape[0],), len(finished), dtype=torch.long)
                keys = shard_keys if keys is None else torch.cat([keys, shard_keys.to(keys.device)])
                owners = shard_owners if owners is None else torch.cat([owners, shard_owners])
        return Routing(memories, min_scores, keys, owners)

    def __len__(self) -> int:
        return len(self.merged) + len(self.saved) + (1 if self.shard.edit_ids else 0)

    def clone(self) -> ShardMemories:
        """Only the shard being filled is ever changed in place (training, finishing an edit); full and
        merged memories are replaced, never modified, so a snapshot shares them instead of copying."""
        shard = SideMemory(self.shard.weight.clone(), self.shard.kind, self.shard.memory_id, self.shard.edit_ids,
                           self.shard.edit_scores, self.shard.keys, self.shard.mask_seed)
        if self.shard.factors is not None:
            shard.set_factors(self.shard._base, *self.shard.factors, self.shard._transposed)
        elif self.shard.columns is not None:
            shard.set_columns(self.shard._base, *self.shard.columns, self.shard._transposed)
        return ShardMemories(shard, list(self.saved), list(self.merged), self.total_edits, self.shards_started,
                             list(self.merge_events), self.rule, self.background, self.whitening)

    def nbytes(self) -> int:
        whitening = self.whitening.nbytes if self.whitening is not None else 0
        return self._finished_index().nbytes + self.shard.nbytes + whitening

    # ---- routing ------------------------------------------------------------------------------------

    def thresholds(self, routing: Routing | None = None) -> torch.Tensor:
        """Each routable memory's threshold, in route order."""
        rule, scores = self.rule, (routing if routing is not None else self.routing()).min_scores
        if rule.shared_threshold and scores.numel():
            scores = scores.min().expand(scores.numel())
        return (rule.act_ratio * scores).clamp_min(rule.threshold_floor)

    def output(self, layer: WiseLayer, x: torch.Tensor, main_out: torch.Tensor, index: int) -> torch.Tensor:
        return self.routable()[index].output(layer, x, main_out)

    def candidates(self, routing: Routing, x: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
        """[B, C] memory indices to score per sequence (MAIN where a slot stays empty): all of them, or
        the nearest keys, those whose similarity reaches the rule's floor."""
        count, memories = self.rule.candidates, routing.memories
        batch = x.shape[0]
        if not self._by_key(routing):
            return torch.arange(len(memories)).expand(batch, -1)
        query = key_directions(question_features(x, token_mask) - self.background.to(x.device), self.whitening)
        similarity = query @ routing.keys.to(x.device).t()  # [B, keys]
        per_memory = torch.full((batch, len(memories)), -2.0, device=x.device)
        per_memory = per_memory.scatter_reduce(1, routing.owners.to(x.device).expand(batch, -1), similarity, "amax")
        # Newest first among equal keys: a question edited again (a corrected fact) has its earlier
        # edit's key exactly, and the edit applied last must answer it.
        newest_first = torch.arange(len(memories) - 1, -1, -1, device=x.device)
        nearest = per_memory[:, newest_first].sort(dim=1, descending=True, stable=True)
        values, indices = nearest.values[:, :count], newest_first[nearest.indices[:, :count]]
        return torch.where(values >= self.rule.key_similarity, indices, MAIN).cpu()

    def _by_key(self, routing: Routing) -> bool:
        return self.rule.candidates > 0 and self.background is not None and routing.keys is not None

    def route(self, layer: WiseLayer, x: torch.Tensor, main_out: torch.Tensor,
              token_mask: torch.Tensor | None) -> RouteInfo:
        routing = self.routing()
        memories = routing.memories
        thresholds = self.thresholds(routing).to(x.device)
        candidates = self.candidates(routing, x, token_mask)
        # With a key index the candidates come nearest key first: of the memories above their threshold,
        # the one whose edit is nearest the question answers. The activation score alone would let a
        # near-identical question (the same fact asked in other words, edited twice) win on its twin's
        # memory, which it lights up as strongly as its own.
        by_key = self._by_key(routing)
        batch, length = x.shape[0], x.shape[1]
        best_score = torch.full((batch,), float("-inf"), device=x.device)
        best = torch.full((batch,), MAIN, dtype=torch.long, device=x.device)
        best_tokens = torch.zeros((batch, length), device=x.device)
        chosen_score = torch.full((batch,), float("-inf"), device=x.device)
        choice = torch.full((batch,), MAIN, dtype=torch.long, device=x.device)
        chosen_tokens = torch.zeros((batch, length), device=x.device)
        chosen_rank = torch.full((batch,), candidates.shape[1], dtype=torch.long, device=x.device)
        scored = sorted(set(candidates.flatten().tolist()) - {MAIN})
        for index in scored:
            hits = (candidates == index).to(x.device)
            rows = hits.any(dim=1)
            rank = hits.long().argmax(dim=1)  # its place among the row's candidates, nearest key first
            distances = token_distances(layer.act_fn, memories[index].output(layer, x, main_out), main_out).float()
            if token_mask is not None:
                distances = distances * token_mask.to(distances.dtype)
            scores = torch.where(rows, sequence_scores(distances, token_mask), float("-inf"))
            better = scores > best_score
            best_score = torch.where(better, scores, best_score)
            best = torch.where(better, index, best)
            best_tokens = torch.where(better.unsqueeze(1), distances, best_tokens)
            above = (scores > thresholds[index]) & ((rank < chosen_rank) if by_key else (scores > chosen_score))
            chosen_rank = torch.where(above, rank, chosen_rank)
            chosen_score = torch.where(above, scores, chosen_score)
            choice = torch.where(above, index, choice)
            chosen_tokens = torch.where(above.unsqueeze(1), distances, chosen_tokens)
        # Shown: the memory that answers, else the one that came closest.
        routed = choice != MAIN
        shown = torch.where(routed, choice, best)
        return RouteInfo(choice=choice.cpu(), best=shown.cpu(),
                         score=torch.where(routed, chosen_score, best_score).detach().cpu(),
                         threshold=torch.where(shown == MAIN, float("inf"), thresholds[shown.clamp_min(0)]).cpu(),
                         per_token=torch.where(routed.unsqueeze(1), chosen_tokens, best_tokens).detach().cpu(),
                         scored=len(scored))
