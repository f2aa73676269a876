"""WISE hyperparameters in one settings object that checks itself, with the reference defaults and presets.

Each field carries its help text (the window's tooltips) and its valid range in its metadata; choices
are `Literal` types. A bad value is refused when the settings are made, with a message naming the
field, so a misspelt choice never silently means something else.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from wise_gui.core.errors import WiseGuiError

# Reference layer choices from the paper (wise-method.md section 1), as (layer, of N layers).
_PAPER_LAYERS = {"llama": (27, 32), "mistral": (27, 32), "qwen2": (23, 28)}

Method = Literal["wise-merge", "wise-retrieve", "memoir"]
MaskKind = Literal["random", "columns"]


class SettingsError(WiseGuiError, ValueError):
    """A settings value is out of range, of the wrong type, or unknown; the message names it."""


def _setting(default: Any, help: str, minimum: float | None = None, maximum: float | None = None,
             above: float | None = None):
    """A field with its help text and range: `minimum`/`maximum` inclusive, `above` exclusive."""
    return field(default=default, metadata={"help": " ".join(help.split()), "minimum": minimum,
                                            "maximum": maximum, "above": above})


@dataclass(frozen=True)
class WiseSettings:
    """Every knob of the method. The defaults are the paper's values for LLaMA-2-7B (WISE-Merge)."""

    method: Method = _setting("wise-merge", """How the side memories are laid out. wise-merge: knowledge
        shards merged (TIES) into one memory with one threshold (the paper's WISE). wise-retrieve: every
        merged memory kept apart with its own threshold; a query goes to the best one above its threshold.
        memoir: one residual memory, each edit writing only the columns of its sample-dependent mask,
        used when a query's mask overlaps a stored edit's mask (MEMOIR, Qin et al. 2025).""")
    layer: int | None = _setting(None, """Decoder layer whose FFN down projection gets the side memory
        (empty: about 0.85 of the depth).""", minimum=0)
    lr: float = _setting(1.0, "SGD learning rate of the side memory (reference 1.0).", above=0.0)
    n_iter: int = _setting(70, """Optimisation steps per edit at most (reference 70), with an early stop
        once the loss is flat and small.""", minimum=1, maximum=100_000)
    early_stop_loss: float = _setting(0.02, "Stop when the loss is at most this ...", minimum=0.0)
    early_stop_delta: float = _setting(1e-4, "... and changed by at most this since the previous step.",
                                       minimum=0.0)
    stop_when_learnt: bool = _setting(False, """Also stop once the edit is learnt: every target token of
        every edit row is the model's top prediction and the edit rows' margins (beta, gamma) hold, for
        settle_steps + 1 steps in a row (not in the reference; saves most steps on a CPU).""")
    settle_steps: int = _setting(5, """With stop_when_learnt: steps that go on after the edit is first
        learnt, lowering its loss further.""", minimum=0, maximum=10_000)
    mask_kind: MaskKind = _setting("random", """Which entries an edit may change. random: a random
        Bernoulli mask of mask_ratio of the entries per knowledge shard (the paper's). columns: the
        mask_ratio of the columns (inputs of the projection) on which the edit's question has its largest
        activations: few entries, placed where they act.""")
    mask_ratio: float = _setting(0.2, """Fraction of side-memory entries (random) or columns (columns,
        memoir) an edit may change.""", above=0.0, maximum=1.0)
    alpha: float = _setting(5.0, "Margin: the side memory's activation score on unrelated input must stay below alpha.",
                            minimum=0.0)
    beta: float = _setting(20.0, "Margin: the score on the edit's prompts must exceed beta.", minimum=0.0)
    gamma: float = _setting(10.0, "Margin: the edit's score must exceed the unrelated score by at least gamma.",
                            minimum=0.0)
    margin_scale: Literal["absolute", "relative"] = _setting("absolute", """absolute: alpha, beta and
        gamma as given (the paper's). relative: multiples of the layer's measured typical activation
        norm, so the same numbers work for small and large models.""")
    act_ratio: float = _setting(0.88, "Routing threshold = act_ratio x the smallest score any edit in the memory reached.",
                                above=0.0, maximum=10.0)
    threshold_floor: float = _setting(0.0, """No routing threshold below this multiple of beta (0: none,
        the paper's rule alone). With many memories it keeps unrelated questions from the lowest
        thresholds.""", minimum=0.0, maximum=10.0)
    norm_constraint: float = _setting(1.0, "Each side-memory entry stays within +-this of the original weight.",
                                      above=0.0)
    save_freq: int = _setting(500, """Shard size: edits per knowledge shard before a fresh shard (and
        mask) starts.""", minimum=1)
    merge_freq: int = _setting(1000, "Every merge_freq edits the full shards are merged into one memory (TIES).",
                               minimum=1)
    merge_method: Literal["ties", "linear"] = _setting("ties", """ties: trim, elect sign, disjoint mean;
        linear: the mean of the shards' changes.""")
    ties_density: float = _setting(0.53, "TIES: fraction of each shard's change kept, by magnitude.", above=0.0,
                                   maximum=1.0)
    memory_rank: int = _setting(0, """wise-retrieve, one edit per memory: 0 keeps each memory as the
        entries of its mask that changed; r > 0 trains the change as a rank-r product U V^T instead (V
        starting on the directions of the edit's question inputs) and keeps only the two factors: a few
        kilobytes per edit.""", minimum=0, maximum=4096)
    route_candidates: int = _setting(0, """wise-retrieve: score only the memories whose keys (the mean
        input of the projection over an edit's question) lie nearest the query's; 0 scores every memory,
        whose cost grows with the number of edits.""", minimum=0)
    key_similarity: float = _setting(-1.0, """wise-retrieve with route_candidates: a memory is scored only
        when the cosine similarity of its key to the query's reaches this (-1: any of the nearest). Unrelated
        questions then reach no memory at all.""", minimum=-1.0, maximum=1.0)
    key_whitening: bool = _setting(False, """wise-retrieve with route_candidates: compare keys and queries
        after whitening them with the spread of unrelated questions' features (measured once on the
        model), so the directions all questions share count less than those that tell them apart.""")
    replay: bool = _setting(False, "wise-retrieve: while training, keep the current memory quiet on earlier memories' edits.")
    replay_samples: int = _setting(4, "Earlier edits replayed per edit when replay is on.", minimum=0)
    overlap_threshold: float = _setting(0.4, """memoir: the residual memory answers a query when its
        mask shares at least this fraction of its entries with a stored edit's mask.""", minimum=0.0,
                                        maximum=1.0)
    n_irrelevant: int = _setting(1, """Unrelated samples per edit for the 'stay quiet' margin (reference
        1). They cost almost nothing on the cached path: only the edited layer sees them.""", minimum=0,
                                 maximum=1000)
    n_templates: int = _setting(10, "Random context prefixes generated from the model; each edit is also learnt behind them.",
                                minimum=0, maximum=100)
    chat_form: bool = _setting(False, """Instruct models: also learn the edit as the model's chat
        template asks it (the target as the assistant's reply), so a question asked in a chat gets the
        new answer. Ignored for models without a chat template.""")
    full_forward: bool = _setting(False, """Run the whole model in every step instead of only the layers
        above the edited one (slower; same result).""")
    head_bfloat16: bool = _setting(False, """Compute the LM head's products while training in bfloat16
        (a copy of its weight, made once; the softmax stays in float32). On a CPU with bfloat16
        instructions its forward product is about three times and its backward about 1.5 times as fast;
        the logits and their gradient are rounded to bfloat16.""")
    seed: int = _setting(0, "Seed of the shard masks and of the irrelevant-sample order.", minimum=0)

    def __post_init__(self) -> None:
        hints = _type_hints()
        for spec in dataclasses.fields(self):
            value = _checked(spec, hints[spec.name], getattr(self, spec.name))
            object.__setattr__(self, spec.name, value)
        if self.memory_rank and (self.method != "wise-retrieve" or self.save_freq != 1):
            raise SettingsError("memory_rank needs one edit per memory: method wise-retrieve with save_freq 1.")

    # ---- conversions ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> WiseSettings:
        """Settings from stored JSON; refuses unknown names. Files of the first format said
        `retrieve: true/false` where this one names the method."""
        if not isinstance(values, dict):
            raise SettingsError(f"WISE settings must be a JSON object, not {type(values).__name__}.")
        values = dict(values)
        if "retrieve" in values and "method" not in values:
            retrieve = values.pop("retrieve")
            values["method"] = "wise-retrieve" if retrieve is True else "wise-merge"
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SettingsError(f"Unknown WISE settings: {', '.join(unknown)}.")
        return cls(**values)

    def replace(self, **changes) -> WiseSettings:
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise SettingsError(f"Unknown WISE settings: {', '.join(unknown)}.")
        return dataclasses.replace(self, **changes)

    # ---- what the layout implies ------------------------------------------------------------------

    @property
    def retrieve(self) -> bool:
        """Merged memories kept apart, each with its own threshold."""
        return self.method == "wise-retrieve"

    @staticmethod
    def field_help() -> dict[str, str]:
        """Name -> one-line explanation (the window's tooltips)."""
        return {f.name: f.metadata["help"] for f in dataclasses.fields(WiseSettings)}

    @staticmethod
    def choices(name: str) -> tuple[str, ...] | None:
        """The allowed values of a Literal field, else None."""
        hint = _type_hints()[name]
        return typing.get_args(hint) if typing.get_origin(hint) is Literal else None

    @staticmethod
    def value_range(name: str) -> tuple[float | None, float | None]:
        """(lowest, highest) allowed value of a number field; None where it is open."""
        metadata = next(f.metadata for f in dataclasses.fields(WiseSettings) if f.name == name)
        low = metadata["minimum"] if metadata["minimum"] is not None else metadata["above"]
        return low, metadata["maximum"]


