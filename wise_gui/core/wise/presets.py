"""Named settings for the engine's methods, measured on SmolLM2-135M-Instruct (docs/engine-findings.md).

Every preset shares what makes edits stick on a small model: margins in units of the layer's measured
activation scale, a step size that converges within the iteration budget, eight irrelevant samples per
edit, and training stopped 5 steps after the edit is learnt. They differ in the memory layout:

- wise-retrieve: one memory per edit (a random fifth of the weight), every memory scored for every
  query. The preset of the first version; its costs grow with the number of edits.
- wise-index: one memory per edit, but only the 5% of inputs where the edit's question stands out may
  change, and a query is scored only against the memories whose keys lie nearest its own (compared
  after whitening, so that an unrelated question is not near a key for sharing the question's form).
- memoir: one residual memory, each edit writing the columns of its TopHash mask (k = 0.286 of the FFN
  width, the fraction MEMOIR uses on LLaMA-3-8B: 4096 of 14336).
- wise-merge: the paper's layout, one memory with the reference shard sizes (500 edits, merged at 1000).
"""

from __future__ import annotations

from wise_gui.core.wise.settings import WiseSettings, reference_settings

_SMALL_MODEL = dict(
    lr=3.0, margin_scale="relative", alpha=0.3, beta=0.5, gamma=0.25, act_ratio=0.5, threshold_floor=0.9,
    n_irrelevant=8, stop_when_learnt=True,
)


def _wise_retrieve() -> WiseSettings:
    return WiseSettings(method="wise-retrieve", save_freq=1, merge_freq=1, **_SMALL_MODEL)


def _wise_index() -> WiseSettings:
    return _wise_retrieve().replace(mask_kind="columns", mask_ratio=0.052, route_candidates=8, key_similarity=0.3,
                                    key_whitening=True, lr=6.0, chat_form=True)


def _memoir() -> WiseSettings:
    return WiseSettings(method="memoir", mask_ratio=0.286, overlap_threshold=0.4, lr=3.0, n_iter=70,
                        stop_when_learnt=True, n_irrelevant=0, chat_form=True)


def _wise_merge() -> WiseSettings:
    reference = reference_settings()
    return _wise_retrieve().replace(method="wise-merge", save_freq=reference.save_freq, merge_freq=reference.merge_freq)


PRESETS = {
    "wise-index": _wise_index,
    "wise-retrieve": _wise_retrieve,
    "memoir": _memoir,
    "wise-merge": _wise_merge,
}
DEFAULT_PRESET = "wise-index"


def preset(name: str = DEFAULT_PRESET) -> WiseSettings:
    """The named preset; by default the engine's best on small models. The values were measured on a
    135M model; the relative margins are meant to carry over to larger ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose {', '.join(PRESETS)}")
    return PRESETS[name]()



def method_label(settings: WiseSettings) -> str:
    """What rows and reports call the method: wise-index is WISE-Retrieve with a key index."""
    if settings.method == "wise-retrieve" and settings.route_candidates > 0:
        return "wise-index"
    return settings.method
