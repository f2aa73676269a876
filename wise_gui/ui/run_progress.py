"""Progress and ETA of an apply run, from the run's events (no Qt, so it is easy to test).

The bar moves with the optimisation steps of the edit in training, not only when an edit ends. The ETA
is the measured seconds per step, exponentially smoothed so it settles instead of jumping, times the
steps left, plus the measured time each edit spends outside its steps (answering, measuring, saving).
The steps an edit takes are estimated by the mean of the finished edits (n_iter before the first one
ends); once an edit is learnt and stops early, it ends settle_steps later.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def _smoothed(previous: float | None, value: float, weight: float) -> float:
    return value if previous is None else previous + weight * (value - previous)


@dataclass
class RunProgress:
    total: int
    n_iter: int  # the most steps an edit may take
    settle_steps: int | None = None  # with stop_when_learnt: steps an edit goes on after it is learnt
    smoothing: float = 0.2  # weight of the newest measurement
    finished: int = 0  # applied or failed
    step: int = 0  # steps done by the edit training now
    training: bool = False
    learnt_at: int | None = None
    seconds_per_step: float | None = None
    seconds_besides_steps: float | None = None  # per edit
    steps_taken: list[int] = field(default_factory=list)  # by each finished edit
    _step_seconds: float = 0.0  # the edit's training time at its last step
    _shown: float = 0.0

    def edit_started(self) -> None:
        self.training, self.step, self.learnt_at, self._step_seconds = True, 0, None, 0.0

    def steps(self, iteration: int, seconds: float, learnt: bool = False) -> None:
        """The edit in training reached `iteration` after `seconds` of training."""
        if iteration > self.step:
            per_step = max(seconds - self._step_seconds, 0.0) / (iteration - self.step)
            self.seconds_per_step = _smoothed(self.seconds_per_step, per_step, self.smoothing)
            self.step, self._step_seconds = iteration, seconds
        if learnt and self.learnt_at is None:
            self.learnt_at = iteration
        elif not learnt:
            self.learnt_at = None

    def edit_finished(self, seconds: float | None = None) -> None:
        """The edit in training was applied (its whole time: `seconds`) or failed."""
        if self.step:
            self.steps_taken.append(self.step)
        if seconds is not None:
            besides = max(seconds - self._step_seconds, 0.0)
            self.seconds_besides_steps = _smoothed(self.seconds_besides_steps, besides, self.smoothing)
        self.finished += 1
        self.training = False

    def edit_cancelled(self) -> None:
        self.training = False

    def expected_steps(self) -> float:
        """Steps a coming edit will take."""
        return sum(self.steps_taken) / len(self.steps_taken) if self.steps_taken else float(self.n_iter)

    def current_expected(self) -> float:
        """Steps the edit in training will take; always more than it has taken (it has not ended)."""
        expected = self.expected_steps()
        if self.learnt_at is not None and self.settle_steps is not None:
            expected = self.learnt_at + self.settle_steps
        return min(max(expected, self.step + 1.0), max(self.n_iter, self.step + 1.0))

    def fraction(self) -> float:
        """Done, 0..1; never goes back while the run lasts."""
        if self.total <= 0:
            return 0.0
        current = self.step / self.current_expected() if self.training else 0.0
        self._shown = max(self._shown, min((self.finished + current) / self.total, 1.0))
        return self._shown

    def eta_seconds(self) -> float | None:
        """Seconds left, once a step has been timed."""
        if self.seconds_per_step is None:
            return None
        coming = max(self.total - self.finished - int(self.training), 0)
        steps_left = (self.current_expected() - self.step if self.training else 0.0) + coming * self.expected_steps()
        besides = (self.seconds_besides_steps or 0.0) * (coming + int(self.training))
        return self.seconds_per_step * steps_left + besides
