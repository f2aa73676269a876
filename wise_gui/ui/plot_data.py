"""What the plots show, as plain data built from the apply loop's outcomes (no Qt: the worker builds it too)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

UNRELATED_LABEL = "unrelated sample (the edit's stay-quiet margin)"


@dataclass(frozen=True)
class RoutedPoint:
    """One prompt's activation score, measured when the edit at `order` had just been applied."""

    order: int  # apply order of the edit (1 = first)
    edit_id: int
    kind: str  # a ROUTER_SERIES key
    prompt: str
    score: float


@dataclass(frozen=True)
class AppliedEditPoints:
    order: int
    edit_id: int
    threshold: float | None
    points: tuple[RoutedPoint, ...]


def answer_dict(row) -> dict:
    """An answer row as a dict: they arrive as dataclasses from the worker and as dicts from the store."""
    return dataclasses.asdict(row) if dataclasses.is_dataclass(row) else dict(row)


def applied_edit_points(order: int, edit_id: int, prompt: str, edit_score: float | None, threshold: float | None,
                        answers: list, unrelated_score: float | None = None) -> AppliedEditPoints:
    """The router plot's points for one applied edit, from what the apply loop measured: the edit's own
    score, those of its paraphrases and locality prompts, and the highest score of its unrelated samples."""
    points = []
    if edit_score is not None:
        points.append(RoutedPoint(order, edit_id, "prompt", prompt, float(edit_score)))
    for answer in map(answer_dict, answers):
        if answer.get("kind") in ("paraphrase", "locality") and answer.get("score") is not None:
            points.append(RoutedPoint(order, edit_id, answer["kind"], answer.get("prompt", ""), float(answer["score"])))
    if unrelated_score is not None and math.isfinite(unrelated_score):
        points.append(RoutedPoint(order, edit_id, "unrelated", UNRELATED_LABEL, float(unrelated_score)))
    return AppliedEditPoints(order, edit_id, threshold, tuple(points))
