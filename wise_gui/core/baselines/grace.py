"""GRACE (Hartvigsen et al., 2023), the "working memory" baseline: a codebook of keys and values at one
layer's down projection, each key with a deferral radius.

- Key: the down projection's input at the last prompt token of an edit.
- Value: a vector trained to replace the down projection's output. When a query's nearest key lies within
  that key's radius, its value replaces the layer output at every token of the sequence (GRACE's
  replace_all); otherwise the layer computes exactly what it did before (bit for bit).
- A new edit, with d the distance to the nearest key j (radius eps_j):
    d > eps_init + eps_j   -> a new key with radius eps_init;
    same target as j       -> expand: eps_j = max(eps_j, d), and j's value goes on training on this prompt;
    another target         -> split: a new key, and both radii d / 2 so the two balls only touch
                              (at d = 0, the very same prompt again, key j takes the new target instead).
- Lookup on the last prompt token; in generation it is decided on the prompt and kept for every new token.

Deliberate differences from EasyEdit's GRACE: values start from the layer's own output at the key
(EasyEdit: random, "cold"), and the lookup is per row of a batch (EasyEdit: one position for the batch).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from wise_gui.core.baselines.base import (
    LayerMethod,
    ProjectionWrapper,
    TrainSettings,
    last_marked,
    optimise,
    target_loss,
)
from wise_gui.core.edits import EditRequest
from wise_gui.core.errors import WiseGuiError
from wise_gui.core.inference import MAIN
from wise_gui.core.models import LoadedModel
from wise_gui.core.tokens import TokenBatch


@dataclass
class GraceSettings(TrainSettings):
    """EasyEdit's GRACE values for LLaMA-2-7B: Adam lr 1.0, 100 steps, initial radius 1.0 (Euclidean)."""

    lr: float = 1.0
    n_iter: int = 100
    eps_init: float = 1.0
    replacement: str = "all"
    """'all': a hit replaces the layer output at every token (GRACE's replace_all); 'last': only at the
    looked-up last prompt token (replace_last)."""


