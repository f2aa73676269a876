"""What the window shows of a workspace besides the table, as plain data (no Qt: the worker builds it).

The router plot's points come from the apply loop's outcomes: each applied edit's own score, those of
its paraphrases and locality questions as the user asked them, and the highest of its unrelated samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from wise_gui.core.evaluation import QuestionAnswer
from wise_gui.core.wise.editor import MemoryStatus
from wise_gui.store import EditDetail

UNRELATED_LABEL = "unrelated sample (the edit's stay-quiet margin)"


@dataclass(frozen=True)
class RoutedPoint:
    """One prompt's activation score, measured when the edit at `order` had just been applied."""

    order: int  # apply order of the edit (1 = first)
    edit_id: int
    kind: str  # "prompt", "paraphrase", "locality" or "unrelated"
    prompt: str
    score: float
    threshold: float | None = None  # the threshold that score was compared with


@dataclass(frozen=True)
class AppliedEditPoints:
    order: int
    edit_id: int
    threshold: float | None
    points: tuple[RoutedPoint, ...]


@dataclass(frozen=True)
class WorkspaceView:
    """The plots' history, the side memory's shape and the threshold of the last edit's memory."""

    history: list[AppliedEditPoints]
    status: MemoryStatus
    threshold: float | None
    retrieve: bool  # each memory has its own threshold


def applied_edit_points(order: int, edit_id: int, prompt: str, edit_score: float | None, threshold: float | None,
                        answers: list[QuestionAnswer], unrelated_score: float | None = None) -> AppliedEditPoints:
    """The router plot's points for one applied edit, from what the apply loop measured."""
    points = []
    if edit_score is not None:
        points.append(RoutedPoint(order, edit_id, "prompt", prompt, float(edit_score), threshold))
    for answer in answers:
        if answer.kind in ("paraphrase", "locality") and answer.route.score is not None:
            points.append(RoutedPoint(order, edit_id, answer.kind, answer.question, float(answer.route.score),
                                      answer.route.threshold))
    if unrelated_score is not None and math.isfinite(unrelated_score):
        points.append(RoutedPoint(order, edit_id, "unrelated", UNRELATED_LABEL, float(unrelated_score), threshold))
    return AppliedEditPoints(order, edit_id, threshold, tuple(points))


def stored_answers(detail: EditDetail) -> list[QuestionAnswer]:
    if detail.outcome is None:
        return []
    return [QuestionAnswer.from_dict(a) for a in detail.outcome.fields.answers]


def edit_points(detail: EditDetail) -> AppliedEditPoints | None:
    """The router plot's points of an applied edit, from its stored outcome."""
    if detail.outcome is None or detail.apply_order is None:
        return None
    fields = detail.outcome.fields
    return applied_edit_points(detail.apply_order, detail.id, detail.request.prompt, fields.activation_score,
                               fields.threshold, stored_answers(detail), fields.extra_metrics.get("irrelevant_score"))
