"""FT-L, the "long-term memory" baseline: fine-tune the edited layer's down-projection weight itself.

Each edit takes Adam steps on the weight W (nothing else trains) to lower the cross-entropy of the target
tokens after the prompt, optionally keeping every entry within +-norm_constraint of the original W (the
L-infinity constraint FT-L is named for). The edit overwrites W: there is no added state and no routing,
so later edits and unrelated prompts see every change. `detach()` puts the original W back.

Objective: teacher-forced target tokens, as the benchmark scores Rel. EasyEdit's FT-L ("prompt_last")
predicts all target tokens from the last prompt position instead; this objective is its stronger sibling.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from wise_gui.core.baselines.base import LayerMethod, TrainSettings, optimise, target_loss
from wise_gui.core.edits import EditRequest
from wise_gui.core.models import LoadedModel
from wise_gui.core.tokens import TokenBatch


@dataclass
class FtSettings(TrainSettings):
    """EasyEdit's FT values for LLaMA-2-7B: Adam lr 5e-4, 25 steps, no norm constraint (None)."""

    lr: float = 5e-4
    n_iter: int = 25
    norm_constraint: float | None = None


class FineTuneLayer(LayerMethod):
    name = "ft-l"
    overwrites_weights = True

    def __init__(self, loaded: LoadedModel, layer_index: int, settings: FtSettings | None = None):
        super().__init__(loaded, layer_index, settings or FtSettings())
        self.weight = self.down_projection.weight  # the model's own parameter, trained in place
        self.original = self.weight.detach().clone()

    @contextmanager
    def _edits(self, use_edits: bool, question_mask: torch.Tensor, lock: bool):
        if use_edits:
            yield
            return
        edited = self.weight.data
        self.weight.data = self.original  # the unedited model, for Loc's "before" and the bare speed
        try:
            yield
        finally:
            self.weight.data = edited

    def _learn(self, request: EditRequest, batch: TokenBatch) -> int:
        self.weight.requires_grad_(True)
        try:
            return optimise([self.weight], lambda: target_loss(self._logits(batch), batch), self.settings,
                            after_step=self._constrain if self.settings.norm_constraint is not None else None)
        finally:
            self.weight.requires_grad_(False)

    def _constrain(self) -> None:
        bound = self.settings.norm_constraint
        self.weight.clamp_(min=self.original - bound, max=self.original + bound)

    def snapshot(self) -> torch.Tensor:
        return self.weight.detach().clone()

    def restore(self, snapshot: torch.Tensor) -> None:
        with torch.no_grad():
            self.weight.copy_(snapshot)

    def added_state_bytes(self) -> int:
        return 0

    def detach(self) -> None:
        self.restore(self.original)
