"""Training one edit: the rows, the two forward paths, the loss, and the steps as a generator of events.

Everything below the edited layer is frozen, and so is everything in that layer but W': the input
`a` of the down projection and the residual stream it is added to never change during an edit.
The cached path computes them once and, in each step, runs only the layers above with the LM head
at the target positions. The full path runs the whole model each step; both give the same loss.

The edit's rows come in groups (raw form, chat form), each padded on its own so a long chat row does not
pad every raw row; each group has a share of the cross-entropy.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from wise_gui.core.tokens import TokenBatch
from wise_gui.core.wise.architecture import Architecture
from wise_gui.core.wise.memory import WiseLayer, question_features, sequence_scores
from wise_gui.core.wise.settings import WiseSettings


@dataclass(frozen=True)
class StepEvent:
    """One optimisation step, reported as plain numbers for plots and logs."""

    iteration: int
    ce_loss: float
    margin_loss: float
    total_loss: float
    edit_scores: list[float]
    irrelevant_score: float  # the highest score among the irrelevant rows (NaN: none)
    seconds: float  # since the edit's training started
    learnt: bool  # every target token is predicted and the margins hold


@dataclass(frozen=True)
class MarginTargets:
    alpha: float
    beta: float
    gamma: float


@dataclass(frozen=True)
class RowGroup:
    """Edit rows padded together, and their share of the cross-entropy."""

    batch: TokenBatch
    weight: float


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


class _EnoughCaptured(Exception):
    """Raised from a hook to end a capturing forward pass once it holds what the caller needs."""


class CapturedForward:
    """Runs the frozen model under no_grad up to what the cached steps reuse, and no further: the
    edited layer's input and residual and, with `upper`, the arguments of each layer above. The last
    layer and the LM head (a fifth of a small model's work, at every position) are never run here."""

    def __init__(self, arch: Architecture, layer: WiseLayer, batch: TokenBatch, device: torch.device, upper: bool = True):
        self.residual: torch.Tensor | None = None
        self.upper_calls: list[tuple[tuple, dict]] = []
        layers_above = arch.upper_layers() if upper else []
        handles = [arch.pre_mlp_norm.register_forward_pre_hook(self._keep_residual)]
        for layer_above in layers_above:
            handles.append(layer_above.register_forward_pre_hook(self._keep_call, with_kwargs=True))
        if layers_above:
            handles.append(layers_above[-1].register_forward_pre_hook(self._stop, with_kwargs=True))
        else:
            handles.append(layer.register_forward_hook(self._stop))
        try:
            with torch.no_grad(), layer.off(), layer.capturing() as inputs:
                arch.model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                           use_cache=False)
        except _EnoughCaptured:
            pass
        finally:
            for handle in handles:
                handle.remove()
        self.down_input = inputs[0]

    def _keep_residual(self, module, args):
        self.residual = args[0].detach()

    def _keep_call(self, module, args, kwargs):
        self.upper_calls.append((args[1:], dict(kwargs)))

    @staticmethod
    def _stop(*_):
        raise _EnoughCaptured


class _TargetCrossEntropy(torch.autograd.Function):
    """Per-position cross-entropy of `targets` under lm_head(hidden), and whether each target is the
    top prediction. The backward reuses the forward's log-softmax (F.cross_entropy reads the
    [positions, vocabulary] logits four times over); the head's weight is frozen."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets):
        # The products run in the weight's dtype (a bfloat16 copy: head_bfloat16), the softmax in float32.
        bias = None if bias is None else bias.to(weight.dtype)
        logits = F.linear(hidden.to(weight.dtype), weight, bias).float()
        log_probs = torch.log_softmax(logits, dim=-1)
        positions = torch.arange(targets.shape[0], device=targets.device)
        ctx.save_for_backward(log_probs, targets, weight)
        ctx.hidden_dtype = hidden.dtype
        return -log_probs[positions, targets], logits.argmax(-1) == targets

    @staticmethod
    def backward(ctx, grad_losses, _grad_predicted):
        log_probs, targets, weight = ctx.saved_tensors
        grad_logits = log_probs.exp_()  # the saved tensor is not needed again
        grad_logits[torch.arange(targets.shape[0], device=targets.device), targets] -= 1.0
        grad_logits.mul_(grad_losses.unsqueeze(1))
        return (grad_logits.to(weight.dtype) @ weight).to(ctx.hidden_dtype), None, None, None


def target_cross_entropy(head: torch.nn.Linear, hidden: torch.Tensor, targets: torch.Tensor,
                         weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """([positions] cross-entropy, [positions] bool: target predicted) of the LM head at `hidden`;
    `weight`: the head's weight in another dtype to compute with (default: its own)."""
    return _TargetCrossEntropy.apply(hidden, head.weight if weight is None else weight, head.bias, targets)


