"""Progress and ETA of an apply run, from the run's events (no Qt, so it is easy to test)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class RunProgress:
    total: int
    iterations_per_edit: int  # the n_iter setting; an early stop only makes an edit shorter
    clock: Callable[[], float] = time.perf_counter
    finished: int = 0  # applied or failed
    iteration: int = 0  # of the edit training now
    edit_seconds: list[float] = field(default_factory=list)
    _edit_started: float | None = None

    def edit_started(self) -> None:
        self.iteration = 0
        self._edit_started = self.clock()

    def step(self, iteration: int) -> None:
        self.iteration = iteration

    def edit_finished(self, seconds: float | None = None) -> None:
        if seconds is None and self._edit_started is not None:
            seconds = self.clock() - self._edit_started
        if seconds is not None:
            self.edit_seconds.append(seconds)
        self.finished += 1
        self.iteration = 0
        self._edit_started = None

    def fraction(self) -> float:
        if self.total <= 0:
            return 0.0
        current = min(self.iteration / max(self.iterations_per_edit, 1), 1.0) if self._edit_started is not None else 0.0
        return min((self.finished + current) / self.total, 1.0)

    def eta_seconds(self) -> float | None:
        """Seconds left: the mean time of the finished edits, or the current edit's step rate until one finished."""
        if self._edit_started is None:
            return None
        elapsed = self.clock() - self._edit_started
        if self.edit_seconds:
            per_edit = sum(self.edit_seconds) / len(self.edit_seconds)
        elif self.iteration > 0:
            per_edit = elapsed / self.iteration * self.iterations_per_edit
        else:
            return None
        remaining_edits = self.total - self.finished - 1
        return max(per_edit - elapsed, 0.0) + per_edit * max(remaining_edits, 0)
