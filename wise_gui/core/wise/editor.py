"""The WISE editor: attach to a loaded model, apply edits step by step, route, answer, roll back.

The window, the CLI and the benchmark all go through this class. `apply(request)` is a generator: it
yields one StepEvent per optimisation step and returns the EditOutcome; closing it between steps (a
cancel) restores the state from before the edit exactly.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from wise_gui.core.edits import EditRequest
from wise_gui.core.errors import WiseGuiError
from wise_gui.core.heap import release_free_memory
from wise_gui.core.identity import model_fingerprint
from wise_gui.core.inference import MAIN, EditedModel, Route
from wise_gui.core.models import LoadedModel
from wise_gui.core.tokens import QueryForm, Row, TokenBatch, pad_id, pad_rows
from wise_gui.core.wise.architecture import Architecture
from wise_gui.core.wise.memoir import ResidualMemory
from wise_gui.core.wise.memory import WiseLayer, question_features
from wise_gui.core.wise.merge import merge
from wise_gui.core.wise.presets import preset
from wise_gui.core.wise.settings import WiseSettings, default_layer
from wise_gui.core.wise.shards import KeyWhitening, RoutingRule, ShardMemories, SideMemory
from wise_gui.core.wise.state import Calibration, EditorState, StateDict
from wise_gui.core.wise.training import (
    CapturedForward,
    EditTrainer,
    LowRankChange,
    MarginTargets,
    MaskedWeight,
    RowGroup,
    StepEvent,
    train_steps,
)

RESOURCES = Path(__file__).resolve().parents[3] / "resources"
TEMPLATE_SEEDS = ["I", "You", "Because", "Yes", "Q: "]
CALIBRATION_SAMPLES = 32
# The key whitening: unrelated questions it is measured on (asked raw),
# the weight of the mean variance added to each direction's, and the leading directions kept
# (docs/engine-findings.md, "The key gate at 1,000 memories").
WHITENING_SAMPLES = 512
WHITENING_SHRINK = 0.1
WHITENING_RANK = 256

T = TypeVar("T")


class InvalidEdit(WiseGuiError):
    pass


@dataclass(frozen=True)
class EditOutcome:
    edit_index: int  # position in the editor's edit log (0 = first edit ever applied)
    iterations: int
    seconds: float  # training and storing the edit
    ce_curve: list[float]
    margin_curve: list[float]
    edit_score: float  # lowest score over the edit's training rows when training ended
    irrelevant_score: float
    threshold: float  # the routing threshold of the memory the edit went into, after the edit
    memory: int  # index of that memory among the routable ones
    shard_number: int  # 1-based count of shards started so far; the edit is in this one
    shard_full: bool  # the shard reached save_freq with this edit and was put aside
    merged: bool  # a merge happened right after this edit


@dataclass(frozen=True)
class RouteDecision:
    prompt: str
    form: QueryForm
    route: Route
    tokens: list[str]  # the question's tokens
    token_distances: list[float]  # per question token, against the shown memory

    @property
    def to_side_memory(self) -> bool:
        return self.route.to_side_memory


@dataclass(frozen=True)
class EditRecord:
    """Where an applied edit lives: its memory, its score when training ended, that memory's threshold."""

    memory: int
    kind: str
    score: float
    threshold: float


@dataclass(frozen=True)
class MemoryStatus:
    """The shape of the side memory, for the shard plot and the status bar."""

    method: str
    total_edits: int
    save_freq: int
    merge_freq: int
    shard_number: int
    shard_edits: int
    saved_shards: list[int]  # edit counts of shards waiting for a merge
    merged_memories: list[int]  # edit counts of merged memories
    merge_events: list[int]
    memory_bytes: int  # RAM the memories holding edits take
    # RAM of the shard being filled while it holds no edit yet: a working copy of the weight for the
    # next edit's training, the same at any number of edits.
    working_bytes: int = 0
    whitening_bytes: int = 0  # the router's key whitening: measured once per model, shared by every memory
    columns_used: float | None = None  # memoir: fraction of the residual's columns some edit wrote


