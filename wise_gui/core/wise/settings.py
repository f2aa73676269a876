"""WISE hyperparameters in one settings object, with the reference defaults and per-family presets."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

# Reference layer choices from the paper (wise-method.md section 1), as (layer, of N layers).
_PAPER_LAYERS = {"llama": (27, 32), "mistral": (27, 32), "qwen2": (23, 28)}


@dataclass
class WiseSettings:
    """Every knob of the method. Field docs double as tooltips in the GUI."""

    layer: int | None = None
    """Decoder layer whose FFN down projection gets the side memory (None: about 0.85 of the depth)."""
    lr: float = 1.0
    """SGD learning rate of the side memory (reference 1.0)."""
    n_iter: int = 70
    """Optimisation steps per edit (reference 70), with an early stop once the loss is flat and small."""
    early_stop_loss: float = 0.02
    """Stop when the loss is at most this ..."""
    early_stop_delta: float = 1e-4
    """... and changed by at most this since the previous step."""
    stop_when_learnt: bool = False
    """Also stop once the edit is learnt: every target token of every edit row is the model's top
    prediction and the edit rows' margins (beta, gamma) hold, for settle_steps + 1 steps in a row
    (not in the reference; saves most steps on a CPU)."""
    settle_steps: int = 5
    """With stop_when_learnt: steps that go on after the edit is first learnt, lowering its loss further."""
    mask_ratio: float = 0.2
    """Fraction of side-memory entries each knowledge shard may change (its random gradient subspace)."""
    alpha: float = 5.0
    """Margin: the side memory's activation score on unrelated input must stay below alpha."""
    beta: float = 20.0
    """Margin: the score on the edit's prompts must exceed beta."""
    gamma: float = 10.0
    """Margin: the edit's score must exceed the unrelated score by at least gamma."""
    margin_scale: str = "absolute"
    """'absolute': alpha/beta/gamma as given (the paper's). 'relative': multiples of the layer's measured
    typical activation norm, so the same numbers work for small and large models."""
    act_ratio: float = 0.88
    """Routing threshold = act_ratio x the smallest score any edit in the memory reached."""
    threshold_floor: float = 0.0
    """No routing threshold below this multiple of beta (0: none, the paper's rule alone). With many
    memories it keeps unrelated questions from the lowest thresholds."""
    norm_constraint: float = 1.0
    """Each side-memory entry stays within +-this of the original weight."""
    save_freq: int = 500
    """Shard size: edits per knowledge shard before a fresh shard (and mask) starts."""
    merge_freq: int = 1000
    """Every merge_freq edits the full shards are merged into one memory (TIES)."""
    merge_method: str = "ties"
    """'ties' (trim, elect sign, disjoint mean) or 'linear' (mean of the shards' changes)."""
    ties_density: float = 0.53
    """TIES: fraction of each shard's change kept, by magnitude."""
    retrieve: bool = False
    """WISE-Retrieve: keep each merged memory apart, with its own threshold; route to the best."""
    replay: bool = False
    """WISE-Retrieve only: while training, keep the current memory quiet on earlier memories' edits."""
    replay_samples: int = 4
    """Earlier edits replayed per edit when replay is on."""
    n_irrelevant: int = 1
    """Unrelated samples per edit for the 'stay quiet' margin (reference 1). They cost almost nothing on
    the cached path: only the edited layer sees them."""
    n_templates: int = 10
    """Random context prefixes generated from the model; each edit is also trained behind them."""
    full_forward: bool = False
    """Run the whole model in every step instead of only the layers above the edited one (slower; same result)."""
    seed: int = 0
    """Seed of the shard masks and of the irrelevant-sample order."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> "WiseSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown WISE settings: {', '.join(sorted(unknown))}")
        return cls(**values)

    def replace(self, **changes) -> "WiseSettings":
        return dataclasses.replace(self, **changes)

    @staticmethod
    def field_help() -> dict[str, str]:
        """Name -> one-line explanation, read from the attribute docstrings above."""
        return dict(_FIELD_HELP)


def default_layer(model_type: str, n_layers: int) -> int:
    """The paper's layer for its models, else the analogue near 0.85 of the depth."""
    if model_type in _PAPER_LAYERS and _PAPER_LAYERS[model_type][1] == n_layers:
        return _PAPER_LAYERS[model_type][0]
    return min(n_layers - 2, max(1, round(0.85 * n_layers)))


def reference_settings() -> WiseSettings:
    """The paper's LLaMA-2-7B hyperparameters, unchanged."""
    return WiseSettings()


def preset_for(model_type: str, n_parameters: int) -> WiseSettings:
    """Defaults that make edits stick on small and large models alike (docs/engine-findings.md):
    margins in units of the layer's measured activation scale, a step size that converges within the
    iteration budget, eight irrelevant samples per edit, and WISE-Retrieve with one memory per edit
    (within one memory, later edits overwrite earlier ones on a small model). The threshold ratio 0.5
    is the paper's value for LLaMA-3-8B; no threshold falls below 0.9 beta, which kept locality at
    T=30 (Loc 0.89 -> 1.00). Training stops 5 steps after the edit is learnt: 32 steps instead of 70
    at T=10, Gen 0.785 instead of 0.80."""
    return WiseSettings(
        lr=3.0, margin_scale="relative", alpha=0.3, beta=0.5, gamma=0.25, act_ratio=0.5, threshold_floor=0.9,
        n_irrelevant=8, retrieve=True, save_freq=1, merge_freq=1, stop_when_learnt=True,
    )


def merge_variant(settings: WiseSettings) -> WiseSettings:
    """WISE-Merge with the training settings of `settings`. One edit per shard (the retrieve preset's
    layout) would, in one merged memory, TIES-merge after every edit and trim the earlier edits each
    time; such settings get the reference shard sizes instead (one shard up to 500 edits)."""
    if settings.save_freq == 1:
        reference = reference_settings()
        settings = settings.replace(save_freq=reference.save_freq, merge_freq=reference.merge_freq)
    return settings.replace(retrieve=False)


def _read_field_help() -> dict[str, str]:
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(WiseSettings))
    body = tree.body[0].body
    help_text = {}
    for node, following in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
            help_text[node.target.id] = " ".join(str(following.value.value).split())
    return help_text


_FIELD_HELP = _read_field_help()
