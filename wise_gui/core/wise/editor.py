"""The WISE editor: attach to a loaded model, apply edits step by step, route, generate, roll back.

The GUI worker, the CLI and the benchmarks all go through this class.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from wise_gui.core.edits import EditRequest
from wise_gui.core.errors import WiseGuiError
from wise_gui.core.identity import model_fingerprint
from wise_gui.core.models import LoadedModel
from wise_gui.core.tokens import TokenBatch, encode_left_padded, encode_rows, pad_id, special_prefix
from wise_gui.core.wise.architecture import Architecture
from wise_gui.core.wise.memory import MAIN, SideMemory, WiseLayer, WiseState, mask_from_seed
from wise_gui.core.wise.merge import merge
from wise_gui.core.wise.settings import WiseSettings, default_layer, preset_for
from wise_gui.core.wise.training import (
    EditTrainer,
    MarginTargets,
    StepEvent,
    build_edit_batch,
    build_irrelevant_batch,
    train_steps,
)

RESOURCES = Path(__file__).resolve().parents[3] / "resources"
TEMPLATE_SEEDS = ["I", "You", "Because", "Yes", "Q: "]


class EditCancelled(WiseGuiError):
    """The edit was stopped between steps; the side memory is exactly as before it."""


class InvalidEdit(WiseGuiError):
    pass


@dataclass
class EditOutcome:
    edit_index: int  # position in the editor's edit log (0 = first edit ever applied)
    iterations: int
    seconds: float
    ce_curve: list[float]
    margin_curve: list[float]
    edit_score: float  # lowest score over the edit's training rows when training ended
    irrelevant_score: float
    threshold: float  # the routing threshold of the memory the edit went into, after the edit
    shard_number: int  # 1-based count of shards started so far; the edit is in this one
    shard_full: bool  # the shard reached save_freq with this edit and was put aside
    merged: bool  # a merge happened right after this edit


@dataclass
class RouteDecision:
    prompt: str
    memory: int  # MAIN (-1) or an index into the routable memories
    label: str
    score: float  # the best score over the side memories (0 when there are none)
    threshold: float  # threshold of the memory that score belongs to
    tokens: list[str]
    token_distances: list[float]  # per token, against that memory

    @property
    def to_side_memory(self) -> bool:
        return self.memory != MAIN


@dataclass
class ShardStatus:
    save_freq: int
    merge_freq: int
    shard_number: int
    shard_edits: int
    saved_shards: list[int]  # edit counts of shards waiting for a merge
    merged_memories: list[int]  # edit counts of merged memories
    merge_events: list[int]
    total_edits: int


def load_irrelevant_pool(path: Path | None = None) -> list[str]:
    """Unrelated texts the side memory learns to stay quiet on; a JSON list or {"samples": [...]}."""
    path = path or RESOURCES / "irrelevant_pool.json"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise WiseGuiError(f"Cannot read the irrelevant-sample pool {path}: {exc}") from None
    samples = data["samples"] if isinstance(data, dict) else data
    if not isinstance(samples, list) or not all(isinstance(s, str) for s in samples) or not samples:
        raise WiseGuiError(f"{path} must hold a non-empty list of strings.")
    return samples


class WiseEditor:
    def __init__(self, loaded: LoadedModel, settings: WiseSettings | None = None,
                 irrelevant_pool: list[str] | None = None):
        self.loaded = loaded
        config = loaded.model.config
        if settings is None:
            settings = preset_for(config.model_type, loaded.n_parameters)
        n_layers = config.num_hidden_layers
        layer_index = settings.layer if settings.layer is not None else default_layer(config.model_type, n_layers)
        self.settings = settings.replace(layer=layer_index)
        self.arch = Architecture.of(loaded.model, layer_index)
        original = self.arch.down_projection()
        if isinstance(original, WiseLayer):
            raise WiseGuiError("This model already has a WISE editor attached; detach it first.")
        self.layer = WiseLayer(original, self.arch.act_fn, self.arch.transposed)
        self.arch.replace_down_projection(self.layer)
        self.irrelevant_pool = irrelevant_pool or load_irrelevant_pool()
        self.edit_log: list[tuple[str, str]] = []
        self.irrelevant_cursor = 0
        self._templates: list[str] | None = None
        self._layer_scale: float | None = None
        self._original_fingerprint: str | None = None
        self._special_prefix = special_prefix(self.tokenizer)
        self._apply_settings_to_layer()
        self.reset()

    # ---- identity -------------------------------------------------------------------------------

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    @property
    def layer_index(self) -> int:
        return self.arch.layer_index

    @property
    def module_name(self) -> str:
        return self.arch.module_name

    @property
    def state(self) -> WiseState:
        return self.layer.state

    def fingerprint(self) -> str:
        """Hash of the model config, the edited module's name and its original weight."""
        if self._original_fingerprint is None:
            self._original_fingerprint = model_fingerprint(self.loaded.model.config, self.module_name, self.layer.weight)
        return self._original_fingerprint

    def detach(self) -> None:
        """Put the original down projection back; the model is the unedited one again."""
        self.arch.replace_down_projection(self.layer.original)

    def update_settings(self, settings: WiseSettings) -> None:
        if settings.layer not in (None, self.layer_index):
            raise WiseGuiError("The edited layer is fixed once the editor is attached; start a new workspace to change it.")
        self.settings = settings.replace(layer=self.layer_index)
        self._apply_settings_to_layer()

    def _apply_settings_to_layer(self) -> None:
        self.layer.act_ratio = self.settings.act_ratio
        self.layer.shared_threshold = not self.settings.retrieve
        floor = self.settings.threshold_floor
        self.layer.threshold_floor = floor * self.margins().beta if floor > 0 else 0.0

    def _shard_seed(self, shard_number: int) -> int:
        return self.settings.seed * 100_003 + shard_number

    # ---- tokenisation ---------------------------------------------------------------------------

    def _pad_id(self) -> int:
        return pad_id(self.tokenizer)

    def _rows(self, prompts: list[str], targets: list[str] | None) -> TokenBatch:
        return encode_rows(self.tokenizer, self._special_prefix, prompts, targets)

    # ---- context templates and statistics -------------------------------------------------------

    def prepare(self) -> None:
        """Generate the context templates and measure the layer scale now, so no edit pays for them."""
        self.context_templates
        self.margins()

    @property
    def context_templates(self) -> list[str]:
        """Short texts generated once from the model itself; each edit is also learnt behind them."""
        if self._templates is None:
            self._templates = self._generate_templates()
        return self._templates

    @context_templates.setter
    def context_templates(self, templates: list[str]) -> None:
        self._templates = list(templates)

    @torch.no_grad()
    def _generate_templates(self) -> list[str]:
        count = self.settings.n_templates
        if count <= 0:
            return []
        lengths = [5] * (count - count // 2) + [10] * (count // 2)
        templates = []
        previous_mode = self.layer.mode
        self.layer.mode = "off"
        try:
            for i, new_tokens in enumerate(lengths):
                seed = TEMPLATE_SEEDS[i % len(TEMPLATE_SEEDS)]
                ids = torch.tensor([self._special_prefix + self.tokenizer(seed, add_special_tokens=False)["input_ids"]],
                                   device=self.loaded.input_device)
                # Sampled (top-5, seeded) like ROME's templates: greedy text from a one-word seed loops.
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(self.settings.seed * 31 + i)
                    out = self.loaded.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                                     max_new_tokens=new_tokens, do_sample=True, top_k=5, top_p=1.0,
                                                     temperature=1.0, pad_token_id=self._pad_id())
                text = self.tokenizer.decode(out[0, len(self._special_prefix):], skip_special_tokens=True)
                templates.append(" ".join(text.split()))
        finally:
            self.layer.mode = previous_mode
        return templates

    @property
    def layer_scale(self) -> float:
        """Typical size of the edited layer's output, mean over tokens of ||act(W a_t)|| on unrelated text."""
        if self._layer_scale is None:
            self._layer_scale = self._measure_layer_scale()
        return self._layer_scale

    @layer_scale.setter
    def layer_scale(self, value: float) -> None:
        self._layer_scale = float(value)
        self._apply_settings_to_layer()  # the threshold floor is in units of the scale

    @torch.no_grad()
    def _measure_layer_scale(self, n_samples: int = 32) -> float:
        samples = self.irrelevant_pool[:n_samples]
        batch = self._rows(samples, None)
        down_input = self._down_input(batch)
        norms = torch.linalg.vector_norm(self.layer.act_fn(self.layer.project(down_input, self.layer.weight)), dim=-1)
        mask = batch.attention_mask.to(norms.device).bool()
        return float(norms[mask].mean())

    def _down_input(self, batch: TokenBatch) -> torch.Tensor:
        previous = self.layer.mode
        self.layer.mode, self.layer.capture_input = "off", True
        try:
            self.loaded.model(input_ids=batch.input_ids.to(self.loaded.input_device),
                              attention_mask=batch.attention_mask.to(self.loaded.input_device), use_cache=False)
        finally:
            self.layer.mode, self.layer.capture_input = previous, False
        down_input, self.layer.captured_input = self.layer.captured_input, None
        return down_input

    def margins(self) -> MarginTargets:
        s = self.settings
        scale = self.layer_scale if s.margin_scale == "relative" else 1.0
        return MarginTargets(alpha=s.alpha * scale, beta=s.beta * scale, gamma=s.gamma * scale)

    # ---- editing --------------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to the unedited state: no memories, no edits, the first shard's mask."""
        shard = SideMemory(weight=self.layer.weight.detach().clone(), kind="shard", mask_seed=self._shard_seed(1))
        self.restore((WiseState(shard=shard), [], 0))

    def snapshot(self) -> tuple[WiseState, list[tuple[str, str]], int]:
        return self.state.clone(), list(self.edit_log), self.irrelevant_cursor

    def restore(self, snapshot: tuple[WiseState, list[tuple[str, str]], int]) -> None:
        state, log, cursor = snapshot
        self.layer.state = state.clone()
        self.edit_log = list(log)
        self.irrelevant_cursor = cursor

    def _next_irrelevant(self) -> list[str]:
        """The next samples of the pool, in order (as the reference draws one per edit)."""
        count = self.settings.n_irrelevant
        pool = self.irrelevant_pool
        samples = [pool[(self.irrelevant_cursor + i) % len(pool)] for i in range(count)]
        self.irrelevant_cursor += count
        return samples

    def _replay_inputs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Down-projection inputs of a few edits held by other memories (WISE-Retrieve replay)."""
        if not (self.settings.retrieve and self.settings.replay):
            return []
        others = [i for m in self.state.merged + self.state.saved for i in m.edit_ids]
        if not others:
            return []
        rng = random.Random(self.settings.seed * 7919 + self.state.total_edits)
        chosen = rng.sample(others, min(self.settings.replay_samples, len(others)))
        batch = self._rows([self.edit_log[i][0] for i in chosen], None)
        with torch.no_grad():
            down_input = self._down_input(batch)
        mask = batch.score_mask.to(down_input.device)
        return [(down_input, mask)]

    def apply(self, request: EditRequest, should_stop: Callable[[], bool] | None = None) -> Iterator[StepEvent | EditOutcome]:
        """Train one edit. Yields a StepEvent per optimisation step and finally the EditOutcome.
        When `should_stop()` turns true between steps, restores the state and raises EditCancelled."""
        problems = request.validate()
        if problems:
            raise InvalidEdit("This edit cannot be applied: " + "; ".join(problems) + ".")
        before = self.snapshot()
        try:
            yield from self._train(request, should_stop)
            yield self._finish(request)
        except BaseException:
            self.restore(before)
            raise

    def _train(self, request: EditRequest, should_stop) -> Iterator[StepEvent]:
        self.layer.mode = "train"
        try:
            batch = build_edit_batch(self.tokenizer, request.prompt, request.target, self.context_templates)
            irrelevant = build_irrelevant_batch(self.tokenizer, self._next_irrelevant())
            for rows in (batch, irrelevant):
                if rows is not None:
                    self._prepend_special(rows)
            trainer = EditTrainer(self.arch, self.layer, batch, irrelevant, self.margins(),
                                  self.settings.full_forward, self._replay_inputs())
            shard = self.state.shard
            mask = mask_from_seed(shard.mask_seed, shard.weight.shape, self.settings.mask_ratio, shard.weight.device)
            self._ce_curve, self._margin_curve = [], []
            for event in train_steps(trainer, shard.weight, mask, self.settings, should_stop):
                self._ce_curve.append(event.ce_loss)
                self._margin_curve.append(event.margin_loss)
                yield event
            if should_stop is not None and should_stop():
                raise EditCancelled("The edit was cancelled; the side memory is as it was before it.")
            with torch.no_grad():
                self._final_edit_scores = trainer.edit_scores(shard.weight).float().cpu().tolist()
                irrelevant_scores = trainer.irrelevant_scores(shard.weight)
                self._final_irrelevant = float(irrelevant_scores.max()) if irrelevant_scores is not None else float("nan")
        finally:
            self.layer.mode = "route"

    def _prepend_special(self, batch: TokenBatch) -> None:
        if not self._special_prefix:
            return
        n = len(self._special_prefix)
        prefix = torch.tensor(self._special_prefix, dtype=torch.long).expand(batch.input_ids.shape[0], n)
        batch.input_ids = torch.cat([prefix, batch.input_ids], dim=1)
        batch.attention_mask = torch.cat([torch.ones_like(prefix), batch.attention_mask], dim=1)
        batch.score_mask = torch.cat([torch.zeros_like(prefix, dtype=torch.bool), batch.score_mask], dim=1)
        batch.target_mask = torch.cat([torch.zeros_like(prefix, dtype=torch.bool), batch.target_mask], dim=1)

    def _finish(self, request: EditRequest) -> EditOutcome:
        state, s = self.state, self.settings
        # The weakest row sets the statistic, so the edit's own prompt (one of the rows) always routes.
        edit_score = min(self._final_edit_scores)
        irrelevant = self._final_irrelevant
        index = len(self.edit_log)
        self.edit_log.append((request.prompt, request.target))
        shard = state.shard
        shard.edit_ids.append(index)
        shard.edit_scores.append(edit_score)
        state.total_edits += 1
        memories = state.routable()
        threshold = float(self.layer.thresholds(memories)[memories.index(shard)])
        shard_number = state.shards_started
        shard_full = len(shard.edit_ids) >= s.save_freq
        if shard_full:
            shard.kind = "saved"
            state.saved.append(shard)
            state.shards_started += 1
            state.shard = SideMemory(weight=self.layer.weight.detach().clone(), kind="shard",
                                     mask_seed=self._shard_seed(state.shards_started))
        merged = state.total_edits % s.merge_freq == 0 and bool(state.saved)
        if merged:
            self._merge_saved()
        return EditOutcome(
            edit_index=index, iterations=len(self._ce_curve), seconds=0.0, ce_curve=list(self._ce_curve),
            margin_curve=list(self._margin_curve), edit_score=edit_score, irrelevant_score=irrelevant,
            threshold=threshold, shard_number=shard_number, shard_full=shard_full, merged=merged,
        )

    def _merge_saved(self) -> None:
        """Merge the full shards: into the one merged memory (WISE-Merge) or into a new one (Retrieve)."""
        state = self.state
        parts = list(state.saved)
        if not self.settings.retrieve and state.merged:
            parts = state.merged + parts
        weight = merge(self.layer.weight.detach(), [p.weight for p in parts], self.settings.merge_method,
                       self.settings.ties_density)
        edit_ids = [i for p in parts for i in p.edit_ids]
        # Merging moves every edit's score; its threshold statistics are measured again on the merged weight.
        combined = SideMemory(weight=weight, kind="merged", edit_ids=edit_ids,
                              edit_scores=self._edit_scores_under(weight, edit_ids))
        combined.compact(self.layer.weight.detach())
        state.merged = ([] if not self.settings.retrieve else state.merged) + [combined]
        state.saved = []
        state.merge_events.append(state.total_edits)

    @torch.no_grad()
    def _edit_scores_under(self, weight: torch.Tensor, edit_ids: list[int]) -> list[float]:
        """Each edit's score (lowest over its training rows, as when it was trained) under `weight`."""
        scores = []
        for index in edit_ids:
            prompt, target = self.edit_log[index]
            batch = build_edit_batch(self.tokenizer, prompt, target, self.context_templates)
            self._prepend_special(batch)
            down_input = self._down_input(batch)
            distances = self.layer.token_distances(self.layer.project(down_input, weight),
                                                   self.layer.project(down_input, self.layer.weight))
            row_scores = self.layer.sequence_scores(distances, batch.score_mask.to(distances.device))
            scores.append(float(row_scores.min()))
        return scores

    def apply_edit(self, request: EditRequest, on_step: Callable[[StepEvent], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> EditOutcome:
        started = time.perf_counter()
        outcome = None
        for item in self.apply(request, should_stop):
            if isinstance(item, StepEvent):
                if on_step is not None:
                    on_step(item)
            else:
                outcome = item
        outcome.seconds = time.perf_counter() - started
        return outcome

    # ---- inference ------------------------------------------------------------------------------

    def memory_label(self, index: int) -> str:
        if index == MAIN:
            return "main memory"
        memory = self.state.routable()[index]
        names = {"merged": "merged memory", "saved": "full shard", "shard": "current shard"}
        return f"side memory {index + 1} ({names[memory.kind]})"

    @torch.no_grad()
    def route(self, prompts: list[str]) -> list[RouteDecision]:
        """Which memory answers each prompt, with its score, threshold and per-token distances."""
        batch = self._rows(prompts, None)
        info = self._forward(batch, batch.score_mask)
        decisions = []
        for row, prompt in enumerate(prompts):
            real = batch.score_mask[row]
            tokens = [self.tokenizer.decode([t]) for t in batch.input_ids[row][real].tolist()]
            if info is None:
                decisions.append(RouteDecision(prompt, MAIN, self.memory_label(MAIN), 0.0, float("inf"), tokens,
                                               [0.0] * len(tokens)))
                continue
            choice = int(info.choice[row])
            shown = choice if choice != MAIN else int(info.scores[row].argmax())
            decisions.append(RouteDecision(
                prompt=prompt, memory=choice, label=self.memory_label(choice),
                score=float(info.scores[row, shown]), threshold=float(info.thresholds[shown]),
                tokens=tokens, token_distances=info.per_token[row, shown][real].tolist(),
            ))
        return decisions

    def _forward(self, batch: TokenBatch, score_mask: torch.Tensor, mode: str = "route"):
        """One forward pass routed on `score_mask` tokens; returns the RouteInfo (None without memories)."""
        self.layer.mode = mode
        self.layer.token_mask = score_mask.to(self.loaded.input_device)
        self.layer.last_route = None
        try:
            self._last_logits = self.loaded.model(input_ids=batch.input_ids.to(self.loaded.input_device),
                                                  attention_mask=batch.attention_mask.to(self.loaded.input_device),
                                                  use_cache=False).logits
        finally:
            self.layer.mode = "route"
            self.layer.token_mask = None
        return self.layer.last_route

    @torch.no_grad()
    def teacher_forced(self, prompts: list[str], targets: list[str], use_side_memory: bool = True):
        """Feed prompt + " " + target once, routed on the prompt. Returns per row (predicted target-token
        ids, target ids, route choice) and keeps the logits for Loc comparisons."""
        batch = self._rows(prompts, targets)
        info = self._forward(batch, batch.score_mask, mode="route" if use_side_memory else "off")
        logits = self._last_logits
        results = []
        for row in range(len(prompts)):
            positions = batch.target_mask[row].nonzero().flatten()
            predicted = logits[row, positions - 1].argmax(-1).cpu().tolist()
            target_ids = batch.input_ids[row, positions].tolist()
            choice = int(info.choice[row]) if info is not None else MAIN
            results.append((predicted, target_ids, choice))
        return results

    @torch.no_grad()
    def generate(self, prompts: list[str], max_new_tokens: int = 20, use_side_memory: bool = True,
                 chat: bool = False, min_new_tokens: int = 0) -> list[str]:
        """Greedy answers. Each prompt is routed once, on its own tokens, and keeps that memory for every
        generated token."""
        tokenizer = self.tokenizer
        texts = [self.loaded.format_question(p, chat) for p in prompts]
        input_ids, attention = encode_left_padded(tokenizer, self._special_prefix, texts)
        length = input_ids.shape[1]
        device = self.loaded.input_device
        input_ids, attention = input_ids.to(device), attention.to(device)
        if use_side_memory:
            score_mask = attention.bool()
            if self._special_prefix:
                # The special prefix is not part of the query: it does not count for the score.
                score_mask = score_mask.clone()
                starts = (~attention.bool()).sum(dim=1)
                for row, start in enumerate(starts.tolist()):
                    score_mask[row, start: start + len(self._special_prefix)] = False
            info = self._forward(TokenBatch(input_ids, attention, score_mask, score_mask), score_mask)
            self.layer.route_lock = info.choice if info is not None else None
        else:
            self.layer.mode = "off"
        try:
            output = self.loaded.model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=max_new_tokens,
                                                min_new_tokens=min_new_tokens, do_sample=False,
                                                pad_token_id=self._pad_id())
        finally:
            self.layer.route_lock = None
            self.layer.mode = "route"
        return [tokenizer.decode(row[length:], skip_special_tokens=True) for row in output]

    def shard_status(self) -> ShardStatus:
        state = self.state
        return ShardStatus(
            save_freq=self.settings.save_freq, merge_freq=self.settings.merge_freq,
            shard_number=state.shards_started, shard_edits=len(state.shard.edit_ids),
            saved_shards=[len(m.edit_ids) for m in state.saved],
            merged_memories=[len(m.edit_ids) for m in state.merged],
            merge_events=list(state.merge_events), total_edits=state.total_edits,
        )