def run_to_end(steps: Generator[object, None, T]) -> T:
    """Drives a generator to its end and returns its return value (for callers that need no events)."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def load_irrelevant_pool(path: Path | None = None) -> list[str]:
    """Unrelated texts the side memory learns to stay quiet on; a JSON list or {"samples": [...]}."""
    path = path or RESOURCES / "irrelevant_pool.json"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WiseGuiError(f"Cannot read the irrelevant-sample pool {path}: {exc}") from None
    samples = data.get("samples") if isinstance(data, dict) else data
    if not isinstance(samples, list) or not samples or not all(isinstance(s, str) and s.strip() for s in samples):
        raise WiseGuiError(f"{path} must hold a non-empty list of strings.")
    return samples


def mask_from_seed(seed: int, shape: torch.Size, ratio: float, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=generator) < ratio).to(device)


class WiseEditor(EditedModel):
    def __init__(self, loaded: LoadedModel, settings: WiseSettings | None = None,
                 irrelevant_pool: list[str] | None = None):
        super().__init__(loaded)
        config = loaded.model.config
        settings = settings or preset()
        n_layers = config.num_hidden_layers
        layer_index = settings.layer if settings.layer is not None else default_layer(config.model_type, n_layers)
        self.arch = Architecture.of(loaded.model, layer_index)
        self.settings = settings.replace(layer=layer_index)
        original = self.arch.down_projection()
        if isinstance(original, WiseLayer):
            raise WiseGuiError("This model already has a WISE editor attached; detach it first.")
        self.layer = WiseLayer(original, self.arch.act_fn, self.arch.transposed)
        self.arch.replace_down_projection(self.layer)
        self.irrelevant_pool = irrelevant_pool or load_irrelevant_pool()
        self._fingerprint: str | None = None
        self._calibration: Calibration | None = None
        self.reset()

    # ---- identity -------------------------------------------------------------------------------

    @property
    def layer_index(self) -> int:
        return self.arch.layer_index

    @property
    def module_name(self) -> str:
        return self.arch.module_name

    @property
    def memories(self) -> ShardMemories | ResidualMemory:
        return self.state.memories

    @property
    def edit_log(self) -> list[tuple[str, str]]:
        return self.state.edit_log

    def fingerprint(self) -> str:
        """Hash of the model config, the edited module's name and its original weight."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.loaded.model.config, self.module_name, self.layer.weight)
        return self._fingerprint

    def detach(self) -> None:
        """Put the original down projection back; the model is the unedited one again."""
        self.arch.replace_down_projection(self.layer.original)

    def update_settings(self, settings: WiseSettings) -> None:
        """New settings for the next edits. The layer is fixed once the editor is attached; the method
        only changes while no edit is applied (its memories would not fit another layout)."""
        if settings.layer not in (None, self.layer_index):
            raise WiseGuiError("The edited layer is fixed once the editor is attached; start a new workspace to change it.")
        settings = settings.replace(layer=self.layer_index)
        if settings.method != self.settings.method and self.state.total_edits:
            raise WiseGuiError(f"This side memory holds {self.state.total_edits} edits made with {self.settings.method}; "
                               f"start a new workspace to use {settings.method}.")
        changed_layout = settings.method != self.settings.method or (
            settings.method == "memoir" and settings.mask_ratio != self.settings.mask_ratio)
        self.settings = settings
        if changed_layout:
            self.reset()
        else:
            self._configure(self.state.memories)

    def _configure(self, memories: ShardMemories | ResidualMemory) -> None:
        """The settings and calibration the memories route with. Memories exist only after the
        calibration (an edit calibrates first; a stored state carries its own)."""
        s, calibrated = self.settings, self._calibration is not None
        if isinstance(memories, ShardMemories):
            # The threshold floor is in units of the margins, which may need the layer scale.
            floor = s.threshold_floor * self.margins().beta if s.threshold_floor > 0 and calibrated else 0.0
            memories.rule = RoutingRule(act_ratio=s.act_ratio, threshold_floor=floor, shared_threshold=not s.retrieve,
                                        candidates=s.route_candidates, key_similarity=s.key_similarity)
            memories.whitening = self._key_whitening() if calibrated and s.key_whitening else None
        else:
            memories.overlap_threshold = s.overlap_threshold
        memories.background = self._calibration.background if calibrated else None
        self.layer.memories = memories

    def _shard_seed(self, shard_number: int) -> int:
        return self.settings.seed * 100_003 + shard_number

    # ---- calibration ------------------------------------------------------------------------------

    def prepare(self) -> Calibration:
        """Generate the context templates and measure the layer, so no edit pays for them."""
        if self._calibration is None:
            self._calibration = self._calibrate()
            self.state.calibration = self._calibration
            self._configure(self.state.memories)
        return self._calibration

    @property
    def context_templates(self) -> list[str]:
        return self.prepare().templates

    @property
    def layer_scale(self) -> float:
        """Typical size of the edited layer's output, mean over tokens of ||act(W a_t)|| on unrelated text."""
        return self.prepare().layer_scale

    def _calibrate(self) -> Calibration:
        scale, background = self._measure()
        return Calibration(self._generate_templates(), scale, background)

    @torch.no_grad()
    def _measure(self) -> tuple[float, torch.Tensor]:
        """The layer's activation scale and the mean question feature, both on unrelated text."""
        samples = self.irrelevant_pool[:CALIBRATION_SAMPLES]
        batch = pad_rows([self.prompter.unrelated(s) for s in samples], pad_id(self.tokenizer))
        down_input = self._down_input(batch)
        norms = torch.linalg.vector_norm(self.layer.act_fn(self.layer.project(down_input, self.layer.weight)), dim=-1)
        scale = float(norms[batch.attention_mask.to(norms.device).bool()].mean())
        return scale, question_features(down_input, batch.score_mask.to(down_input.device)).mean(dim=0)

    def _key_whitening(self) -> KeyWhitening:
        """The calibration's key whitening, measured the first time the settings ask for it."""
        if self._calibration.whitening is None:
            self._calibration = dataclasses.replace(self._calibration, whitening=self._measure_whitening())
            self.state.calibration = self._calibration
        return self._calibration.whitening

    def _measure_whitening(self) -> KeyWhitening:
        """From the question features of unrelated questions asked raw: measured, that whitens chat-form
        questions as well as measuring both forms does, at a fraction of the cost (no template tokens)."""
        questions = [self.prompter.question(sample) for sample in self.irrelevant_pool[:WHITENING_SAMPLES]]
        features = self.question_features_of(questions)
        relative = features - self._calibration.background.to(features.device)
        return KeyWhitening.measure(relative, WHITENING_SHRINK, WHITENING_RANK)

    @torch.no_grad()
    def batch_question_features(self, batch: TokenBatch) -> torch.Tensor:
        """[rows, d]: each row's question feature at the edited layer's projection input, which the side
        memories do not change (they act on that projection's output)."""
        down_input = self._down_input(batch)
        return question_features(down_input, batch.score_mask.to(down_input.device))

    def question_features_of(self, rows: list[Row], batch_size: int = 64) -> torch.Tensor:
        pad = pad_id(self.tokenizer)
        return torch.cat([self.batch_question_features(pad_rows(rows[start:start + batch_size], pad))
                          for start in range(0, len(rows), batch_size)])

    def _generate_templates(self) -> list[str]:
        count = self.settings.n_templates
        if count <= 0:
            return []
        lengths = [5] * (count - count // 2) + [10] * (count // 2)
        special = list(self.prompter.special)
        templates = []
        with self.layer.off():
            for i, new_tokens in enumerate(lengths):
                seed = TEMPLATE_SEEDS[i % len(TEMPLATE_SEEDS)]
                ids = torch.tensor([special + self.tokenizer(seed, add_special_tokens=False)["input_ids"]],
                                   device=self.loaded.input_device)
                # Sampled (top-5, seeded) like ROME's templates: greedy text from a one-word seed loops.
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(self.settings.seed * 31 + i)
                    out = self.loaded.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                                     max_new_tokens=new_tokens, do_sample=True, top_k=5, top_p=1.0,
                                                     temperature=1.0, pad_token_id=pad_id(self.tokenizer))
                text = self.tokenizer.decode(out[0, len(special):], skip_special_tokens=True)
                templates.append(" ".join(text.split()))
        return templates

    def _down_input(self, batch: TokenBatch) -> torch.Tensor:
        return CapturedForward(self.arch, self.layer, batch, self.loaded.input_device, upper=False).down_input

    def margins(self) -> MarginTargets:
        s = self.settings
        scale = self.layer_scale if s.margin_scale == "relative" else 1.0
        return MarginTargets(alpha=s.alpha * scale, beta=s.beta * scale, gamma=s.gamma * scale)

    # ---- state ----------------------------------------------------------------------------------

    def _empty_memories(self) -> ShardMemories | ResidualMemory:
        weight = self.layer.weight.detach()
        if self.settings.method == "memoir":
            return ResidualMemory.empty(weight, self.layer.transposed, self.settings.mask_ratio,
                                        self.settings.overlap_threshold, self.settings.seed)
        shard = SideMemory(weight=weight.clone(), kind="shard", memory_id=1, mask_seed=self._shard_seed(1))
        return ShardMemories(shard=shard)

    def reset(self) -> None:
        """Back to the unedited state: no memories, no edits (the calibration stays: it is the model's)."""
        self.restore(EditorState(self._empty_memories(), calibration=self._calibration))

    def snapshot(self) -> EditorState:
        return self.state.clone()

    def restore(self, state: EditorState) -> None:
        self.state = state.clone()
        if state.calibration is not None:
            if state.calibration.background is None:  # written before keys existed: measured here
                state.calibration = dataclasses.replace(state.calibration, background=self._measure()[1])
                self.state.calibration = state.calibration
            if state.calibration.whitening is None and self._has_whitening_for(state.calibration):
                # A state from before "Whitened keys" was switched on (an undo): the whitening measured
                # since is the same model's on the same background, so it is kept, not measured again.
                state.calibration = dataclasses.replace(state.calibration, whitening=self._calibration.whitening)
                self.state.calibration = state.calibration
            self._calibration = state.calibration
        self._configure(self.state.memories)

    def _has_whitening_for(self, calibration: Calibration) -> bool:
        current = self._calibration
        return (current is not None and current.whitening is not None and current.background is not None
                and torch.equal(current.background.cpu(), calibration.background.cpu()))

    def state_dict(self) -> StateDict:
        self.prepare()  # a state always carries the calibration its routing depends on
        return self.state.state_dict(self.layer.weight)

    def load_state_dict(self, state: StateDict) -> None:
        loaded = EditorState.from_state_dict(state, self.layer.weight.detach(), RoutingRule(),
                                             self.settings.overlap_threshold, self.layer.transposed)
        expected = "residual" if self.settings.method == "memoir" else "shards"
        if state.meta.get("layout") != expected:
            raise WiseGuiError(f"The side memory was made with another method ({state.meta.get('layout')} layout) than "
                               f"these settings ({self.settings.method}).")
        self.restore(loaded)

    # ---- editing --------------------------------------------------------------------------------

    def _next_irrelevant(self) -> list[str]:
        """The next samples of the pool, in order (as the reference draws one per edit)."""
        count = self.settings.n_irrelevant
        pool = self.irrelevant_pool
        samples = [pool[(self.state.irrelevant_cursor + i) % len(pool)] for i in range(count)]
        self.state.irrelevant_cursor += count
        return samples

    def _edit_groups(self, prompt: str, target: str) -> list[RowGroup]:
        """The raw rows (the prompt alone and behind each context template) and, for an instruct model
        with chat_form, the chat row: the same question through the chat template, the target as the
        assistant's reply ending its turn. Each form has half of the cross-entropy."""
        p, pad = self.prompter, pad_id(self.tokenizer)
        raw = [p.with_target(p.question(prompt, "raw", context), target, "raw") for context in ["", *self.context_templates]]
        if not (self.settings.chat_form and p.chat is not None):
            return [RowGroup(pad_rows(raw, pad), 1.0)]
        chat = [p.with_target(p.question(prompt, "chat"), target, "chat", end_of_turn=True)]
        return [RowGroup(pad_rows(raw, pad), 0.5), RowGroup(pad_rows(chat, pad), 0.5)]

    def _irrelevant_batches(self, samples: list[str]) -> list[TokenBatch]:
        if not samples:
            return []
        p, pad = self.prompter, pad_id(self.tokenizer)
        batches = [pad_rows([p.unrelated(s) for s in samples], pad)]
        if self.settings.chat_form and p.chat is not None:
            batches.append(pad_rows([p.unrelated(s, "chat") for s in samples], pad))
        return batches

    def _replay_inputs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Projection inputs of a few edits held by other memories (WISE-Retrieve replay)."""
        memories = self.state.memories
        if not (self.settings.retrieve and self.settings.replay) or not isinstance(memories, ShardMemories):
            return []
        others = [i for m in memories.merged + memories.saved for i in m.edit_ids]
        if not others:
            return []
        rng = random.Random(self.settings.seed * 7919 + memories.total_edits)
        chosen = rng.sample(others, min(self.settings.replay_samples, len(others)))
        batch = pad_rows([self.prompter.question(self.edit_log[i][0]) for i in chosen], pad_id(self.tokenizer))
        with torch.no_grad():
            down_input = self._down_input(batch)
        return [(down_input, batch.score_mask.to(down_input.device))]

    def apply(self, request: EditRequest) -> Generator[StepEvent, None, EditOutcome]:
        """Train one edit: a StepEvent per optimisation step, then the EditOutcome as the return value.
        Closing the generator between steps, or any error, leaves the state exactly as before the edit."""
        problems = request.validate()
        if problems:
            raise InvalidEdit("This edit cannot be applied: " + "; ".join(problems) + ".")
        self.prepare()
        before = self.snapshot()
        started = time.perf_counter()
        try:
            outcome = yield from self._train_and_store(request, started)
        except BaseException:  # a cancel (GeneratorExit), Ctrl+C or a failure: nothing half-learnt stays
            self.restore(before)
            raise
        finally:
            release_free_memory()  # else the heap grows with every edit (core/heap.py)
        return outcome

    def _train_and_store(self, request: EditRequest, started: float) -> Generator[StepEvent, None, EditOutcome]:
        trainer = EditTrainer(self.arch, self.layer, self._edit_groups(request.prompt, request.target),
                              self._irrelevant_batches(self._next_irrelevant()),
                              None if self.settings.method == "memoir" else self.margins(),
                              self.settings.full_forward, self._replay_inputs(), self.settings.head_bfloat16)
        feature = trainer.question_feature()
        trainable, commit = self._trainable(trainer, feature)
        ce_curve, margin_curve = [], []
        for event in train_steps(trainer, trainable, self.settings):
            ce_curve.append(event.ce_loss)
            margin_curve.append(event.margin_loss)
            yield event
        weight = trainable.trained_weight()
        with torch.no_grad():
            edit_scores = trainer.edit_scores(weight).float().cpu().tolist()
            irrelevant_scores = trainer.irrelevant_scores(weight)
        irrelevant = float(irrelevant_scores.max()) if irrelevant_scores is not None else float("nan")
        index = len(self.edit_log)
        self.state.edit_log.append((request.prompt, request.target))
        # The weakest row sets the statistic, so the edit's own prompt (one of the rows) always routes.
        edit_score = min(edit_scores)
        stored = commit(trainable, feature, edit_score)
        return EditOutcome(edit_index=index, iterations=len(ce_curve), seconds=time.perf_counter() - started,
                           ce_curve=ce_curve, margin_curve=margin_curve, edit_score=edit_score,
                           irrelevant_score=irrelevant, **stored)

    def _trainable(self, trainer: EditTrainer, feature: torch.Tensor):
        """(what the edit trains, how to store it afterwards) for the current layout."""
        memories, s = self.state.memories, self.settings
        original = self.layer.weight.detach()
        if isinstance(memories, ResidualMemory):
            indices = memories.fingerprint(feature.unsqueeze(0))[0]
            weight, grad_mask = memories.edit_weight(original, self.layer.transposed, indices)
            trainable = MaskedWeight(weight, grad_mask, original, s.lr, None)

            def commit_residual(trained: MaskedWeight, _feature, score):
                memories.store(trained.target, original, trained.grad_mask, indices, score)
                return {"threshold": memories.overlap_threshold, "memory": len(memories) - 1,
                        "shard_number": 1, "shard_full": False, "merged": False}

            return trainable, commit_residual
        shard = memories.shard
        if s.memory_rank:
            inputs = trainer.edit_inputs() - self.prepare().background.to(feature.device)
            directions = torch.linalg.svd(inputs.float(), full_matrices=False).Vh[: s.memory_rank].t()
            return LowRankChange(original, directions, s.lr, self.layer.transposed), self._store_in_shard
        if s.mask_kind == "columns":
            return MaskedWeight(shard.weight, self._column_mask(feature, shard.weight), original, s.lr, s.norm_constraint,
                                change_dtype=torch.float16), self._store_in_shard
        grad_mask = mask_from_seed(shard.mask_seed, shard.weight.shape, s.mask_ratio, shard.weight.device)
        return MaskedWeight(shard.weight, grad_mask, original, s.lr, s.norm_constraint), self._store_in_shard

    def _column_mask(self, feature: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The inputs where this edit's question differs most from unrelated text, every output row of them."""
        relative = feature - self.prepare().background.to(feature.device)
        count = max(1, round(self.settings.mask_ratio * relative.numel()))
        chosen = torch.zeros(relative.numel(), dtype=torch.bool, device=weight.device)
        chosen[relative.abs().topk(count).indices.to(weight.device)] = True
        return chosen.unsqueeze(1).expand_as(weight) if self.layer.transposed else chosen.unsqueeze(0).expand_as(weight)

    def _store_in_shard(self, trained: MaskedWeight | LowRankChange, feature: torch.Tensor, edit_score: float) -> dict:
        memories, s = self.state.memories, self.settings
        shard = memories.shard
        original = self.layer.weight.detach()
        if isinstance(trained, LowRankChange):
            shard.set_factors(original, trained.u.clone(), trained.v.clone(), self.layer.transposed)
        elif s.mask_kind == "columns" and s.save_freq == 1:  # one edit's columns: kept as a float16 block
            transposed = self.layer.transposed
            used = trained.grad_mask.bool().any(dim=1 if transposed else 0).nonzero().flatten()
            change = trained.target.float() - original.float()
            block = (change[used].t() if transposed else change[:, used]).to(torch.float16)
            shard.set_columns(original, used, block, transposed)
        key = (feature - self.prepare().background.to(feature.device)).float().unsqueeze(0).cpu()
        shard.keys = key if shard.keys is None else torch.cat([shard.keys, key])
        shard.edit_ids.append(len(self.edit_log) - 1)
        shard.edit_scores.append(edit_score)
        memories.total_edits += 1
        routing = memories.routing()
        threshold = float(memories.thresholds(routing)[routing.memories.index(shard)])
        shard_number = memories.shards_started
        shard_full = len(shard.edit_ids) >= s.save_freq
        if shard_full:
            shard.kind = "saved"
            shard.compact(self.layer.weight.detach())
            memories.saved.append(shard)
            memories.shards_started += 1
            memories.shard = SideMemory(weight=self.layer.weight.detach().clone(), kind="shard",
                                        memory_id=memories.shards_started, mask_seed=self._shard_seed(memories.shards_started))
        merged = memories.total_edits % s.merge_freq == 0 and bool(memories.saved)
        if merged:
            self._merge_saved()
        index = len(self.edit_log) - 1
        holder = self.memory_of_edit(index)
        return {"threshold": threshold, "memory": holder, "shard_number": shard_number, "shard_full": shard_full,
                "merged": merged}

    def _merge_saved(self) -> None:
        """Merge the full shards: into the one merged memory (WISE-Merge) or into a new one (Retrieve)."""
        memories = self.state.memories
        parts = list(memories.saved)
        if not self.settings.retrieve and memories.merged:
            parts = memories.merged + parts
        if len(parts) == 1 and (parts[0].factors is not None or parts[0].columns is not None):
            # One low-rank or column memory: merging it alone changes nothing.
            parts[0].kind = "merged"
            memories.merged, memories.saved = memories.merged + parts, []
            memories.merge_events.append(memories.total_edits)
            return
        weight = merge(self.layer.weight.detach(), [p.weight for p in parts], self.settings.merge_method,
                       self.settings.ties_density)
        edit_ids = [i for p in parts for i in p.edit_ids]
        keys = [p.keys for p in parts if p.keys is not None]
        # Merging moves every edit's score; its threshold statistics are measured again on the merged weight.
        combined = SideMemory(weight=weight, kind="merged", memory_id=min(p.memory_id for p in parts), edit_ids=edit_ids,
                              edit_scores=self._edit_scores_under(weight, edit_ids),
                              keys=torch.cat(keys) if keys else None)
        combined.compact(self.layer.weight.detach())
        memories.merged = ([] if not self.settings.retrieve else memories.merged) + [combined]
        memories.saved = []
        memories.merge_events.append(memories.total_edits)

    @torch.no_grad()
    def _edit_scores_under(self, weight: torch.Tensor, edit_ids: list[int]) -> list[float]:
        """Each edit's score (lowest over its training rows, as when it was trained) under `weight`."""
        scores = []
        for index in edit_ids:
            prompt, target = self.edit_log[index]
            row_scores = []
            for group in self._edit_groups(prompt, target):
                down_input = self._down_input(group.batch)
                distances = torch.linalg.vector_norm(
                    self.layer.act_fn(self.layer.project(down_input, weight))
                    - self.layer.act_fn(self.layer.project(down_input, self.layer.weight)), dim=-1)
                mask = group.batch.score_mask.to(distances.device).to(distances.dtype)
                row_scores.append((distances * mask).sum(-1) / mask.sum(-1).clamp_min(1.0))
            scores.append(float(torch.cat(row_scores).min()))
        return scores

    def apply_edit(self, request: EditRequest) -> EditOutcome:
        """Applies one edit without watching its steps."""
        return run_to_end(self.apply(request))

    # ---- inference ------------------------------------------------------------------------------

    @contextmanager
    def _edits(self, use_edits: bool, question_mask: torch.Tensor, lock: bool) -> Iterator[None]:
        with self.layer.routed(question_mask, lock=lock) if use_edits else self.layer.off():
            yield

    def _routes(self, rows: int) -> list[Route]:
        info = self.layer.last_route
        if info is None:  # no side memory yet
            return [Route(MAIN, "main")] * rows
        return [self._route(int(info.choice[r]), int(info.best[r]), float(info.score[r]), float(info.threshold[r]))
                for r in range(rows)]

    def _route(self, choice: int, shown: int, score: float, threshold: float) -> Route:
        if choice == MAIN:
            return Route(MAIN, "main", score if shown != MAIN else None, threshold if shown != MAIN else None)
        return Route(choice, self.memory_kind(choice), score, threshold)

    def memory_of_edit(self, edit_index: int) -> int | None:
        memories = self.state.memories
        if isinstance(memories, ResidualMemory):
            return edit_index if edit_index < len(memories) else None
        routable = memories.routable()
        # Searched from the newest memory: the edit just applied is found at once, whatever their number.
        return next((i for i in reversed(range(len(routable))) if edit_index in routable[i].edit_ids), None)

    def edit_record(self, edit_index: int) -> EditRecord:
        memories = self.state.memories
        if isinstance(memories, ResidualMemory):
            return EditRecord(edit_index, "residual", memories.edit_scores[edit_index], memories.overlap_threshold)
        routable = memories.routable()
        index = self.memory_of_edit(edit_index)
        if index is None:
            raise WiseGuiError(f"Edit {edit_index} is not held by any side memory.")
        memory = routable[index]
        return EditRecord(index, memory.kind, memory.edit_scores[memory.edit_ids.index(edit_index)],
                          float(memories.thresholds()[index]))

    def memory_kind(self, index: int) -> str:
        memories = self.state.memories
        if isinstance(memories, ResidualMemory):
            return "residual"
        return memories.routable()[index].kind

    @torch.no_grad()
    def route(self, prompts: list[str], form: QueryForm = "raw") -> list[RouteDecision]:
        """Which memory answers each prompt, with its score, threshold and per-token distances."""
        batch = pad_rows([self.prompter.question(p, form) for p in prompts], pad_id(self.tokenizer))
        with self._edits(True, batch.score_mask.to(self.loaded.input_device), lock=False):
            self._logits(batch)
        return self._decisions(prompts, self.prompter.resolve(form), batch)

    def _decisions(self, prompts: list[str], form: QueryForm, batch: TokenBatch) -> list[RouteDecision]:
        info = self.layer.last_route
        routes = self._routes(len(prompts))
        decisions = []
        for row, (prompt, route) in enumerate(zip(prompts, routes)):
            question = batch.score_mask[row]
            tokens = [self.tokenizer.decode([t]) for t in batch.input_ids[row][question].tolist()]
            distances = info.per_token[row][question].tolist() if info is not None else [0.0] * len(tokens)
            decisions.append(RouteDecision(prompt, form, route, tokens, distances))
        return decisions

    def status(self) -> MemoryStatus:
        memories, s = self.state.memories, self.settings
        if isinstance(memories, ResidualMemory):
            used = torch.zeros(memories.residual.shape[0 if self.layer.transposed else 1], dtype=torch.bool)
            for mask in memories.masks:
                used[mask] = True
            return MemoryStatus(s.method, memories.total_edits, s.save_freq, s.merge_freq, 1, memories.total_edits,
                                [], [], [], memories.nbytes(), columns_used=float(used.float().mean()))
        working = 0 if memories.shard.edit_ids else memories.shard.nbytes
        whitening = memories.whitening.nbytes if memories.whitening is not None else 0
        return MemoryStatus(
            s.method, memories.total_edits, s.save_freq, s.merge_freq, memories.shards_started,
            len(memories.shard.edit_ids), [len(m.edit_ids) for m in memories.saved],
            [len(m.edit_ids) for m in memories.merged], list(memories.merge_events),
            memories.nbytes() - working - whitening, working_bytes=working, whitening_bytes=whitening)

