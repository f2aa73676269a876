"""What every editing method at one FFN down projection shares: the evaluation interface (inherited from
`EditedModel`, as WiseEditor's is, so one evaluation measures every method alike), a training loop, and
the attach/snapshot/detach life cycle.

A subclass says how its edit changes the layer (`_edits`), how it learns an edit (`_learn`) and what
its state is (`snapshot`/`restore`/`added_state_bytes`). Baselines learn the raw form only.
"""

from __future__ import annotations

import dataclasses
import json
import time
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wise_gui.core.edits import EditRequest
from wise_gui.core.errors import WiseGuiError
from wise_gui.core.inference import MAIN, EditedModel, Route
from wise_gui.core.models import LoadedModel
from wise_gui.core.tokens import TokenBatch, pad_id, pad_rows
from wise_gui.core.wise.architecture import Architecture
from wise_gui.core.wise.memory import WiseLayer

# ----------------------------------------------------------------------------------------------
# Token helpers


def last_marked(mask: torch.Tensor) -> torch.Tensor:
    """Per row, the index of the last True position of `mask` [B, T] (the last question token)."""
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

    def replace(self, **changes) -> TrainSettings:
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


@dataclass(frozen=True)
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


class LayerMethod(EditedModel):
    """An editing method attached to one decoder layer's FFN down projection of a loaded model."""

    name = ""
    overwrites_weights = False  # True: the edit lives in the model's own weight, not in added state

    def __init__(self, loaded: LoadedModel, layer_index: int, settings: TrainSettings):
        super().__init__(loaded)
        self.settings = settings
        self.arch = Architecture.of(loaded.model, layer_index)
        current = self.arch.down_projection()
        if isinstance(current, (WiseLayer, ProjectionWrapper)):
            raise WiseGuiError(f"Layer {layer_index} already has an editor attached ({type(current).__name__}); "
                               "detach it first.")

    @property
    def layer_index(self) -> int:
        return self.arch.layer_index

    @property
    def down_projection(self) -> nn.Module:
        return self.arch.down_projection()

    # ---- what a subclass defines ------------------------------------------------------------------

    @abstractmethod
    def _learn(self, request: EditRequest, batch: TokenBatch) -> int:
        """Train one edit on `prompt + " " + target`; returns the number of forward passes."""

    def _choices(self) -> torch.Tensor | None:
        """Per row of the last forward pass, which stored edit answered (MAIN: none); None: no lookup."""
        return None

    def _routes(self, rows: int) -> list[Route]:
        choices = self._choices()
        if choices is None:
            return [Route(MAIN, "main")] * rows
        return [Route(int(c), "codebook") if int(c) != MAIN else Route(MAIN, "main") for c in choices.tolist()]

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

    # ---- editing ------------------------------------------------------------------------------------

    def apply_edit(self, request: EditRequest) -> EditResult:
        problems = request.validate()
        if problems:
            raise WiseGuiError("This edit cannot be applied: " + "; ".join(problems) + ".")
        started = time.perf_counter()
        before = self.snapshot()
        p = self.prompter
        batch = pad_rows([p.with_target(p.question(request.prompt), request.target)], pad_id(self.tokenizer))
        try:
            iterations = self._learn(request, batch)
        except BaseException:  # e.g. Ctrl+C mid-training: no half-learnt edit stays behind
            self.restore(before)
            raise
        return EditResult(seconds=time.perf_counter() - started, iterations=iterations)
