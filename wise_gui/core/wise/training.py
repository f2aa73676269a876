"""Training one edit into the current shard: the batch, the two forward paths, the loss, the steps.

Everything below the edited layer is frozen, and so is everything in that layer but W': the input
`a` of the down projection and the residual stream it is added to never change during an edit.
The cached path computes them once and, in each step, runs only the layers above with the LM head
at the target positions. The full path runs the whole model each step; both give the same loss.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from wise_gui.core.tokens import TokenBatch, encode_pair, pad_id, pad_rows
from wise_gui.core.wise.architecture import Architecture
from wise_gui.core.wise.memory import WiseLayer
from wise_gui.core.wise.settings import WiseSettings


@dataclass
class StepEvent:
    """One optimisation step, reported as plain numbers for plots and logs."""

    iteration: int
    ce_loss: float
    margin_loss: float
    total_loss: float
    edit_scores: list[float]
    irrelevant_score: float  # the highest score among the irrelevant rows
    seconds: float


@dataclass
class MarginTargets:
    alpha: float
    beta: float
    gamma: float


def build_edit_batch(tokenizer, prompt: str, target: str, templates: list[str]) -> TokenBatch:
    """Rows: the prompt as is and behind each context template, each followed by " target"."""
    rows = [encode_pair(tokenizer, prefix, prompt, target) for prefix in [""] + templates]
    return pad_rows(rows, pad_id(tokenizer), [False] * len(rows))


def build_irrelevant_batch(tokenizer, samples: list[str]) -> TokenBatch | None:
    """Unrelated texts, scored on all their tokens; they need no target and no upper layers."""
    if not samples:
        return None
    rows = [([], tokenizer(text, add_special_tokens=False)["input_ids"], []) for text in samples]
    return pad_rows(rows, pad_id(tokenizer), [True] * len(rows))


def masked_mean_positive(values: torch.Tensor) -> torch.Tensor:
    """Mean over the violating entries only (as the reference does), 0 when none violates."""
    positive = values[values > 0]
    return positive.mean() if positive.numel() else values.new_zeros(())


def margin_loss(edit_scores: torch.Tensor, irrelevant_scores: torch.Tensor | None, margins: MarginTargets) -> torch.Tensor:
    loss = masked_mean_positive(margins.beta - edit_scores)
    if irrelevant_scores is not None:
        loss = loss + masked_mean_positive(irrelevant_scores - margins.alpha)
        # Every (edit row, irrelevant row) pair keeps the gap, as in the reference.
        gaps = edit_scores.unsqueeze(0) - irrelevant_scores.unsqueeze(1)
        loss = loss + masked_mean_positive(margins.gamma - gaps)
    return loss


class _CapturedForward:
    """Runs the full model once under no_grad and keeps what the cached steps reuse."""

    def __init__(self, arch: Architecture, layer: WiseLayer, batch: TokenBatch, device: torch.device, upper: bool = True):
        self.residual: torch.Tensor | None = None
        self.upper_calls: list[tuple[tuple, dict]] = []
        handles = [arch.pre_mlp_norm.register_forward_pre_hook(self._keep_residual)]
        for layer_above in arch.upper_layers() if upper else []:
            handles.append(layer_above.register_forward_pre_hook(self._keep_call, with_kwargs=True))
        layer.capture_input = True
        try:
            with torch.no_grad():
                arch.model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device), use_cache=False)
        finally:
            layer.capture_input = False
            for handle in handles:
                handle.remove()
        self.down_input = layer.captured_input
        layer.captured_input = None

    def _keep_residual(self, module, args):
        self.residual = args[0].detach()

    def _keep_call(self, module, args, kwargs):
        self.upper_calls.append((args[1:], dict(kwargs)))


class EditTrainer:
    """The loss of one edit as a function of the shard weight W', by the cached or the full path."""

    def __init__(self, arch: Architecture, layer: WiseLayer, batch: TokenBatch, irrelevant: TokenBatch | None,
                 margins: MarginTargets, full_forward: bool,
                 replay_inputs: list[tuple[torch.Tensor, torch.Tensor]] | None = None):
        self.arch = arch
        self.layer = layer
        self.batch = batch
        self.irrelevant = irrelevant
        self.n_edit_rows = batch.input_ids.shape[0]
        self.margins = margins
        self.full_forward = full_forward
        self.device = layer.weight.device
        self.replay_inputs = replay_inputs or []
        self.captured = _CapturedForward(arch, layer, batch, self.device)
        self.down_input = self.captured.down_input
        self.main_activation = layer.act_fn(layer.project(self.down_input, layer.weight))
        self.score_mask = batch.score_mask.to(self.device)
        if irrelevant is not None:
            self.irrelevant_input = _CapturedForward(arch, layer, irrelevant, self.device, upper=False).down_input
            self.irrelevant_main = layer.act_fn(layer.project(self.irrelevant_input, layer.weight))
            self.irrelevant_mask = irrelevant.score_mask.to(self.device)
        # Positions whose logits predict a target token: one before each target token.
        target_mask = batch.target_mask.to(self.device)
        self.predict_rows, self.predict_cols = target_mask[:, 1:].nonzero(as_tuple=True)
        self.target_ids = batch.input_ids.to(self.device)[self.predict_rows, self.predict_cols + 1]

    def _scores(self, down_output, main_activation, mask) -> torch.Tensor:
        distances = torch.linalg.vector_norm(self.layer.act_fn(down_output) - main_activation, dim=-1)
        return self.layer.sequence_scores(distances, mask)

    def edit_scores(self, weight: torch.Tensor) -> torch.Tensor:
        return self._scores(self.layer.project(self.down_input, weight), self.main_activation, self.score_mask)

    def irrelevant_scores(self, weight: torch.Tensor) -> torch.Tensor | None:
        if self.irrelevant is None:
            return None
        return self._scores(self.layer.project(self.irrelevant_input, weight), self.irrelevant_main, self.irrelevant_mask)

    def _ce_from_target_logits(self, logits: torch.Tensor) -> torch.Tensor:
        token_losses = F.cross_entropy(logits.float(), self.target_ids, reduction="none")
        # Mean over each edit row's target tokens, then over the rows (as the reference does).
        per_row = torch.zeros(self.n_edit_rows, device=logits.device).index_add(0, self.predict_rows, token_losses)
        counts = torch.zeros_like(per_row).index_add(0, self.predict_rows, torch.ones_like(token_losses))
        return (per_row / counts.clamp_min(1)).mean()

    def losses(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(cross-entropy, margin loss, edit-row scores, irrelevant-row scores) for shard weight `weight`."""
        if self.full_forward:
            down_output, target_logits, irrelevant_output = self._full_path(weight)
            irrelevant_scores = (None if irrelevant_output is None else
                                 self._scores(irrelevant_output, self.irrelevant_main, self.irrelevant_mask))
        else:
            down_output, target_logits = self._cached_path(weight)
            irrelevant_scores = self.irrelevant_scores(weight)
        ce = self._ce_from_target_logits(target_logits)
        self.all_targets_predicted = bool((target_logits.argmax(-1) == self.target_ids).all())
        edit_scores = self._scores(down_output, self.main_activation, self.score_mask)
        margin = margin_loss(edit_scores, irrelevant_scores, self.margins)
        for down_input, mask in self.replay_inputs:
            main = self.layer.act_fn(self.layer.project(down_input, self.layer.weight))
            replay_scores = self._scores(self.layer.project(down_input, weight), main, mask)
            margin = margin + masked_mean_positive(replay_scores - self.margins.alpha)
        return ce, margin, edit_scores, irrelevant_scores

    def _cached_path(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        down_output = self.layer.project(self.down_input, weight)
        hidden = self.captured.residual + down_output
        calls = list(zip(self.arch.upper_layers(), self.captured.upper_calls))
        # Llama-family layers are called with keyword arguments only; anything else runs whole.
        trim_last = bool(calls) and self.arch.family == "llama" and not calls[-1][1][0]
        for upper, (args, kwargs) in calls[:-1] if trim_last else calls:
            out = upper(hidden, *args, **kwargs)
            hidden = out[0] if isinstance(out, tuple) else out
        if trim_last:
            last_layer, (_, last_kwargs) = calls[-1]
            picked = self._llama_layer_at_targets(last_layer, hidden, last_kwargs)
        else:
            picked = hidden[self.predict_rows, self.predict_cols]
        return down_output, self.arch.lm_head(self.arch.final_norm(picked))

    def _llama_layer_at_targets(self, layer, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
        """The last decoder layer, with its MLP (two thirds of the layer's work) only at the positions
        whose logits are used; attention still reads every position. Same result as the whole layer."""
        attention, _ = layer.self_attn(layer.input_layernorm(hidden), **kwargs)
        picked = (hidden + attention)[self.predict_rows, self.predict_cols]
        return picked + layer.mlp(layer.post_attention_layernorm(picked))

    def _full_path(self, weight: torch.Tensor):
        """The reference way: every row through the whole model, every step."""
        shard = self.layer.state.shard
        stored = shard.weight
        shard.weight = weight
        try:
            down_output, logits = self._run_whole_model(self.batch)
            irrelevant_output = self._run_whole_model(self.irrelevant)[0] if self.irrelevant is not None else None
        finally:
            shard.weight = stored
        return down_output, logits[self.predict_rows, self.predict_cols], irrelevant_output

    def _run_whole_model(self, batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
        outputs: list[torch.Tensor] = []
        hook = self.layer.register_forward_hook(lambda module, args, out: outputs.append(out))
        try:
            logits = self.arch.model(input_ids=batch.input_ids.to(self.device),
                                     attention_mask=batch.attention_mask.to(self.device), use_cache=False).logits
        finally:
            hook.remove()
        return outputs[0], logits


def train_steps(trainer: EditTrainer, weight: torch.Tensor, mask: torch.Tensor, settings: WiseSettings,
                should_stop: Callable[[], bool] | None = None) -> Iterator[StepEvent]:
    """SGD on `weight` in place, gradient restricted to `mask`, each entry clamped to W +- norm_constraint.
    Yields after every step; stops early (reference rule) or when `should_stop()` says so."""
    original = trainer.layer.weight
    low, high = original - settings.norm_constraint, original + settings.norm_constraint
    started = time.perf_counter()
    previous = float("inf")
    learnt_streak = 0
    mask = mask.to(weight.dtype)
    for iteration in range(settings.n_iter):
        if should_stop is not None and should_stop():
            return
        trainable = weight.detach().requires_grad_(True)
        ce, margin, edit_scores, irrelevant_scores = trainer.losses(trainable)
        total = ce + margin
        value = float(total.detach())
        event = _event(iteration, ce, margin, total, edit_scores, irrelevant_scores, started)
        converged = value <= settings.early_stop_loss and abs(previous - value) <= settings.early_stop_delta
        learnt_streak = learnt_streak + 1 if _learnt(trainer, edit_scores, irrelevant_scores) else 0
        settled = settings.stop_when_learnt and learnt_streak > settings.settle_steps
        if converged or settled:
            yield event
            return
        (grad,) = torch.autograd.grad(total, trainable)
        with torch.no_grad():
            weight.sub_(settings.lr * grad * mask)
            torch.clamp_(weight, min=low, max=high)
        previous = value
        yield event


def _learnt(trainer: EditTrainer, edit_scores: torch.Tensor, irrelevant_scores: torch.Tensor | None) -> bool:
    """Every target token is the top prediction and the edit rows fire with their margins. The
    irrelevant rows' own margin is left out: it moves little once the edit is in, and the routing
    threshold, not this margin, keeps unrelated prompts on the main memory."""
    if not trainer.all_targets_predicted:
        return False
    lowest = float(edit_scores.detach().min())
    if lowest < trainer.margins.beta:
        return False
    return irrelevant_scores is None or lowest - float(irrelevant_scores.detach().max()) >= trainer.margins.gamma


def _event(iteration, ce, margin, total, edit_scores, irrelevant_scores, started) -> StepEvent:
    irrelevant = irrelevant_scores.detach().float().cpu().tolist() if irrelevant_scores is not None else []
    return StepEvent(
        iteration=iteration,
        ce_loss=float(ce.detach()),
        margin_loss=float(margin.detach()),
        total_loss=float(total.detach()),
        edit_scores=edit_scores.detach().float().cpu().tolist(),
        irrelevant_score=max(irrelevant) if irrelevant else float("nan"),
        seconds=time.perf_counter() - started,
    )