class _Group:
    """One row group's captured activations and target positions."""

    def __init__(self, trainer: EditTrainer, group: RowGroup):
        layer, device = trainer.layer, trainer.device
        self.batch, self.weight = group.batch, group.weight
        self.rows = group.batch.input_ids.shape[0]
        self.captured = CapturedForward(trainer.arch, layer, group.batch, device)
        self.down_input = self.captured.down_input
        self.main_activation = layer.act_fn(layer.project(self.down_input, layer.weight).float())
        self.score_mask = group.batch.score_mask.to(device)
        # Positions whose logits predict a target token: one before each target token.
        target_mask = group.batch.target_mask.to(device)
        self.predict_rows, self.predict_cols = target_mask[:, 1:].nonzero(as_tuple=True)
        self.target_ids = group.batch.input_ids.to(device)[self.predict_rows, self.predict_cols + 1]


class EditTrainer:
    """The loss of one edit as a function of the trained weight W', by the cached or the full path."""

    def __init__(self, arch: Architecture, layer: WiseLayer, groups: list[RowGroup], irrelevant: list[TokenBatch],
                 margins: MarginTargets | None, full_forward: bool,
                 replay_inputs: list[tuple[torch.Tensor, torch.Tensor]] | None = None, head_bfloat16: bool = False):
        self.arch = arch
        self.head_weight = arch.head_weight(torch.bfloat16 if head_bfloat16 else None)
        self.layer = layer
        self.margins = margins  # None: cross-entropy only (MEMOIR)
        self.full_forward = full_forward
        self.device = layer.weight.device
        self.replay_inputs = replay_inputs or []
        self.groups = [_Group(self, group) for group in groups]
        self.target_ids = torch.cat([g.target_ids for g in self.groups])
        self.irrelevant = [self._irrelevant(batch) for batch in irrelevant]
        self.all_targets_predicted = False

    def _irrelevant(self, batch: TokenBatch) -> tuple[TokenBatch, torch.Tensor, torch.Tensor, torch.Tensor]:
        down_input = CapturedForward(self.arch, self.layer, batch, self.device, upper=False).down_input
        main = self.layer.act_fn(self.layer.project(down_input, self.layer.weight).float())
        return batch, down_input, main, batch.score_mask.to(self.device)

    def _scores(self, down_output, main_activation, mask) -> torch.Tensor:
        distances = torch.linalg.vector_norm(self.layer.act_fn(down_output.float()) - main_activation, dim=-1)
        return sequence_scores(distances, mask)

    def question_feature(self) -> torch.Tensor:
        """[in]: the mean projection input over the question tokens, averaged over every edit row."""
        features = [question_features(g.down_input, g.score_mask) for g in self.groups]
        return torch.cat(features).mean(dim=0)

    def edit_inputs(self) -> torch.Tensor:
        """[tokens, in]: the projection input at every question token and every position that predicts
        a target token, in every edit row: where the edit's memory must act."""
        parts = []
        for g in self.groups:
            acting = g.score_mask.clone()
            acting[g.predict_rows, g.predict_cols] = True
            parts.append(g.down_input[acting])
        return torch.cat(parts)

    def edit_scores(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._scores(self.layer.project(g.down_input, weight), g.main_activation, g.score_mask)
                          for g in self.groups])

    def irrelevant_scores(self, weight: torch.Tensor) -> torch.Tensor | None:
        if not self.irrelevant:
            return None
        return torch.cat([self._scores(self.layer.project(down_input, weight), main, mask)
                          for _, down_input, main, mask in self.irrelevant])

    @staticmethod
    def _row_mean(group: _Group, token_losses: torch.Tensor) -> torch.Tensor:
        # Mean over each row's target tokens, then over the group's rows (as the reference does).
        per_row = torch.zeros(group.rows, device=token_losses.device).index_add(0, group.predict_rows, token_losses)
        counts = torch.zeros_like(per_row).index_add(0, group.predict_rows, torch.ones_like(token_losses))
        return (per_row / counts.clamp_min(1)).mean()

    def losses(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(cross-entropy, margin loss, edit-row scores, irrelevant-row scores) for the weight `weight`."""
        target_hidden, edit_scores = [], []
        for group in self.groups:
            if self.full_forward:
                down_output, hidden = self._full_path(weight, group.batch, group)
            else:
                down_output, hidden = self._cached_path(weight, group)
            target_hidden.append(hidden)
            edit_scores.append(self._scores(down_output, group.main_activation, group.score_mask))
        # Every group's target positions through the LM head at once: its weight is read once per step.
        token_losses, predicted = target_cross_entropy(self.arch.lm_head, torch.cat(target_hidden), self.target_ids,
                                                      self.head_weight)
        self.all_targets_predicted = bool(predicted.all())
        ce = sum(group.weight * self._row_mean(group, losses)
                 for group, losses in zip(self.groups, token_losses.split([len(g.target_ids) for g in self.groups])))
        edit_scores = torch.cat(edit_scores)
        if self.full_forward and self.irrelevant:
            irrelevant_scores = torch.cat([self._scores(self._full_path(weight, batch)[0], main, mask)
                                           for batch, _, main, mask in self.irrelevant])
        else:
            irrelevant_scores = self.irrelevant_scores(weight)
        if self.margins is None:
            return ce, ce.new_zeros(()), edit_scores, irrelevant_scores
        margin = margin_loss(edit_scores, irrelevant_scores, self.margins)
        for down_input, mask in self.replay_inputs:
            main = self.layer.act_fn(self.layer.project(down_input, self.layer.weight).float())
            replay_scores = self._scores(self.layer.project(down_input, weight), main, mask)
            margin = margin + masked_mean_positive(replay_scores - self.margins.alpha)
        return ce, margin, edit_scores, irrelevant_scores

    def _cached_path(self, weight: torch.Tensor, group: _Group) -> tuple[torch.Tensor, torch.Tensor]:
        down_output = self.layer.project(group.down_input, weight)
        hidden = group.captured.residual + down_output
        calls = list(zip(self.arch.upper_layers(), group.captured.upper_calls))
        # Llama-family layers are called with keyword arguments only; anything else runs whole.
        trim_last = bool(calls) and self.arch.family == "llama" and not calls[-1][1][0]
        for upper, (args, kwargs) in calls[:-1] if trim_last else calls:
            out = upper(hidden, *args, **kwargs)
            hidden = out[0] if isinstance(out, tuple) else out
        if trim_last:
            last_layer, (_, last_kwargs) = calls[-1]
            picked = self._llama_layer_at_targets(last_layer, hidden, last_kwargs, group)
        else:
            picked = hidden[group.predict_rows, group.predict_cols]
        return down_output, self.arch.final_norm(picked)

    @staticmethod
    def _llama_layer_at_targets(layer, hidden: torch.Tensor, kwargs: dict, group: _Group) -> torch.Tensor:
        """The last decoder layer, with its MLP (two thirds of the layer's work) only at the positions
        whose logits are used; attention still reads every position. Same result as the whole layer."""
        attention, _ = layer.self_attn(layer.input_layernorm(hidden), **kwargs)
        picked = (hidden + attention)[group.predict_rows, group.predict_cols]
        return picked + layer.mlp(layer.post_attention_layernorm(picked))

    def _full_path(self, weight: torch.Tensor, batch: TokenBatch, group: _Group | None = None):
        """The reference way: the rows through the whole model, every step. Returns the edited layer's
        output and, for edit rows, the final norm's output at the target positions (the loss applies
        the LM head there, as on the cached path)."""
        outputs: list[torch.Tensor] = []
        hooks = [module.register_forward_hook(lambda module, args, out: outputs.append(out))
                 for module in (self.layer, self.arch.final_norm)]
        try:
            with self.layer.through(weight):
                self.arch.model(input_ids=batch.input_ids.to(self.device),
                                attention_mask=batch.attention_mask.to(self.device), use_cache=False)
        finally:
            for hook in hooks:
                hook.remove()
        down_output, final_hidden = outputs
        if group is None:
            return down_output, None
        return down_output, final_hidden[group.predict_rows, group.predict_cols]


class MaskedWeight:
    """What an edit trains in a WISE shard or MEMOIR's residual: a copy of the weight, the gradient
    restricted to a mask, each entry kept within W +- norm_constraint (when clamped). The steps run on a
    float32 copy (a bfloat16 weight would round most of an SGD step away), written back into `weight`
    in its own dtype after every step."""

    def __init__(self, weight: torch.Tensor, grad_mask: torch.Tensor, original: torch.Tensor, lr: float,
                 norm_constraint: float | None, change_dtype: torch.dtype | None = None):
        self.target, self.lr = weight, lr
        # The change W' - W is kept in this dtype (float16 column memories): every step is rounded to it,
        # so what training measured is what the stored memory computes.
        self.change_dtype = change_dtype
        self.original = original.float()
        self.grad_mask = grad_mask.to(torch.float32)
        self.work = weight.detach().float().clone()
        original = original.float()
        self.bounds = None if norm_constraint is None else (original - norm_constraint, original + norm_constraint)

    def parameters(self) -> list[torch.Tensor]:
        return [self.work]

    def weight(self, parameters: list[torch.Tensor]) -> torch.Tensor:
        return parameters[0]

    def trained_weight(self) -> torch.Tensor:
        """The weight as the memory keeps it (in the model's dtype)."""
        return self.target

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        self.work.sub_(self.lr * grads[0] * self.grad_mask)
        if self.bounds is not None:
            torch.clamp_(self.work, min=self.bounds[0], max=self.bounds[1])
        if self.change_dtype is not None:
            self.work.copy_(self.original + (self.work - self.original).to(self.change_dtype).float())
        self.target.copy_(self.work.to(self.target.dtype))


class LowRankChange:
    """A rank-r change W + U V^T: V holds the main directions of the edit's question inputs (relative
    to unrelated text) and stays fixed, U starts at zero and is trained, so the memory acts on inputs
    like the edit's and on little else. (Training both factors lets their product grow without bound
    under the margin loss.) Stored as its two factors: r x (in + out) numbers."""

    def __init__(self, original: torch.Tensor, directions: torch.Tensor, lr: float, transposed: bool):
        self.original, self.lr, self.transposed = original.detach(), lr, transposed
        self.v = directions.float().clone()  # [in, r]
        outputs = original.shape[1] if transposed else original.shape[0]
        self.u = torch.zeros(outputs, directions.shape[1], device=original.device)  # [out, r]

    def parameters(self) -> list[torch.Tensor]:
        return [self.u]

    def weight(self, parameters: list[torch.Tensor]) -> torch.Tensor:
        change = parameters[0] @ self.v.t()  # [out, in]
        return self.original.float() + (change.t() if self.transposed else change)

    def trained_weight(self) -> torch.Tensor:
        return self.weight([self.u])

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        self.u.sub_(self.lr * grads[0])


def train_steps(trainer: EditTrainer, trainable: MaskedWeight | LowRankChange, settings: WiseSettings
                ) -> Iterator[StepEvent]:
    """SGD on `trainable`. Yields after every step; ends at the early stop (the reference rule, or
    learnt + settle_steps). The consumer stops it between steps by closing the generator."""
    started = time.perf_counter()
    previous = float("inf")
    learnt_streak = 0
    for iteration in range(settings.n_iter):
        parameters = [p.detach().requires_grad_(True) for p in trainable.parameters()]
        ce, margin, edit_scores, irrelevant_scores = trainer.losses(trainable.weight(parameters))
        total = ce + margin
        value = float(total.detach())
        learnt = _learnt(trainer, edit_scores, irrelevant_scores)
        event = _event(iteration, ce, margin, total, edit_scores, irrelevant_scores, started, learnt)
        converged = value <= settings.early_stop_loss and abs(previous - value) <= settings.early_stop_delta
        learnt_streak = learnt_streak + 1 if learnt else 0
        settled = settings.stop_when_learnt and learnt_streak > settings.settle_steps
        if converged or settled:
            yield event
            return
        trainable.step(list(torch.autograd.grad(total, parameters)))
        previous = value
        yield event


def _learnt(trainer: EditTrainer, edit_scores: torch.Tensor, irrelevant_scores: torch.Tensor | None) -> bool:
    """Every target token is the top prediction and the edit rows fire with their margins. The
    irrelevant rows' own margin is left out: it moves little once the edit is in, and the routing
    threshold, not this margin, keeps unrelated prompts on the main memory."""
    if not trainer.all_targets_predicted:
        return False
    if trainer.margins is None:
        return True
    lowest = float(edit_scores.detach().min())
    if lowest < trainer.margins.beta:
        return False
    return irrelevant_scores is None or lowest - float(irrelevant_scores.detach().max()) >= trainer.margins.gamma


def _event(iteration, ce, margin, total, edit_scores, irrelevant_scores, started, learnt) -> StepEvent:
    irrelevant = irrelevant_scores.detach().float().cpu().tolist() if irrelevant_scores is not None else []
    return StepEvent(
        iteration=iteration,
        ce_loss=float(ce.detach()),
        margin_loss=float(margin.detach()),
        total_loss=float(total.detach()),
        edit_scores=edit_scores.detach().float().cpu().tolist(),
        irrelevant_score=max(irrelevant) if irrelevant else float("nan"),
        seconds=time.perf_counter() - started,
        learnt=learnt,
    )
