"""The main window of WISE Workbench: the edit table in the middle, model and settings on the left,
live plots on the right, the routing probe below.

Threads: widgets, the table model and short store reads live on the GUI thread. Everything that
touches the model (load, open a workspace, apply, undo, probe, import/export of a side memory) runs as
one BackgroundCall at a time, `self.job`; while it runs, the actions that need the editor are disabled,
so the editor is never used by two threads at once.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence, QUndoStack
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from wise_gui import __version__
from wise_gui.core.errors import WiseGuiError
from wise_gui.core.memory_file import save_memory_file
from wise_gui.core.models import DEFAULT_MODEL, LoadedModel, ProgressCallback, load_model
from wise_gui.core.wise.editor import ShardStatus, WiseEditor
from wise_gui.core.wise.settings import WiseSettings, default_layer
from wise_gui.resources_path import SAMPLE_EDITS, resource_path
from wise_gui.store import (
    EditDetail,
    EditStatus,
    FingerprintMismatch,
    Store,
    StoreError,
    default_db_path,
    import_file,
    next_free_path,
    open_store,
)
from wise_gui.store.runner import (
    EditApplied,
    EditCancelledEvent,
    EditFailed,
    EditStarted,
    RunFinished,
    apply_queued,
    open_for_model,
    undo_last,
)
from wise_gui.ui import engine_jobs
from wise_gui.ui.app import app_icon
from wise_gui.ui.answers_panel import AnswersPanel
from wise_gui.ui.edit_commands import AddEdit, ChangeEdit, DeleteEdits, DuplicateEdit
from wise_gui.ui.edit_detail import EditDetailPanel
from wise_gui.ui.edit_table import EditTableModel, EditTableView, FilterBar
from wise_gui.ui.engine_jobs import ProbeResult, StepBatch, WorkspaceView
from wise_gui.ui.model_panel import ModelPanel
from wise_gui.ui.plot_data import applied_edit_points
from wise_gui.ui.plots import PlotPanel
from wise_gui.ui.probe_panel import ProbePanel
from wise_gui.ui.run_progress import RunProgress
from wise_gui.ui.style import format_duration, format_fraction, format_parameter_count, format_score, shorten
from wise_gui.ui.tasks import BackgroundCall, Failure, Success

ModelLoader = Callable[[str, str, str, ProgressCallback], LoadedModel]
APPLY_JOB = "applying edits"
MAX_RECENT = 8
_QUEUEABLE = (EditStatus.DRAFT, EditStatus.QUEUED, EditStatus.FAILED, EditStatus.ROLLED_BACK)
DATASET_FILTER = "Edit datasets (*.json *.csv);;JSON (*.json);;CSV (*.csv);;All files (*)"
MEMORY_FILTER = "WISE side memory (*.safetensors);;All files (*)"
WORKSPACE_FILTER = "WISE workspaces (*.sqlite);;All files (*)"
ABOUT_TEXT = f"""<h3>WISE Workbench {__version__}</h3>
<p>Lifelong knowledge editing of language models with WISE (Wang et al., NeurIPS 2024).</p>
<p><b>How it works.</b> Each edit trains a <i>side memory</i>: a copy of one feed-forward weight of the model.
The original weight never changes. For every question a <i>router</i> measures how strongly the side memory
reacts to it (the activation score); above the threshold the side memory answers, below it the original
model does. That is why an edit changes the answer to its own prompt and paraphrases, and leaves unrelated
questions alone.</p>
<p>Edits are grouped in <i>knowledge shards</i>, each trained in its own random subspace; full shards are
merged (TIES) into one memory.</p>"""
WELCOME_TEXT = ("Teach the model new facts: press Ctrl+N and type a question, Tab, and its new answer, or import "
                "a dataset with File › Import edits. Then click <b>Apply all queued</b> and watch the loss, the "
                "router and the knowledge shards on the right while WISE writes each fact into its side memory.")
SAMPLE_BUTTON_TEXT = "Load 10 sample ZsRE edits"


def default_model_loader(source: str, device: str, dtype: str, progress: ProgressCallback) -> LoadedModel:
    return load_model(source, device=device, dtype=None if dtype == "auto" else dtype, progress=progress)


def _label(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setContentsMargins(8, 0, 8, 0)
    return label


def _first_size(screen) -> tuple[int, int]:
    """1680 x 1020, or less on a smaller screen so the whole window shows on first start; never below
    1400 x 860, where the toolbar and the three panels still fit."""
    if screen is None:
        return 1680, 1020
    available = screen.availableGeometry()
    width = min(1680, max(1400, int(available.width() * 0.96)))
    height = min(1020, max(860, int(available.height() * 0.92)))
    return width, height


class MainWindow(QMainWindow):
    def __init__(self, model_loader: ModelLoader = default_model_loader, settings: WiseSettings | None = None,
                 db_path: str | Path | None = None, app_settings: QSettings | None = None):
        super().__init__()
        self.model_loader = model_loader
        # Settings for every workspace this window opens (tests, benchmarks); None: each workspace's own,
        # and the model's preset for a new one.
        self.settings_override = settings
        self.db_path = Path(db_path).expanduser() if db_path else default_db_path()
        self.app_settings = app_settings or QSettings()
        self.loaded: LoadedModel | None = None
        self.editor: WiseEditor | None = None
        self.store: Store | None = None
        self.job: BackgroundCall | None = None
        self.job_kind = ""
        self.run_progress: RunProgress | None = None
        self.training_edit: int | None = None
        self.message_box: QMessageBox | None = None  # the last dialog shown (tests read it)
        self._stop_run = threading.Event()  # set by Cancel; the apply loop checks it between steps
        self._run_failures: list[tuple[int, str]] = []
        self._training_prompt = ""
        self._next_order = 1  # apply order the edit in training will get
        self.undo_stack = QUndoStack(self)
        self.setWindowTitle("WISE Workbench")
        self.setWindowIcon(app_icon())
        self.resize(*_first_size(self.screen()))
        self.setDockNestingEnabled(True)
        self._build_panels()
        self._build_actions()
        self._build_menus_and_toolbar()
        self._build_status_bar()
        self._connect()
        self._restore_window_state()
        self._eta_timer = QTimer(self, interval=200)
        self._eta_timer.timeout.connect(self._show_run_progress)
        self._show_edits_before_the_model()
        self._update_actions()

    # ------------------------------------------------------------------------------------------
    # Layout

    def _build_panels(self) -> None:
        self.table_model = EditTableModel()
        self.table = EditTableView(self.table_model)
        self.table.setContextMenuPolicy(Qt.CustomContextMenu)
        self.filter_bar = FilterBar()
        self.detail_panel = EditDetailPanel()
        self.answers_panel = AnswersPanel()
        self.plots = PlotPanel()
        self.probe_panel = ProbePanel()
        self.model_panel = ModelPanel()

        table_area = QWidget()
        table_layout = QVBoxLayout(table_area)
        table_layout.setContentsMargins(6, 6, 6, 0)
        table_layout.addWidget(self.filter_bar)
        table_layout.addWidget(self._build_welcome())
        table_layout.addWidget(self.table, 1)
        self.lower_tabs = QTabWidget()
        self.lower_tabs.addTab(self.answers_panel, "Before / after answers")
        self.lower_tabs.addTab(self.detail_panel, "Edit details (paraphrases, locality)")
        self.central_splitter = central = QSplitter(Qt.Vertical)
        central.addWidget(table_area)
        central.addWidget(self.lower_tabs)
        central.setStretchFactor(0, 3)
        central.setStretchFactor(1, 2)
        central.setChildrenCollapsible(False)
        self.setCentralWidget(central)

        scroll = QScrollArea()
        scroll.setWidget(self.model_panel)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(self.model_panel.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width() + 4)
        # The side docks run the full height; the probe sits under the table only.
        self.setCorner(Qt.BottomLeftCorner, Qt.LeftDockWidgetArea)
        self.setCorner(Qt.BottomRightCorner, Qt.RightDockWidgetArea)
        self.model_dock = self._dock("Model and settings", "model", scroll, Qt.LeftDockWidgetArea)
        self.plots_dock = self._dock("Live plots", "plots", self.plots, Qt.RightDockWidgetArea)
        self.plots.setMinimumWidth(440)
        self.probe_dock = self._dock("Routing probe", "probe", self.probe_panel, Qt.BottomDockWidgetArea)

    def _build_welcome(self) -> QFrame:
        """What a new user sees above the empty table: what to do, and a sample to start from."""
        self.welcome = welcome = QFrame()
        welcome.setObjectName("welcome")
        welcome.setStyleSheet("QFrame#welcome { border: 1px solid palette(mid); border-radius: 6px; }")
        layout = QVBoxLayout(welcome)
        layout.setContentsMargins(14, 10, 14, 12)
        title = QLabel("<b>Welcome to WISE Workbench</b>")
        self.welcome_text = text = QLabel(WELCOME_TEXT)
        text.setWordWrap(True)
        # A wrapped label does not claim its height in a squeezed splitter pane; reserve three lines.
        text.setMinimumHeight(text.fontMetrics().lineSpacing() * 3 + 4)
        self.sample_button = QPushButton(SAMPLE_BUTTON_TEXT)
        self.sample_button.setToolTip("Add ten edits of the ZsRE benchmark to this workspace's queue "
                                      "(from resources/sample_zsre_edits.json)")
        self.sample_button.clicked.connect(self.load_sample_edits)
        buttons = QHBoxLayout()
        buttons.addWidget(self.sample_button)
        buttons.addStretch(1)
        layout.addWidget(title)
        layout.addWidget(text)
        layout.addLayout(buttons)
        welcome.hide()  # shown by _update_count once a workspace without edits is open
        return welcome

    def _dock(self, title: str, name: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"{name}_dock")
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _action(self, text: str, slot, shortcut=None, tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
            action.setShortcutContext(Qt.WindowShortcut)
        shown_tip = tip or text.replace("…", "")
        action.setToolTip(f"{shown_tip} ({action.shortcut().toString(QKeySequence.NativeText)})"
                          if shortcut is not None else shown_tip)
        action.setStatusTip(shown_tip)
        action.triggered.connect(slot)
        return action

    def _build_actions(self) -> None:
        a = self._action
        self.new_workspace_action = a("&New workspace…", self.new_workspace, "Ctrl+Shift+N", "Start an empty workspace for the loaded model")
        self.open_workspace_action = a("&Open workspace…", self.choose_workspace, QKeySequence.Open, "Open a workspace database")
        self.import_edits_action = a("&Import edits…", self.import_edits, "Ctrl+I", "Import a dataset file (ZsRE, CounterFact, CSV, …) as queued edits")
        self.export_memory_action = a("&Export side memory…", self.export_side_memory, "Ctrl+E", "Write the side memory to a standalone .safetensors file")
        self.import_memory_action = a("Import side &memory…", self.import_side_memory, None, "Load a side-memory file into this workspace")
        self.quit_action = a("&Quit", self.close, QKeySequence.Quit)
        self.undo_action = self.undo_stack.createUndoAction(self, "&Undo")
        self.undo_action.setShortcut(QKeySequence.Undo)
        self.redo_action = self.undo_stack.createRedoAction(self, "&Redo")
        self.redo_action.setShortcut(QKeySequence.Redo)
        self.new_edit_action = a("&New edit", self.table.start_new_edit, QKeySequence.New, "Add an edit: type its prompt, Tab, its target")
        self.duplicate_action = a("&Duplicate", self.duplicate_selected, "Ctrl+D", "Duplicate the selected edit")
        self.delete_action = a("De&lete", self.delete_selected, QKeySequence.Delete, "Delete the selected edits (undoable)")
        self.queue_action = a("&Queue selected", self.queue_selected, "Ctrl+Shift+Q", "Put the selected edits in the queue")
        self.unqueue_action = a("Back to &draft", self.unqueue_selected, None, "Take the selected edits out of the queue")
        self.find_action = a("&Filter…", lambda: self.filter_bar.text.setFocus(), QKeySequence.Find, "Filter the edits by text")
        self.apply_selected_action = a("&Apply selected", self.apply_selected, "Ctrl+Return", "Apply the selected edits, one after another")
        self.apply_queued_action = a("Apply all &queued", self.apply_all_queued, "Ctrl+Shift+Return", "Apply every queued edit in list order")
        self.cancel_action = a("&Cancel", self.cancel_run, "Ctrl+.", "Stop: the edit training now is rolled back, applied ones stay")
        self.undo_last_action = a("&Undo last applied edit", self.undo_last_edit, "Ctrl+Alt+Z", "Roll the side memory back by one edit")
        self.reset_layout_action = a("&Reset layout", self.reset_layout)
        self.about_action = a("&About WISE Workbench", self.show_about)

    def _build_menus_and_toolbar(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addActions([self.new_workspace_action, self.open_workspace_action])
        self.recent_menu = file_menu.addMenu("Open &recent")
        file_menu.addSeparator()
        file_menu.addAction(self.import_edits_action)
        file_menu.addSeparator()
        file_menu.addActions([self.export_memory_action, self.import_memory_action])
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        edit_menu = bar.addMenu("&Edit")
        edit_menu.addActions([self.undo_action, self.redo_action])
        edit_menu.addSeparator()
        edit_menu.addActions([self.new_edit_action, self.duplicate_action, self.delete_action])
        edit_menu.addSeparator()
        edit_menu.addActions([self.queue_action, self.unqueue_action, self.find_action])
        edit_menu.addSeparator()
        edit_menu.addActions([self.apply_selected_action, self.apply_queued_action, self.cancel_action,
                              self.undo_last_action])
        view_menu = bar.addMenu("&View")
        for dock in (self.model_dock, self.plots_dock, self.probe_dock):
            view_menu.addAction(dock.toggleViewAction())
        view_menu.addSeparator()
        view_menu.addAction(self.reset_layout_action)
        help_menu = bar.addMenu("&Help")
        help_menu.addAction(self.about_action)
        self._edit_context_menu = QMenu(self)
        self._edit_context_menu.addActions([self.new_edit_action, self.duplicate_action, self.delete_action])
        self._edit_context_menu.addSeparator()
        self._edit_context_menu.addActions([self.queue_action, self.unqueue_action, self.apply_selected_action])

        self.toolbar = toolbar = QToolBar("Main toolbar")
        toolbar.setObjectName("main_toolbar")
        toolbar.setMovable(False)
        toolbar.setToolButtonStyle(Qt.ToolButtonTextOnly)
        toolbar.addActions([self.new_edit_action, self.duplicate_action, self.delete_action])
        toolbar.addSeparator()
        toolbar.addActions([self.apply_selected_action, self.apply_queued_action, self.cancel_action])
        toolbar.addSeparator()
        toolbar.addAction(self.undo_last_action)
        toolbar.addSeparator()
        self.run_bar = QProgressBar()
        self.run_bar.setRange(0, 1000)
        self.run_bar.setFixedWidth(220)
        self.run_bar.setFormat("")
        policy = self.run_bar.sizePolicy()
        policy.setRetainSizeWhenHidden(True)  # showing and hiding it never re-lays out the window
        self.run_bar.setSizePolicy(policy)
        self.eta_label = _label()
        self.eta_label.setFixedWidth(420)  # changing text never re-lays out the toolbar
        run_box = QWidget()
        run_layout = QHBoxLayout(run_box)
        run_layout.setContentsMargins(8, 0, 0, 0)
        run_layout.addWidget(self.run_bar)
        run_layout.addWidget(self.eta_label)
        self.run_bar.hide()
        toolbar.addWidget(run_box)
        self.addToolBar(toolbar)

    def _build_status_bar(self) -> None:
        self.status_model = _label("No model")
        self.status_applied = _label()
        self.status_threshold = _label()
        self.status_workspace = _label()
        bar = self.statusBar()
        bar.addPermanentWidget(self.status_model)
        bar.addPermanentWidget(self.status_applied)
        bar.addPermanentWidget(self.status_threshold)
        bar.addPermanentWidget(self.status_workspace)

    def _connect(self) -> None:
        self.table_model.error.connect(self.show_problem)
        self.table_model.new_edit_requested.connect(self._add_typed_edit)
        self.table_model.change_requested.connect(self._change_edit)
        self.table_model.modelReset.connect(self._update_count)
        self.table_model.rowsInserted.connect(self._update_count)
        self.table_model.rowsRemoved.connect(self._update_count)
        self.table.selectionModel().currentRowChanged.connect(lambda *_: self._show_selected_edit())
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._update_actions())
        self.table.customContextMenuRequested.connect(
            lambda pos: self._edit_context_menu.popup(self.table.viewport().mapToGlobal(pos)))
        self.filter_bar.changed.connect(self.table_model.set_filter)
        self.detail_panel.save_requested.connect(self._change_edit)
        self.probe_panel.probe_requested.connect(self.probe)
        self.model_panel.load_requested.connect(lambda source, device, dtype: self.load_model(source, device, dtype))
        self.model_panel.settings_requested.connect(self.change_settings)

    # ------------------------------------------------------------------------------------------
    # Window state, recent workspaces

    def _restore_window_state(self) -> None:
        self.default_state = self.saveState()
        geometry = self.app_settings.value("window/geometry")
        state = self.app_settings.value("window/state")
        if geometry is not None:
            self.restoreGeometry(geometry)
        if state is None or not self.restoreState(state):
            QTimer.singleShot(0, self._default_dock_sizes)  # once the window has its size
        header = self.app_settings.value("window/table_header")
        if header is not None:
            self.table.horizontalHeader().restoreState(header)
        self._show_recent()

    def _default_dock_sizes(self) -> None:
        self.resizeDocks([self.model_dock, self.plots_dock], [340, 500], Qt.Horizontal)
        self.resizeDocks([self.probe_dock], [340], Qt.Vertical)
        self.central_splitter.setSizes([300, 220])

    def reset_layout(self) -> None:
        self.restoreState(self.default_state)
        for dock in (self.model_dock, self.plots_dock, self.probe_dock):
            dock.show()
        self._default_dock_sizes()

    def recent_workspaces(self) -> list[str]:
        value = self.app_settings.value("recent_workspaces", [])
        return [value] if isinstance(value, str) else list(value or [])

    def _remember_workspace(self, path: Path) -> None:
        paths = [str(path)] + [p for p in self.recent_workspaces() if p != str(path)]
        self.app_settings.setValue("recent_workspaces", paths[:MAX_RECENT])
        self._show_recent()

    def _show_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.recent_workspaces():
            action = self.recent_menu.addAction(path)
            action.triggered.connect(lambda _=False, p=path: self.open_workspace(p))
        self.recent_menu.setEnabled(bool(self.recent_workspaces()))

    def closeEvent(self, event) -> None:
        if self.job is not None:
            self._stop_run.set()  # a run stops after the current step; a model load has to finish
            job, self.job = self.job, None
            job.wait()
        self.app_settings.setValue("window/geometry", self.saveGeometry())
        self.app_settings.setValue("window/state", self.saveState())
        self.app_settings.setValue("window/table_header", self.table.horizontalHeader().saveState())
        self.app_settings.sync()
        if self.editor is not None:
            self.editor.detach()
        if self.store is not None:
            self.store.close()
        super().closeEvent(event)

    # ------------------------------------------------------------------------------------------
    # Background jobs: one at a time

    @property
    def busy(self) -> bool:
        return self.job is not None

    @property
    def applying(self) -> bool:
        return self.job_kind == APPLY_JOB

    def _start_job(self, kind: str, function, on_success, on_event=None, on_failure=None) -> bool:
        """Runs `function(report)` in the background unless another job runs; the handlers run on the GUI
        thread after it ended (so they may start the next job)."""
        if self.job is not None:
            self.statusBar().showMessage(f"Busy {self.job_kind}; try again when it is done.", 4000)
            return False
        job = BackgroundCall(function, parent=self)
        if on_event is not None:
            job.reported.connect(on_event)
        job.finished.connect(lambda result: self._job_finished(job, result, on_success, on_failure))
        self.job, self.job_kind = job, kind
        self._update_actions()
        job.start()
        return True

    def _job_finished(self, job: BackgroundCall, result, on_success, on_failure) -> None:
        if self.job is not job:  # the window was closed meanwhile
            return
        self.job, self.job_kind = None, ""
        job.deleteLater()
        if isinstance(result, Success):
            on_success(result.value)
        else:
            (on_failure or self._show_failure)(result)
        self._update_actions()

    def _show_failure(self, failure: Failure, title: str = "WISE Workbench") -> None:
        self.show_problem(failure.message, failure.details, title=title)

    def _update_actions(self) -> None:
        ready = self.editor is not None and not self.busy
        can_open = self.loaded is not None and not self.busy
        has_store = self.store is not None
        ids = self.table.selected_edit_ids()
        for action in (self.apply_queued_action, self.undo_last_action, self.export_memory_action,
                       self.import_memory_action):
            action.setEnabled(ready)
        self.apply_selected_action.setEnabled(ready and bool(ids))
        self.cancel_action.setEnabled(self.applying)
        self.new_workspace_action.setEnabled(can_open)
        self.open_workspace_action.setEnabled(can_open)
        self.recent_menu.setEnabled(can_open and bool(self.recent_workspaces()))
        self.import_edits_action.setEnabled(has_store and not self.busy)
        self.sample_button.setEnabled(has_store)
        for action in (self.new_edit_action, self.duplicate_action, self.delete_action, self.queue_action,
                       self.unqueue_action):
            action.setEnabled(has_store)
        self.duplicate_action.setEnabled(has_store and len(ids) == 1)
        self.model_panel.set_busy(self.busy)
        reason = "" if ready else (f"Busy {self.job_kind}." if self.busy else "Load a model first.")
        self.probe_panel.set_available(ready, reason)

    # ------------------------------------------------------------------------------------------
    # Model and workspace

    def load_model(self, source: str = DEFAULT_MODEL, device: str = "cpu", dtype: str = "auto") -> bool:
        """Loads a model off the GUI thread, then opens the current workspace for it. Until then (and if
        the load fails) the current model and editor stay as they are."""
        loader = self.model_loader

        def job(report):
            return loader(source, device, dtype, lambda message, fraction: report((message, fraction)))

        self.model_panel.show_source(source)
        self.model_panel.show_progress(f"Loading {source}…", 0.0)
        return self._start_job("loading the model", job, self._model_loaded,
                               on_event=lambda progress: self.model_panel.show_progress(*progress),
                               on_failure=self._model_failed)

    def _model_loaded(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.model_panel.show_progress("", None)
        self.model_panel.show_model(loaded)
        self.status_model.setText(f"{loaded.name} · {loaded.device} · {str(loaded.dtype).replace('torch.', '')} · "
                                  f"{format_parameter_count(loaded.n_parameters)}")
        self.open_workspace(self.db_path)

    def _model_failed(self, failure: Failure) -> None:
        still = f" Still using {self.loaded.name}." if self.loaded is not None else ""
        self.model_panel.show_progress(f"The model could not be loaded.{still}", None)
        self._show_failure(failure, title="Model not loaded")

    def open_workspace(self, path: str | Path, new: bool = False, settings: WiseSettings | None = None) -> bool:
        """Opens (or creates) the workspace at `path` for the loaded model, restored to its last applied edit."""
        if self.loaded is None:
            self.show_problem("Load a model first: a workspace's edits belong to one model.")
            return False
        path = Path(path).expanduser()
        loaded, old_editor = self.loaded, self.editor
        settings = settings or self.settings_override

        def job(report):
            if old_editor is not None:
                old_editor.detach()
            store, editor = open_for_model(path, loaded, settings, new_workspace=new)
            return store, editor, engine_jobs.workspace_view(store, editor)

        started = self._start_job("opening the workspace", job, self._workspace_opened,
                                  on_failure=lambda failure: self._workspace_failed(path, failure))
        if started:
            self.editor = None
            self.statusBar().showMessage(f"Opening {path}…")
        return started

    def _workspace_opened(self, result: tuple[Store, WiseEditor, WorkspaceView]) -> None:
        store, editor, view = result
        self.editor = editor
        self.db_path = store.path
        self._set_store(store)
        self._show_workspace_view(view)
        self._remember_workspace(store.path)
        config = self.loaded.model.config
        has_applied = bool(view.history) or view.shards.total_edits > 0
        self.model_panel.show_editor(editor.settings, config.num_hidden_layers,
                                     default_layer(config.model_type, config.num_hidden_layers),
                                     editor.module_name, locked=has_applied)
        self.statusBar().showMessage(f"Workspace {store.path.name} is ready.", 5000)
        self._update_actions()

    def _workspace_failed(self, path: Path, failure: Failure) -> None:
        if isinstance(failure.error, FingerprintMismatch):
            other = next_free_path(path)
            box = QMessageBox(QMessageBox.Question, "Workspace of another model",
                              f"{failure.message}\n\nStart a new workspace for this model at {other}?",
                              QMessageBox.Yes | QMessageBox.No, self)
            box.buttonClicked.connect(
                lambda button: self.open_workspace(other, new=True) if box.standardButton(button) == QMessageBox.Yes else None)
            self._show_box(box)
            return
        self._show_failure(failure, title="Workspace not opened")

    def _show_edits_before_the_model(self) -> None:
        """The workspace's edit list right away, while the model loads (the store needs no model to list)."""
        try:
            self._set_store(open_store(self.db_path))
        except StoreError as exc:
            self.show_problem(f"{exc}\n\nOpen or create another workspace once the model is loaded.",
                              title="Workspace not opened")

    def _set_store(self, store: Store) -> None:
        if self.store is not None and self.store is not store:
            self.store.close()
        self.store = store
        self.undo_stack.clear()
        self.table_model.set_store(store)
        self.status_workspace.setText(f"Workspace: {store.path.name}")
        self.status_workspace.setToolTip(str(store.path))
        self.setWindowTitle(f"WISE Workbench — {store.path.name}")
        self.probe_panel.show_history(store.recent_probes(30))
        self._show_selected_edit()

    def _show_workspace_view(self, view: WorkspaceView) -> None:
        self.plots.router.set_history(view.history, shared_threshold=not view.retrieve)
        self.plots.shards.set_status(view.shards)
        self._show_applied_count(view.shards.total_edits)
        self._show_threshold(view.threshold)

    def _show_applied_count(self, count: int) -> None:
        self.status_applied.setText(f"{count} applied edit{'s' * (count != 1)}")

    def _show_threshold(self, threshold: float | None) -> None:
        if threshold is None:
            self.status_threshold.setText("no side memory yet")
            return
        retrieve = self.editor is not None and self.editor.settings.retrieve
        self.status_threshold.setText(f"{'last memory’s ' if retrieve else ''}threshold {format_score(threshold)}")
        self.status_threshold.setToolTip("Each memory has its own threshold (WISE-Retrieve)." if retrieve
                                         else "A prompt scoring above it is answered by the side memory.")

    def new_workspace(self) -> None:
        suggestion = next_free_path(self.db_path)
        path, _ = QFileDialog.getSaveFileName(self, "New workspace", str(suggestion), WORKSPACE_FILTER)
        if path:
            self.open_workspace(path if path.endswith(".sqlite") else path + ".sqlite", new=True)

    def choose_workspace(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open workspace", str(self.db_path.parent), WORKSPACE_FILTER)
        if path:
            self.open_workspace(path)

    def change_settings(self, settings: WiseSettings) -> None:
        """New settings (or a new layer, before the first edit) re-attach the editor to the workspace."""
        self.open_workspace(self.db_path, settings=settings)

    # ------------------------------------------------------------------------------------------
    # The edit list

    def _update_count(self) -> None:
        if self.store is None:
            self.welcome.hide()
            return
        total = self.store.count_edits()
        self.filter_bar.show_count(self.table_model.rowCount(), total)
        # The welcome state: a workspace without edits, and no new row being typed.
        self.welcome.setVisible(total == 0 and self.table_model.rowCount() == 0)

    def _add_typed_edit(self, request) -> None:
        if self._push(AddEdit(self.table, request)):
            # The new row became this edit without a change of row: refresh what depends on the selection.
            self._show_selected_edit()
            self._update_actions()

    def _change_edit(self, edit_id: int, old, new) -> None:
        if self._push(ChangeEdit(self.table, edit_id, old, new)):
            self._show_selected_edit()

    def duplicate_selected(self) -> None:
        ids = self.table.selected_edit_ids()
        if len(ids) == 1:
            self._push(DuplicateEdit(self.table, ids[0]))

    def delete_selected(self) -> None:
        if self.table.model().is_new_row(self.table.currentIndex().row()):
            self.table_model.discard_new_row()
            return
        ids = self.table.selected_edit_ids()
        if ids and self._push(DeleteEdits(self.table, ids)):
            self.statusBar().showMessage(f"Deleted {len(ids)} edit{'s' * (len(ids) != 1)} (Ctrl+Z brings them back).", 5000)

    def _push(self, command) -> bool:
        try:
            self.undo_stack.push(command.perform())
        except StoreError as exc:
            self.show_problem(str(exc))
            return False
        return True

    def queue_selected(self) -> None:
        ids = self.table.selected_edit_ids()
        if ids:
            self.store.mark_queued(ids)
            self._refresh_rows(ids)

    def unqueue_selected(self) -> None:
        ids = self.table.selected_edit_ids()
        if ids:
            self.store.mark_draft(ids)
            self._refresh_rows(ids)

    def _refresh_rows(self, ids: list[int]) -> None:
        for edit_id in ids:
            self.table_model.refresh_edit(edit_id)
        self._show_selected_edit()

    def import_edits(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import edits", "", DATASET_FILTER)
        if path:
            self.import_edits_from(path)

    def import_edits_from(self, path: str | Path) -> bool:
        store = self.store
        return self._start_job("importing edits", lambda report: import_file(store, path), self._edits_imported)

    def load_sample_edits(self) -> None:
        """The welcome button: ten ZsRE edits into the queue. Ten rows are one short write, done here on the GUI
        thread (as typed edits are), so it works while the model is still loading."""
        if self.store is None:
            return
        try:
            report = import_file(self.store, resource_path(SAMPLE_EDITS))
        except (WiseGuiError, OSError) as exc:
            self.show_problem(f"The sample edits could not be imported: {exc}")
            return
        self.table_model.reload()
        self.table.select_row(0)
        ready = "click Apply all queued to apply them" if self.editor is not None else \
            "once the model has loaded, click Apply all queued to apply them"
        self.statusBar().showMessage(f"Imported {report.imported} sample ZsRE edits into the queue: {ready}.", 15000)

    def _edits_imported(self, report) -> None:
        self.table_model.reload()
        text = f"Imported {report.imported:,} edits ({report.format}) into the queue."
        if report.problems:
            shown = "\n".join(str(p) for p in report.problems[:10])
            more = f"\n… and {len(report.problems) - 10} more" if len(report.problems) > 10 else ""
            self.show_problem(f"{text}\n{len(report.problems)} records were skipped:", shown + more,
                              title="Import finished with problems", icon=QMessageBox.Information)
        self.statusBar().showMessage(text, 8000)

    def _show_selected_edit(self, detail: EditDetail | None = None) -> None:
        """Shows the current row's edit in the panels; `detail`: that edit, already read."""
        row = self.table.currentIndex().row()
        edit_id = self.table_model.edit_id(row) if row >= 0 and not self.table_model.is_new_row(row) else None
        if detail is None and edit_id is not None and self.store is not None:
            detail = self.store.get_edit(edit_id)
        self.detail_panel.show_edit(detail)
        self.plots.router.select_edit(edit_id)
        if detail is None:
            self.answers_panel.clear("Select an edit to see its prompts answered before and after editing.")
            return
        outcome = detail.outcome
        if outcome is None or not outcome.fields.answers:
            self.answers_panel.clear(f"“{detail.request.prompt}” has not been applied yet: its answers before and "
                                     "after editing appear here once it is.")
        else:
            fields = outcome.fields
            undone = "" if detail.status == EditStatus.APPLIED else " (since rolled back)"
            self.answers_panel.show_answers(
                f"“{detail.request.prompt}” → “{detail.request.target}”, applied as edit {outcome.apply_order}{undone}",
                fields.answers, _metrics_line(fields.rel, fields.gen, fields.loc, fields.gen_success, fields.seconds))
        # The edit that trained last keeps its live cross-entropy and margin curves; others show their stored total.
        if self.training_edit is None and outcome is not None and self.plots.loss.edit_id != edit_id:
            self.plots.loss.show_total(edit_id, f"edit {outcome.apply_order}", outcome.fields.loss_curve)

    # ------------------------------------------------------------------------------------------
    # Applying

    def apply_selected(self) -> None:
        rows = self.table.selected_rows()
        ids = [self.table_model.row_data(r).id for r in rows
               if not self.table_model.is_new_row(r) and self.table_model.row_data(r).status in _QUEUEABLE]
        if not ids:
            self.statusBar().showMessage("The selected edits are already applied.", 4000)
            return
        self.store.mark_queued(ids)
        for edit_id in ids:
            self.table_model.refresh_edit(edit_id)
        self._start_run(ids, len(ids))

    def apply_all_queued(self) -> None:
        total = self.store.count_edits(status=EditStatus.QUEUED)
        if total == 0:
            self.statusBar().showMessage("No edit is queued: select edits and use Apply selected, or queue them first.", 5000)
            return
        self._start_run(None, total)

    def _start_run(self, edit_ids: list[int] | None, total: int) -> None:
        store, editor = self.store, self.editor
        stop = threading.Event()

        def job(report):
            forward = engine_jobs.RunEventForwarder(report, store, editor)
            return apply_queued(store, editor, edit_ids, on_event=forward, should_stop=stop.is_set)

        if not self._start_job(APPLY_JOB, job, self._run_finished, on_event=self._on_run_event,
                               on_failure=self._run_crashed):
            return
        self._stop_run = stop
        self._run_failures = []
        self.run_progress = RunProgress(total, editor.settings.n_iter)
        self.run_bar.setValue(0)
        self.run_bar.show()
        self.eta_label.setText(f"starting {total} edit{'s' * (total != 1)}…")
        self._eta_timer.start()

    def _on_run_event(self, event) -> None:
        progress = self.run_progress
        if isinstance(event, StepBatch):
            for step in event.steps:
                self.plots.loss.add_step(step.ce_loss, step.margin_loss, step.total_loss)
            last = event.steps[-1]
            progress.step(last.iteration)
            if last.edit_scores:
                self.plots.router.set_live(self._next_order, self._training_prompt,
                                           sum(last.edit_scores) / len(last.edit_scores))
            return  # the progress bar follows on its timer
        if isinstance(event, EditStarted):
            progress.total = max(progress.total, event.total)
            progress.edit_started()
            self.training_edit = event.edit_id
            self._training_prompt = event.prompt
            self._next_order = max(self.plots.router.edits, default=0) + 1
            self.table_model.set_highlighted(event.edit_id)
            self.plots.loss.start_edit(event.edit_id, f"“{shorten(event.prompt, 36)}” ({event.position}/{progress.total})",
                                       progress.iterations_per_edit)
            self.plots.shards.set_training(True)
        elif isinstance(event, EditApplied):
            progress.edit_finished(event.seconds)
            outcome = event.outcome
            self.plots.router.add_edit(applied_edit_points(
                event.apply_order, event.edit_id, self._training_prompt, outcome.edit_score, outcome.threshold,
                event.answers, outcome.irrelevant_score))
            self.plots.loss.finish_edit()
            self._edit_finished()
            self._show_threshold(outcome.threshold)
        elif isinstance(event, EditFailed):
            progress.edit_finished()
            self._run_failures.append((event.edit_id, event.message))
            self._edit_finished()
        elif isinstance(event, EditCancelledEvent):
            self._edit_finished()
            self.plots.loss.finish_edit()
        elif isinstance(event, EditDetail):  # its new status, as stored
            self.table_model.refresh_edit(event.id, event)
            if self.table_model.edit_id(self.table.currentIndex().row()) == event.id:
                self._show_selected_edit(event)
        elif isinstance(event, ShardStatus):
            self.plots.shards.set_status(event)
            self._show_applied_count(event.total_edits)
        self._show_run_progress()

    def _edit_finished(self) -> None:
        self.training_edit = None
        self.plots.router.clear_live()
        self.plots.shards.set_training(False)
        self.table_model.set_highlighted(None)

    def _show_run_progress(self) -> None:
        progress = self.run_progress
        if progress is None:
            return
        self.run_bar.setValue(int(progress.fraction() * 1000))
        current = min(progress.finished + 1, progress.total)
        eta = progress.eta_seconds()
        self.eta_label.setText(f"edit {current} of {progress.total}"
                               + (f" · about {format_duration(eta)} left" if eta is not None else ""))

    def _end_run(self) -> None:
        self._eta_timer.stop()
        self.run_progress = None
        self.training_edit = None
        self.run_bar.hide()
        self.plots.router.clear_live()
        self.plots.shards.set_training(False)
        self.table_model.set_highlighted(None)

    def _run_finished(self, finished: RunFinished) -> None:
        self._end_run()
        parts = [f"{len(finished.applied)} applied"]
        if finished.failed:
            parts.append(f"{len(finished.failed)} failed")
        if finished.cancelled:
            parts.append("cancelled: the edit in training was rolled back, the applied ones stay")
        summary = "Run finished: " + ", ".join(parts) + "."
        self.eta_label.setText(summary)
        self.statusBar().showMessage(summary, 10000)
        if self._run_failures:
            lines = "\n".join(f"Edit {self._position_of(i)}: {message}" for i, message in self._run_failures)
            count = len(self._run_failures)
            self.show_problem(f"{count} edit{'s' * (count != 1)} could not be applied and {'are' if count != 1 else 'is'} "
                              f"marked failed. Fix the edit and apply it again.\n\n{lines}",
                              title="Some edits failed")

    def _position_of(self, edit_id: int) -> int | str:
        try:
            return self.store.get_edit(edit_id).position
        except StoreError:  # deleted meanwhile: show its id instead
            return f"#{edit_id}"

    def _run_crashed(self, failure: Failure) -> None:
        self._end_run()
        self.table_model.refresh_visible()
        self.eta_label.setText("Run stopped by an error.")
        self.show_problem(f"The run stopped: {failure.message}", failure.details, title="Apply failed")

    def cancel_run(self) -> None:
        if self.applying:
            self._stop_run.set()
            self.eta_label.setText("cancelling: rolling back the edit in training…")

    def undo_last_edit(self) -> None:
        store, editor = self.store, self.editor

        def job(report):
            edit_id = undo_last(store, editor)
            return edit_id, engine_jobs.workspace_view(store, editor)

        self._start_job("undoing the last edit", job, self._last_edit_undone)

    def _last_edit_undone(self, result) -> None:
        edit_id, view = result
        if edit_id is None:
            self.statusBar().showMessage("No applied edit to undo.", 5000)
            return
        self._show_workspace_view(view)
        self.table_model.refresh_edit(edit_id)
        self._show_selected_edit()
        self.statusBar().showMessage("The last applied edit was rolled back; the side memory is as before it.", 6000)

    # ------------------------------------------------------------------------------------------
    # Probe, side-memory files

    def probe(self, question: str) -> None:
        store, editor = self.store, self.editor
        if editor is None:
            return
        if self._start_job("probing", lambda report: engine_jobs.probe(store, editor, question), self._probe_done):
            self.probe_panel.show_busy(question)

    def _probe_done(self, result: ProbeResult) -> None:
        self.probe_panel.show_result(result)
        self.probe_panel.show_history(self.store.recent_probes(30))

    def export_side_memory(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export side memory", str(self.db_path.with_suffix(".safetensors")),
                                              MEMORY_FILTER)
        if path:
            self.export_side_memory_to(path)

    def export_side_memory_to(self, path: str | Path) -> bool:
        editor = self.editor
        return self._start_job("exporting the side memory", lambda report: save_memory_file(editor, path),
                               lambda _: self.statusBar().showMessage(f"Side memory written to {path}.", 8000))

    def import_side_memory(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import side memory", "", MEMORY_FILTER)
        if path:
            self.import_side_memory_from(path)

    def import_side_memory_from(self, path: str | Path) -> bool:
        store, editor = self.store, self.editor

        def job(report):
            count = engine_jobs.import_side_memory(store, editor, path)
            return count, engine_jobs.workspace_view(store, editor)

        return self._start_job("importing a side memory", job, self._side_memory_imported)

    def _side_memory_imported(self, result) -> None:
        count, view = result
        self.table_model.reload()
        self._show_workspace_view(view)
        self.statusBar().showMessage(f"Imported a side memory with {count} edits; they are listed as applied.", 8000)

    # ------------------------------------------------------------------------------------------
    # Dialogs

    def show_problem(self, message: str, details: str = "", title: str = "WISE Workbench",
                     icon=QMessageBox.Warning) -> None:
        box = QMessageBox(icon, title, message, QMessageBox.Ok, self)
        if details:
            box.setDetailedText(details)
        self._show_box(box)

    def _show_box(self, box: QMessageBox) -> None:
        # Window-modal and non-blocking: a worker's report never waits on a dialog.
        box.setAttribute(Qt.WA_DeleteOnClose)
        self.message_box = box
        box.open()

    def show_about(self) -> None:
        box = QMessageBox(QMessageBox.NoIcon, "About WISE Workbench", ABOUT_TEXT, QMessageBox.Ok, self)
        self._show_box(box)


def _metrics_line(rel, gen, loc, gen_success, seconds) -> str:
    pct = format_fraction
    return (f"Rel {pct(rel)} · Gen {pct(gen)} · Loc {pct(loc)} · generated target {pct(gen_success)}"
            f" · took {format_duration(seconds)}.  Rel/Gen: target tokens predicted; Loc: unrelated answers unchanged.")
