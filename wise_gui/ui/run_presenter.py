"""Turns the events of an apply run into what the window shows: the table's rows, the plots, the
progress bar with its ETA, and the run's summary. It holds no store and no editor: every event
carries what it needs (the edit as stored, the side memory's shape), so nothing is fetched twice.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QLabel, QProgressBar

from wise_gui.app.events import EditApplied, EditCancelled, EditFailed, EditStarted, EditStep, RunFinished
from wise_gui.app.views import applied_edit_points
from wise_gui.core.wise.settings import WiseSettings
from wise_gui.ui.edit_table import EditTableModel
from wise_gui.ui.plots import PlotPanel
from wise_gui.ui.run_progress import RunProgress
from wise_gui.ui.style import format_duration, shorten

ETA_MS = 200


def run_summary(finished: RunFinished) -> tuple[str, str]:
    """(the toolbar's short line, the status bar's full sentence) for a finished run."""
    parts = [f"{len(finished.applied)} applied"]
    if finished.failed:
        parts.append(f"{len(finished.failed)} failed")
    if finished.write_error:
        return "Run stopped: checkpoint not written", f"Run stopped after {', '.join(parts)}: {finished.write_error}"
    short = "Run finished: " + ", ".join(parts) + (" · cancelled" if finished.cancelled else "")
    full = "Run finished: " + ", ".join(parts) + (
        "; cancelled: the edit in training was rolled back, the applied ones stay." if finished.cancelled else ".")
    return short, full


class RunPresenter(QObject):
    edit_changed = Signal(object)  # EditDetail: an edit's new state, as stored
    memory_changed = Signal(object, object)  # MemoryStatus, threshold of the last edit's memory (or None)

    def __init__(self, table_model: EditTableModel, plots: PlotPanel, bar: QProgressBar, label: QLabel,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.table_model, self.plots, self.bar, self.label = table_model, plots, bar, label
        self.progress: RunProgress | None = None
        self.training_edit: int | None = None
        self.failures: list[tuple[int, str]] = []  # (edit id, message) of this run
        self._prompt = ""
        self._order = 1  # the apply order the edit in training will get
        self._besides_steps: float | None = None  # an edit's time beyond its steps, measured by the last run
        self._timer = QTimer(self, interval=ETA_MS)
        self._timer.timeout.connect(self._show_progress)

    @property
    def running(self) -> bool:
        return self.progress is not None

    def start(self, total: int, settings: WiseSettings) -> None:
        settle = settings.settle_steps if settings.stop_when_learnt else None
        self.progress = RunProgress(total, settings.n_iter, settle, seconds_besides_steps=self._besides_steps)
        self.failures = []
        self.bar.setValue(0)
        self.bar.show()
        self.show_message(f"starting {total} edit{'s' * (total != 1)}…")
        self._timer.start()

    def show_message(self, text: str, tip: str = "") -> None:
        self.label.setText(text)
        self.label.setToolTip(tip or text)

    def handle(self, events: list) -> None:
        """One report of the worker: the events since the last one, in order."""
        for event in events:
            if isinstance(event, EditStep):
                self._step(event)
            elif isinstance(event, EditStarted):
                self._started(event)
            elif isinstance(event, EditApplied):
                self._applied(event)
            elif isinstance(event, EditFailed):
                self.progress.edit_finished()
                self.failures.append((event.edit_id, event.message))
                self._edit_ended(event.detail)
            elif isinstance(event, EditCancelled):
                self.progress.edit_cancelled()
                self.plots.loss.finish_edit()
                self._edit_ended(event.detail)

    def _step(self, event: EditStep) -> None:
        step = event.step
        self.plots.loss.add_step(step.ce_loss, step.margin_loss, step.total_loss)
        self.progress.steps(step.iteration, step.seconds, step.learnt)
        if step.edit_scores:
            self.plots.router.set_live(self._order, self._prompt, sum(step.edit_scores) / len(step.edit_scores))

    def _started(self, event: EditStarted) -> None:
        progress = self.progress
        progress.total = max(progress.total, event.total)
        progress.edit_started()
        self.training_edit, self._prompt = event.edit_id, event.prompt
        self._order = max(self.plots.router.edits, default=0) + 1
        self.table_model.set_highlighted(event.edit_id)
        self.plots.loss.start_edit(event.edit_id, f"“{shorten(event.prompt, 24)}” ({event.position}/{progress.total})",
                                   progress.n_iter)
        self.plots.shards.set_training(True)
        self._show_detail(event.detail)
        self._show_progress()

    def _applied(self, event: EditApplied) -> None:
        outcome = event.outcome
        self.progress.edit_finished(event.seconds)
        self.plots.router.add_edit(applied_edit_points(
            event.apply_order, event.edit_id, self._prompt, outcome.edit_score, outcome.threshold, event.answers,
            outcome.irrelevant_score))
        self.plots.loss.finish_edit()
        self._edit_ended(event.detail)
        self.plots.shards.set_status(event.status)
        self.memory_changed.emit(event.status, outcome.threshold)

    def _edit_ended(self, detail) -> None:
        self.training_edit = None
        self.plots.router.clear_live()
        self.plots.shards.set_training(False)
        self.table_model.set_highlighted(None)
        if detail is not None:
            self._show_detail(detail)
        self._show_progress()

    def _show_detail(self, detail) -> None:
        self.table_model.refresh_edit(detail.id, detail)
        self.edit_changed.emit(detail)

    def _show_progress(self) -> None:
        progress = self.progress
        if progress is None:
            return
        self.bar.setValue(int(progress.fraction() * 1000))
        current = min(progress.finished + 1, progress.total)
        eta = progress.eta_seconds()
        if eta is None:
            left = ""
        elif eta < 1.5:  # its steps are done: the edit's answers are being asked and measured
            left = " · finishing"
        else:
            left = f" · about {format_duration(eta)} left"
        self.show_message(f"edit {current} of {progress.total}{left}")

    def end(self, message: str, tip: str = "") -> None:
        """The run is over (finished or crashed): the bar goes, the message stays."""
        self._timer.stop()
        if self.progress is not None and self.progress.seconds_besides_steps is not None:
            self._besides_steps = self.progress.seconds_besides_steps
        self.progress = None
        self.training_edit = None
        self.bar.hide()
        self.plots.router.clear_live()
        self.plots.shards.set_training(False)
        self.table_model.set_highlighted(None)
        self.show_message(message, tip)