_HINTS: dict[str, Any] = {}


def _type_hints() -> dict[str, Any]:
    if not _HINTS:
        _HINTS.update(typing.get_type_hints(WiseSettings))
    return _HINTS


def _checked(spec: dataclasses.Field, hint, value):
    """`value` for the field `spec`, converted where that is lossless (an int for a float), else refused."""
    name = spec.name
    optional = type(None) in typing.get_args(hint) and typing.get_origin(hint) is not Literal
    if optional:
        if value is None:
            return None
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if typing.get_origin(hint) is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise SettingsError(f"{name} must be one of {', '.join(map(repr, allowed))}, not {value!r}.")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"{name} must be true or false, not {value!r}.")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{name} must be a whole number, not {value!r}.")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise SettingsError(f"{name} must be a number, not {value!r}.")
        value = float(value)
    metadata = spec.metadata
    if metadata["minimum"] is not None and value < metadata["minimum"]:
        raise SettingsError(f"{name} must be at least {metadata['minimum']:g}, not {value:g}.")
    if metadata["above"] is not None and value <= metadata["above"]:
        raise SettingsError(f"{name} must be above {metadata['above']:g}, not {value:g}.")
    if metadata["maximum"] is not None and value > metadata["maximum"]:
        raise SettingsError(f"{name} must be at most {metadata['maximum']:g}, not {value:g}.")
    return value


def default_layer(model_type: str, n_layers: int) -> int:
    """The paper's layer for its models, else the analogue near 0.85 of the depth."""
    if model_type in _PAPER_LAYERS and _PAPER_LAYERS[model_type][1] == n_layers:
        return _PAPER_LAYERS[model_type][0]
    return min(n_layers - 2, max(1, round(0.85 * n_layers)))


def reference_settings() -> WiseSettings:
    """The paper's LLaMA-2-7B hyperparameters, unchanged."""
    return WiseSettings()
