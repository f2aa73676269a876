"""What the apply loop reports, as plain frozen data: the CLI prints it, the window's worker forwards it."""

from __future__ import annotations

from dataclasses import dataclass

from wise_gui.core.evaluation import QuestionAnswer, Scores
from wise_gui.core.wise.editor import EditOutcome, MemoryStatus
from wise_gui.core.wise.training import StepEvent
from wise_gui.store import EditDetail


@dataclass(frozen=True)
class EditStarted:
    edit_id: int
    position: int  # 1-based, in this run
    total: int
    prompt: str
    target: str
    detail: EditDetail  # the edit as stored now (status "applying")


@dataclass(frozen=True)
class EditStep:
    edit_id: int
    step: StepEvent
    n_iter: int  # the most steps this edit may take


@dataclass(frozen=True)
class EditApplied:
    edit_id: int
    outcome: EditOutcome
    answers: list[QuestionAnswer]
    scores: Scores
    apply_order: int
    seconds: float  # the whole edit: training, answering, measuring, saving
    detail: EditDetail  # the edit as stored now
    status: MemoryStatus  # the side memory after it


@dataclass(frozen=True)
class EditFailed:
    edit_id: int
    message: str
    detail: EditDetail | None  # None: the edit no longer exists
    write_error: bool = False  # the checkpoint could not be written: back in the queue, the run stops


@dataclass(frozen=True)
class EditCancelled:
    edit_id: int
    detail: EditDetail


@dataclass(frozen=True)
class RunFinished:
    applied: list[int]
    failed: list[int]
    cancelled: bool
    # Set when the run stopped because a checkpoint could not be written (a full disk, a read-only
    # folder): the edit went back to the queue, the stored state and the RAM state are the previous ones.
    write_error: str | None = None


RunEvent = EditStarted | EditStep | EditApplied | EditFailed | EditCancelled