@dataclass
class Codebook:
    keys: torch.Tensor  # [K, input size of the down projection]
    values: torch.Tensor  # [K, output size]
    radii: torch.Tensor  # [K] deferral radius of each key
    labels: list[str]  # the target each key was trained for (the expand/split rule compares them)

    @classmethod
    def empty(cls, key_size: int, value_size: int, dtype: torch.dtype, device: torch.device) -> Codebook:
        return cls(torch.empty(0, key_size, dtype=dtype, device=device),
                   torch.empty(0, value_size, dtype=dtype, device=device),
                   torch.empty(0, dtype=torch.float32, device=device), [])

    def __len__(self) -> int:
        return len(self.labels)

    def clone(self) -> Codebook:
        return Codebook(self.keys.clone(), self.values.clone(), self.radii.clone(), list(self.labels))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.keys, self.values, self.radii))

    def nearest(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per query [B, key size]: the Euclidean distance to the nearest key and that key's index."""
        distances = torch.cdist(queries.float(), self.keys.float())
        return distances.min(dim=1)

    def add(self, key: torch.Tensor, value: torch.Tensor, radius: float, label: str) -> int:
        self.keys = torch.cat([self.keys, key.detach().unsqueeze(0).to(self.keys.dtype)])
        self.values = torch.cat([self.values, value.detach().unsqueeze(0).to(self.values.dtype)])
        self.radii = torch.cat([self.radii, self.radii.new_tensor([radius])])
        self.labels.append(label)
        return len(self) - 1

    def place(self, key: torch.Tensor, label: str, eps_init: float, initial_value: torch.Tensor) -> int:
        """Apply GRACE's rules for a new edit (see the module docstring); returns the slot to train."""
        if len(self):
            distance, index = self.nearest(key.unsqueeze(0))
            d, j = float(distance[0]), int(index[0])
            if d <= eps_init + float(self.radii[j]):
                if self.labels[j] == label:
                    self.radii[j] = max(float(self.radii[j]), d)
                    return j
                if d == 0.0:
                    self.labels[j] = label
                    self.values[j] = initial_value.detach().to(self.values.dtype)
                    return j
                self.radii[j] = d / 2
                return self.add(key, initial_value, d / 2, label)
        return self.add(key, initial_value, eps_init, label)


class GraceLayer(ProjectionWrapper):
    """The down projection with the codebook in front: per sequence, the stored value or the layer's own output."""

    def __init__(self, original, codebook: Codebook, replace_all: bool):
        super().__init__(original)
        self.codebook = codebook
        self.replace_all = replace_all
        self.enabled = True
        # Set by Grace around a forward pass: the token each row is looked up on ...
        self.query_positions: torch.Tensor | None = None
        # ... and, in generation, the decision taken on the prompt, kept for the generated tokens.
        self.keep_decision = False
        self.locked: tuple[torch.Tensor, torch.Tensor] | None = None
        self.last_choice: torch.Tensor | None = None
        self.training_value: torch.Tensor | None = None  # while an edit trains: its value, on every row

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.original(x)
        if self.training_value is not None:
            hit = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
            values = self.training_value.expand(x.shape[0], -1)
        elif self.enabled and len(self.codebook):
            if self.locked is not None and not self.replace_all:
                return out  # replace_last changed only the prompt's last token, never a generated one
            hit, index = self._lookup(x)
            values = self.codebook.values[index]
        else:
            return out
        replaced = hit.view(-1, 1)
        if not self.replace_all:
            tokens = torch.arange(x.shape[1], device=x.device)
            replaced = replaced & (tokens == self._positions(x).unsqueeze(1))
        return torch.where(replaced.unsqueeze(-1), values.to(out.dtype).unsqueeze(1).expand_as(out), out)

    def _positions(self, x: torch.Tensor) -> torch.Tensor:
        positions = self.query_positions
        if positions is None or positions.shape[0] != x.shape[0]:
            return torch.full((x.shape[0],), x.shape[1] - 1, device=x.device)  # a pass nobody set up: its last token
        return positions.to(x.device)

    def _lookup(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.locked is not None:
            return self.locked
        rows = torch.arange(x.shape[0], device=x.device)
        distance, index = self.codebook.nearest(x[rows, self._positions(x)])
        hit = distance <= self.codebook.radii[index]
        self.last_choice = torch.where(hit, index, torch.full_like(index, MAIN)).cpu()
        if self.keep_decision:
            self.locked = (hit, index)
        return hit, index


class Grace(LayerMethod):
    name = "grace"

    def __init__(self, loaded: LoadedModel, layer_index: int, settings: GraceSettings | None = None):
        super().__init__(loaded, layer_index, settings or GraceSettings())
        original = self.down_projection
        weight = original.weight
        # nn.Linear stores [out, in]; GPT-2's Conv1D [in, out].
        key_size, value_size = weight.shape if self.arch.transposed else weight.shape[::-1]
        if self.settings.replacement not in ("all", "last"):
            raise WiseGuiError(f"GRACE replacement must be 'all' or 'last', not {self.settings.replacement!r}.")
        self.layer = GraceLayer(original, Codebook.empty(key_size, value_size, weight.dtype, weight.device),
                                replace_all=self.settings.replacement == "all")
        self.arch.replace_down_projection(self.layer)

    @property
    def codebook(self) -> Codebook:
        return self.layer.codebook

    @contextmanager
    def _edits(self, use_edits: bool, question_mask: torch.Tensor, lock: bool):
        layer = self.layer
        layer.enabled, layer.query_positions, layer.keep_decision = use_edits, last_marked(question_mask), lock
        layer.last_choice = None
        try:
            yield
        finally:
            layer.enabled, layer.query_positions, layer.keep_decision, layer.locked = True, None, False, None

    def _choices(self) -> torch.Tensor | None:
        return self.layer.last_choice

    @torch.no_grad()
    def _key_and_output(self, batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The down projection's input and its own output at the last prompt token."""
        captured = {}

        def keep(module, args, output):
            captured["input"], captured["output"] = args[0], output

        handle = self.layer.original.register_forward_hook(keep)
        try:
            with self._edits(False, batch.score_mask, lock=False):
                self._logits(batch)
        finally:
            handle.remove()
        position = int(last_marked(batch.score_mask)[0])
        return captured["input"][0, position], captured["output"][0, position]

    def _learn(self, request: EditRequest, batch: TokenBatch) -> int:
        key, own_output = self._key_and_output(batch)
        slot = self.codebook.place(key, request.target, self.settings.eps_init, own_output)
        value = self.codebook.values[slot].clone().requires_grad_(True)
        self.layer.training_value = value
        try:
            with self._edits(True, batch.score_mask, lock=False):
                iterations = optimise([value], lambda: target_loss(self._logits(batch), batch), self.settings)
        finally:
            self.layer.training_value = None
        self.codebook.values[slot] = value.detach()
        return iterations

    def snapshot(self) -> Codebook:
        return self.codebook.clone()

    def restore(self, snapshot: Codebook) -> None:
        self.layer.codebook = snapshot.clone()

    def added_state_bytes(self) -> int:
        return self.codebook.nbytes()

    def detach(self) -> None:
        self.arch.replace_down_projection(self.layer.original)
