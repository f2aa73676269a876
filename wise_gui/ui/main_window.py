"""The main window of WISE Workbench: a shell that wires the workspace service to the panels.

The edit table sits in the middle; model and settings on the left; the live plots on the right; the
before/after answers, the edit's details and the routing probe in tabs below the table. What each part
does lives elsewhere: the workflows in `app.workspace.WorkspaceService`, the run's display in
`RunPresenter`, the enabling rule in `actions`, what is remembered between runs in `window_state`.

Threads: widgets, the table model and short store reads live on the GUI thread. Everything that
touches the model (load, open, apply, undo, probe, import and export) runs as one background job at a
time, `self.job`; while it runs the actions that need the editor are disabled, so the editor is never
used by two threads at once.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QScrollArea,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from wise_gui.app.events import RunFinished
from wise_gui.app.transfer import import_file
from wise_gui.app.views import WorkspaceView
from wise_gui.app.workspace import ExportReport, ProbeResult, WorkspaceService
from wise_gui.core.errors import WiseGuiError
from wise_gui.core.models import DEFAULT_MODEL, LoadedModel
from wise_gui.core.wise.editor import MemoryStatus
from wise_gui.core.wise.settings import WiseSettings, default_layer
from wise_gui.store import (
    EditDetail,
    EditStatus,
    FingerprintMismatch,
    Store,
    StoreError,
    WorkspaceInUse,
    default_db_path,
    next_free_path,
    open_store,
)
from wise_gui.ui.actions import ActionTable, Need, WindowState
from wise_gui.ui.answers_panel import AnswersPanel
from wise_gui.ui.dialogs import Dialogs
from wise_gui.ui.edit_detail import EditDetailPanel
from wise_gui.ui.edit_list import EditList
from wise_gui.ui.edit_table import EditTableModel, EditTableView, FilterBar
from wise_gui.ui.icons import app_icon
from wise_gui.ui.model_panel import ModelPanel
from wise_gui.ui.plots import PlotPanel
from wise_gui.ui.probe_panel import ProbePanel
from wise_gui.ui.run_presenter import RunPresenter, run_summary
from wise_gui.ui.style import format_bytes, format_parameter_count, format_score, shorten
from wise_gui.ui.tasks import BackgroundCall, Failure, GeneratorWorker, Success
from wise_gui.ui.widgets import StatusLabel, WelcomeNote
from wise_gui.ui.window_state import SavedWindowState, first_size

APPLY_JOB = "applying edits"
PROBE_JOB = "probing"
_QUEUEABLE = (EditStatus.DRAFT, EditStatus.QUEUED, EditStatus.FAILED, EditStatus.ROLLED_BACK)
DATASET_FILTER = "Edit datasets (*.json *.csv);;JSON (*.json);;CSV (*.csv);;All files (*)"
MEMORY_FILTER = "WISE side memory (*.safetensors);;All files (*)"
WORKSPACE_FILTER = "WISE workspaces (*.sqlite);;All files (*)"
RUN_LABEL_WIDTH = 330  # the toolbar's run line: its texts are kept short enough to fit
# Small enough minimum widths for a 1280 x 800 screen; the first size gives every panel more.
MODEL_PANEL_MIN_WIDTH = 280
PLOTS_MIN_WIDTH = 320


def fresh_workspace_path(path: Path) -> Path:
    """Where a new workspace beside `path` can go: `name-2.sqlite`, `name-3.sqlite`, ... counted from the
    base name, so a new workspace next to `name-2.sqlite` is `name-3.sqlite`, not `name-2-2.sqlite`."""
    base = path.with_name(re.sub(r"-\d+$", "", path.stem) + path.suffix)
    return next_free_path(base)


def freeze_long_lived_objects() -> None:
    """The libraries, the model and the editor are millions of objects that live as long as the window: a
    full garbage collection that scans them takes a third of a second and stops every thread, the GUI
    thread too. Frozen (moved out of the collector's generations) they are no longer scanned."""
    gc.freeze()


class MainWindow(QMainWindow):
    def __init__(self, service: WorkspaceService | None = None, db_path: str | Path | None = None,
                 app_settings: QSettings | None = None):
        super().__init__()
        self.service = service or WorkspaceService()
        self.db_path = Path(db_path).expanduser() if db_path else default_db_path()
        self.saved_state = SavedWindowState(app_settings or QSettings())
        self.job: BackgroundCall | GeneratorWorker | None = None
        self.job_kind = ""
        self.applied = 0  # edits the side memory holds
        self.dialogs = Dialogs(self)
        self._preview: Store | None = None  # the edit list shown while the model loads
        self.setWindowTitle("WISE Workbench")
        self.setWindowIcon(app_icon())
        screen = self.screen()
        self.resize(first_size(screen.availableGeometry() if screen is not None else None))
        self.setDockNestingEnabled(True)
        self._build_panels()
        self.edit_list = EditList(self.table, self.filter_bar, self.welcome, self)
        self._build_actions()
        self._build_menus_and_toolbar()
        self._build_status_bar()
        self.run_presenter = RunPresenter(self.table_model, self.plots, self.run_bar, self.run_label, self)
        self._connect()
        self.default_state = self.saveState()
        if not self.saved_state.restore(self, self.table):
            QTimer.singleShot(0, self._default_dock_sizes)  # once the window has its size
        self._show_recent()
        self._show_edits_before_the_model()
        self._update_actions()
        freeze_long_lived_objects()

    # ------------------------------------------------------------------------------------------
    # Layout

    def _build_panels(self) -> None:
        self.table_model = EditTableModel()
        self.table = EditTableView(self.table_model)
        self.table.setContextMenuPolicy(Qt.CustomContextMenu)
        self.filter_bar = FilterBar()
        self.welcome = WelcomeNote()
        self.detail_panel = EditDetailPanel()
        self.answers_panel = AnswersPanel()
        self.plots = PlotPanel()
        self.probe_panel = ProbePanel()
        self.model_panel = ModelPanel()

        table_area = QWidget()
        table_layout = QVBoxLayout(table_area)
        table_layout.setContentsMargins(6, 6, 6, 0)
        table_layout.addWidget(self.filter_bar)
        table_layout.addWidget(self.welcome)
        table_layout.addWidget(self.table, 1)
        self.setCentralWidget(table_area)

        scroll = QScrollArea()
        scroll.setWidget(self.model_panel)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(MODEL_PANEL_MIN_WIDTH)  # narrower than the form: it scrolls sideways then
        # The side docks run the full height; the tabs below sit under the table only.
        self.setCorner(Qt.BottomLeftCorner, Qt.LeftDockWidgetArea)
        self.setCorner(Qt.BottomRightCorner, Qt.RightDockWidgetArea)
        self.model_dock = self._dock("Model and settings", "model", scroll, Qt.LeftDockWidgetArea)
        self.plots_dock = self._dock("Live plots", "plots", self.plots, Qt.RightDockWidgetArea)
        self.plots.setMinimumWidth(PLOTS_MIN_WIDTH)
        # Answers, details and probe share the space below the table as tabs: the table keeps the room.
        self.answers_dock = self._dock("Before / after answers", "answers", self.answers_panel, Qt.BottomDockWidgetArea)
        self.details_dock = self._dock("Edit details", "details", self.detail_panel, Qt.BottomDockWidgetArea)
        self.probe_dock = self._dock("Routing probe", "probe", self.probe_panel, Qt.BottomDockWidgetArea)
        self.tabifyDockWidget(self.answers_dock, self.details_dock)
        self.tabifyDockWidget(self.details_dock, self.probe_dock)
        self.setTabPosition(Qt.BottomDockWidgetArea, QTabWidget.North)
        self.answers_dock.raise_()

    @property
    def docks(self) -> tuple[QDockWidget, ...]:
        return self.model_dock, self.plots_dock, self.answers_dock, self.details_dock, self.probe_dock

    def _dock(self, title: str, name: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"{name}_dock")
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def show_panel(self, widget: QWidget) -> None:
        """Brings the dock holding `widget` to the front (a tab below the table, a side dock)."""
        dock = next(d for d in self.docks if d.widget() is widget or d.widget().isAncestorOf(widget))
        dock.show()
        dock.raise_()

    def _build_actions(self) -> None:
        self.action_table = actions = ActionTable(self)
        a = actions.add
        edit_list, writable = Need.LIST | Need.WRITABLE, Need.EDITOR | Need.WRITABLE | Need.IDLE
        self.new_workspace_action = a("new_workspace", "&New workspace…", self.new_workspace, Need.MODEL | Need.IDLE,
                                      "Ctrl+Shift+N", "Start an empty workspace for the loaded model")
        self.open_workspace_action = a("open_workspace", "&Open workspace…", self.choose_workspace,
                                       Need.MODEL | Need.IDLE, QKeySequence.Open, "Open a workspace database")
        self.import_edits_action = a("import_edits", "&Import edits…", self.import_edits, edit_list | Need.IDLE,
                                     "Ctrl+I", "Import a dataset file (ZsRE, CounterFact, CSV, …) as queued edits")
        self.export_memory_action = a("export_memory", "&Export side memory…", self.export_side_memory,
                                      Need.EDITOR | Need.APPLIED | Need.IDLE, "Ctrl+E",
                                      "Write the side memory to a standalone .safetensors file")
        self.import_memory_action = a("import_memory", "Import side &memory…", self.import_side_memory, writable,
                                      None, "Load a side-memory file into this workspace")
        self.quit_action = a("quit", "&Quit", self.close, Need.NOTHING, QKeySequence.Quit)
        self.undo_action = self.edit_list.undo_stack.createUndoAction(self, "&Undo")
        self.undo_action.setShortcut(QKeySequence.Undo)
        self.redo_action = self.edit_list.undo_stack.createRedoAction(self, "&Redo")
        self.redo_action.setShortcut(QKeySequence.Redo)
        self.new_edit_action = a("new_edit", "&New edit", self.table.start_new_edit, edit_list, QKeySequence.New,
                                 "Add an edit: type its prompt, Tab, its target")
        edits = self.edit_list
        self.duplicate_action = a("duplicate", "&Duplicate", edits.duplicate_selected, edit_list | Need.ONE_SELECTED,
                                  "Ctrl+D", "Duplicate the selected edit")
        self.delete_action = a("delete", "De&lete", edits.delete_selected, edit_list, QKeySequence.Delete,
                               "Delete the selected edits (undoable)")
        self.queue_action = a("queue", "&Queue selected", edits.queue_selected, edit_list | Need.SELECTION,
                              "Ctrl+Shift+Q", "Put the selected edits in the queue")
        self.unqueue_action = a("unqueue", "Back to &draft", edits.unqueue_selected, edit_list | Need.SELECTION, None,
                                "Take the selected edits out of the queue")
        self.find_action = a("find", "&Filter…", lambda: self.filter_bar.text.setFocus(), Need.NOTHING,
                             QKeySequence.Find, "Filter the edits by text")
        self.apply_selected_action = a("apply_selected", "&Apply selected", self.apply_selected,
                                       writable | Need.SELECTION, "Ctrl+Return",
                                       "Apply the selected edits, one after another")
        self.apply_queued_action = a("apply_queued", "Apply all &queued", self.apply_all_queued, writable,
                                     "Ctrl+Shift+Return", "Apply every queued edit in list order")
        self.cancel_action = a("cancel", "&Cancel", self.cancel_run, Need.APPLYING, "Ctrl+.",
                               "Stop: the edit training now is rolled back, applied ones stay")
        self.undo_last_action = a("undo_last", "&Undo last applied edit", self.undo_last_edit,
                                  writable | Need.APPLIED, "Ctrl+Alt+Z", "Roll the side memory back by one edit")
        self.reset_layout_action = a("reset_layout", "&Reset layout", self.reset_layout)
        self.about_action = a("about", "&About WISE Workbench", self.dialogs.about)
        actions.follow("sample_edits", self.welcome.sample_button, edit_list)
        actions.follow("load_model", self.model_panel.load_button, Need.IDLE)
        actions.follow("apply_settings", self.model_panel.apply_settings_button, writable)

    def _build_menus_and_toolbar(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addActions([self.new_workspace_action, self.open_workspace_action])
        self.recent_menu = file_menu.addMenu("Open &recent")
        self.action_table.follow("recent", self.recent_menu.menuAction(), Need.MODEL | Need.IDLE | Need.RECENT)
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
        for dock in self.docks:
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
        # Short words on the buttons (the menus say it in full), so the run's line fits beside them at the
        # window's minimum width instead of disappearing into the toolbar's overflow menu.
        for action, short in ((self.new_edit_action, "New"), (self.apply_queued_action, "Apply queued"),
                              (self.undo_last_action, "Undo last")):
            action.setIconText(short)
        toolbar.addActions([self.new_edit_action, self.duplicate_action, self.delete_action])
        toolbar.addSeparator()
        toolbar.addActions([self.apply_selected_action, self.apply_queued_action, self.cancel_action])
        toolbar.addSeparator()
        toolbar.addAction(self.undo_last_action)
        toolbar.addSeparator()
        self.run_bar = QProgressBar()
        self.run_bar.setRange(0, 1000)
        self.run_bar.setFixedWidth(110)
        self.run_bar.setFormat("")
        policy = self.run_bar.sizePolicy()
        policy.setRetainSizeWhenHidden(True)  # showing and hiding it never re-lays out the window
        self.run_bar.setSizePolicy(policy)
        self.run_label = StatusLabel()
        self.run_label.setFixedWidth(RUN_LABEL_WIDTH)  # changing text never re-lays out the toolbar
        self.run_box = run_box = QWidget()
        run_layout = QHBoxLayout(run_box)
        run_layout.setContentsMargins(8, 0, 0, 0)
        run_layout.addWidget(self.run_bar)
        run_layout.addWidget(self.run_label)
        self.run_bar.hide()
        toolbar.addWidget(run_box)
        self.addToolBar(toolbar)

    def _build_status_bar(self) -> None:
        self.status_model = StatusLabel("No model")
        self.status_applied = StatusLabel()
        self.status_threshold = StatusLabel()
        self.status_workspace = StatusLabel()
        bar = self.statusBar()
        for label in (self.status_model, self.status_applied, self.status_threshold, self.status_workspace):
            bar.addPermanentWidget(label)

    def _connect(self) -> None:
        self.edit_list.problem.connect(self.dialogs.problem)
        self.edit_list.message.connect(self.statusBar().showMessage)
        self.edit_list.changed.connect(self._show_selected_edit)
        self.edit_list.changed.connect(self._update_actions)
        self.table.selectionModel().currentRowChanged.connect(lambda *_: self._show_selected_edit())
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._update_actions())
        self.table.customContextMenuRequested.connect(
            lambda pos: self._edit_context_menu.popup(self.table.viewport().mapToGlobal(pos)))
        self.welcome.sample_button.clicked.connect(self.load_sample_edits)
        self.detail_panel.save_requested.connect(self.edit_list.change)
        self.probe_panel.probe_requested.connect(self.probe)
        self.probe_panel.cancel_requested.connect(self.cancel_probe)
        self.probe_panel.let_window_shortcuts_through([self.export_memory_action.shortcut(),
                                                       self.cancel_action.shortcut()])
        self.model_panel.load_requested.connect(lambda source, device, dtype: self.load_model(source, device, dtype))
        self.model_panel.settings_requested.connect(self.change_settings)
        self.run_presenter.edit_changed.connect(self._edit_changed)
        self.run_presenter.memory_changed.connect(self._show_memory)

    # ------------------------------------------------------------------------------------------
    # Window state, recent workspaces

    def _default_dock_sizes(self) -> None:
        # The settings form at its natural width (no sideways scrolling), the plots wide enough to read.
        # On a small screen the table keeps half the width: the side docks then take less and scroll.
        form = self.model_panel.sizeHint().width() + self.model_dock.widget().verticalScrollBar().sizeHint().width() + 6
        width = self.width()
        self.resizeDocks([self.model_dock, self.plots_dock], [min(form, int(width * 0.24)), min(400, int(width * 0.26))],
                         Qt.Horizontal)
        self.resizeDocks([self.answers_dock], [max(240, self.height() // 3)], Qt.Vertical)

    def reset_layout(self) -> None:
        self.restoreState(self.default_state)
        for dock in self.docks:
            dock.show()
        self.answers_dock.raise_()
        self._default_dock_sizes()

    def recent_workspaces(self) -> list[str]:
        return self.saved_state.recent_workspaces()

    def _show_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.recent_workspaces():
            action = self.recent_menu.addAction(path)
            action.triggered.connect(lambda _=False, p=path: self.open_workspace(p))

    def closeEvent(self, event) -> None:
        if self.job is not None:
            self.job.abort()  # a run stops after the current step, a probe after the current token
            job, self.job = self.job, None
            job.wait()
        self.saved_state.save(self, self.table)
        self.service.close()
        if self._preview is not None:
            self._preview.close()
        super().closeEvent(event)

    # ------------------------------------------------------------------------------------------
    # Background jobs: one at a time; the one enabling rule

    @property
    def message_box(self) -> QMessageBox | None:
        """The last dialog shown."""
        return self.dialogs.last

    @property
    def busy(self) -> bool:
        return self.job is not None

    @property
    def applying(self) -> bool:
        return self.job_kind == APPLY_JOB

    @property
    def store(self) -> Store | None:
        """The workspace whose edits the table lists (before the model has loaded, a preview of it)."""
        return self.table_model.store

    def _start_job(self, kind: str, job: BackgroundCall | GeneratorWorker, on_success: Callable,
                   on_failure: Callable[[Failure], None] | None = None) -> bool:
        """Starts `job` unless another runs; the handlers run on the GUI thread after it ended (so they
        may start the next job)."""
        if self.job is not None:
            job.deleteLater()
            self.statusBar().showMessage(f"Busy {self.job_kind}; try again when it is done.", 4000)
            return False
        job.setParent(self)
        job.finished.connect(lambda result: self._job_finished(job, result, on_success, on_failure))
        self.job, self.job_kind = job, kind
        self._update_actions()
        job.start()
        return True

    def _job_finished(self, job, result: Success | Failure, on_success: Callable, on_failure) -> None:
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
        self.dialogs.problem(failure.message, failure.details, title=title)

    def window_state(self) -> WindowState:
        store = self.store
        return WindowState(
            model=self.service.loaded is not None, list=store is not None,
            editor=self.service.editor is not None and self.service.store is not None,
            writable=store is not None and not store.read_only, selected=len(self.table.selected_edit_ids()),
            applied=self.applied, busy=self.busy, applying=self.applying, recent=bool(self.recent_workspaces()))

    def _update_actions(self) -> None:
        state = self.window_state()
        self.action_table.update(state)
        if state.editor and not state.busy:
            self.probe_panel.set_available(True)
        else:
            self.probe_panel.set_available(False, f"Busy {self.job_kind}." if state.busy else "Load a model first.")

    # ------------------------------------------------------------------------------------------
    # Model and workspace

    def load_model(self, source: str = DEFAULT_MODEL, device: str = "cpu", dtype: str = "auto") -> bool:
        """Loads a model off the GUI thread, then opens the current workspace for it. Until then (and if
        the load fails) the current model and editor stay as they are."""
        service = self.service
        job = BackgroundCall(lambda report, _stop: service.load_model(
            source, device, dtype, progress=lambda message, fraction: report((message, fraction))))
        job.reported.connect(lambda progress: self.model_panel.show_progress(*progress))
        self.model_panel.show_source(source)
        self.model_panel.show_progress(f"Loading {source}…", 0.0)
        return self._start_job("loading the model", job, self._model_loaded, self._model_failed)

    def _model_loaded(self, loaded: LoadedModel) -> None:
        self.model_panel.show_progress("", None)
        self.model_panel.show_model(loaded)
        self.status_model.setText(f"{loaded.name} · {loaded.device} · {str(loaded.dtype).replace('torch.', '')} · "
                                  f"{format_parameter_count(loaded.n_parameters)}")
        self.probe_panel.set_forms(("chat", "raw") if loaded.has_chat_template else ("raw",), self.service.form)
        freeze_long_lived_objects()
        self.open_workspace(self.db_path)

    def _model_failed(self, failure: Failure) -> None:
        loaded = self.service.loaded
        still = f" Still using {loaded.name}." if loaded is not None else ""
        self.model_panel.show_progress(f"The model could not be loaded.{still}", None)
        self._show_failure(failure, title="Model not loaded")

    def open_workspace(self, path: str | Path, new: bool = False, settings: WiseSettings | None = None,
                       read_only: bool = False) -> bool:
        """Opens (or creates) the workspace at `path` for the loaded model, restored to its last applied edit."""
        if self.service.loaded is None:
            self.dialogs.problem("Load a model first: a workspace's edits belong to one model.")
            return False
        path = Path(path).expanduser()
        service = self.service
        job = BackgroundCall(lambda _report, _stop: service.open(path, new=new, settings=settings, read_only=read_only))
        started = self._start_job("opening the workspace", job, self._workspace_opened,
                                  lambda failure: self._workspace_failed(path, failure))
        if started:
            self.statusBar().showMessage(f"Opening {path}…")
        return started

    def _workspace_opened(self, view: WorkspaceView) -> None:
        store, editor = self.service.store, self.service.editor
        if self._preview is not None:
            self._preview.close()
            self._preview = None
        self.db_path = store.path
        self._set_store(store)
        # Nothing of the previous workspace stays on screen: its loss curve, probe and run message.
        self.plots.clear()
        self.probe_panel.clear()
        self.run_presenter.show_message("")
        self._show_workspace_view(view)
        freeze_long_lived_objects()  # the editor's state and the restored memories
        self._show_recent_after(store.path)
        config = self.service.loaded.model.config
        self.model_panel.show_editor(editor.settings, config.num_hidden_layers,
                                     default_layer(config.model_type, config.num_hidden_layers),
                                     editor.module_name, locked=view.status.total_edits > 0)
        if store.read_only:
            self.statusBar().showMessage(f"Workspace {store.path.name} is open read-only: browse, probe and export; "
                                         "applying, undoing and importing are off.")
        else:
            self.statusBar().showMessage(f"Workspace {store.path.name} is ready.", 5000)

    def _show_recent_after(self, path: Path) -> None:
        self.saved_state.remember_workspace(path)
        self._show_recent()

    def _workspace_failed(self, path: Path, failure: Failure) -> None:
        self.model_panel.show_no_editor("No workspace is open for this model: open or create one (File menu).")
        if isinstance(failure.error, FingerprintMismatch):
            other = fresh_workspace_path(path)
            self.dialogs.ask("Workspace of another model",
                             f"{failure.message}\n\nStart a new workspace for this model at {other}?",
                             "Start a new workspace", lambda: self.open_workspace(other, new=True))
        elif isinstance(failure.error, WorkspaceInUse):
            holder = failure.error.holder
            who = holder.describe() if holder is not None else "another process"
            self.dialogs.ask("Workspace in use",
                             f"The workspace {path.name} is in use by {who}.\n\nOnly one program at a time may apply "
                             "edits to a workspace. You can open it read-only: browse its edits, probe and export its "
                             "side memory; applying, undoing and importing stay off.", "Open read-only",
                             lambda: self.open_workspace(path, read_only=True))
        else:
            self._show_failure(failure, title="Workspace not opened")

    def _show_edits_before_the_model(self) -> None:
        """The workspace's edit list right away, while the model loads (the store needs no model to list)."""
        try:
            self._preview = open_store(self.db_path)
        except StoreError as exc:
            self.dialogs.problem(f"{exc}\n\nOpen or create another workspace once the model is loaded.",
                                 title="Workspace not opened")
            return
        self._set_store(self._preview)

    def _set_store(self, store: Store) -> None:
        self.edit_list.set_store(store)
        read_only = " (read-only)" if store.read_only else ""
        self.status_workspace.setText(f"Workspace: {store.path.name}{read_only}")
        self.status_workspace.setToolTip(str(store.path) + (": open read-only, another process applies edits to it"
                                                            if store.read_only else ""))
        self.setWindowTitle(f"WISE Workbench — {store.path.name}{read_only}")
        self.probe_panel.show_history(store.recent_probes(30))
        self._show_selected_edit()

    def _show_workspace_view(self, view: WorkspaceView) -> None:
        self.plots.router.set_history(view.history, shared_threshold=not view.retrieve)
        self.plots.shards.set_status(view.status)
        self._show_memory(view.status, view.threshold)

    def _show_memory(self, status: MemoryStatus, threshold: float | None) -> None:
        self.applied = status.total_edits
        self.status_applied.setText(f"{self.applied} applied edit{'s' * (self.applied != 1)}")
        whitening = f", {format_bytes(status.whitening_bytes)} for the key whitening" if status.whitening_bytes else ""
        self.status_applied.setToolTip(f"The side memory takes {format_bytes(status.memory_bytes)} of RAM "
                                       f"(and {format_bytes(status.working_bytes)} for the next edit's training copy"
                                       f"{whitening}).")
        if threshold is None:
            self.status_threshold.setText("no side memory yet")
        else:
            retrieve = status.method == "wise-retrieve"
            self.status_threshold.setText(f"{'last memory’s ' if retrieve else ''}threshold {format_score(threshold)}")
        self._update_actions()

    def new_workspace(self) -> None:
        suggestion = fresh_workspace_path(self.db_path)
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
    # The edit list (its changes: EditList)

    def import_edits(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import edits", "", DATASET_FILTER)
        if path:
            self.import_edits_from(path)

    def import_edits_from(self, path: str | Path) -> bool:
        store = self.store
        return self._start_job("importing edits", BackgroundCall(lambda _report, _stop: import_file(store, path)),
                               self._edits_imported)

    def load_sample_edits(self) -> None:
        self.edit_list.load_samples(model_ready=self.service.editor is not None)

    def _edits_imported(self, report) -> None:
        self.table_model.reload()
        text = f"Imported {report.imported:,} edits ({report.format}) into the queue."
        if report.problems:
            shown = "\n".join(str(p) for p in report.problems[:10])
            more = f"\n… and {len(report.problems) - 10} more" if len(report.problems) > 10 else ""
            self.dialogs.problem(f"{text}\n{len(report.problems)} records were skipped:", shown + more,
                                 title="Import finished with problems", icon=QMessageBox.Information)
        self.statusBar().showMessage(text, 8000)

    def _edit_changed(self, detail: EditDetail) -> None:
        """An edit changed during a run: its panels follow if it is the one selected."""
        if self.table_model.edit_id(self.table.currentIndex().row()) == detail.id:
            self._show_selected_edit(detail)

    def _show_selected_edit(self, detail: EditDetail | None = None) -> None:
        """Shows the current row's edit in the panels; `detail`: that edit, already read."""
        row = self.table.currentIndex().row()
        edit_id = self.table_model.edit_id(row) if row >= 0 and not self.table_model.is_new_row(row) else None
        if detail is None and edit_id is not None and self.store is not None:
            detail = self.store.get_edit(edit_id)
        self.detail_panel.show_edit(detail)
        self.answers_panel.show_edit(detail)
        self.plots.router.select_edit(edit_id)
        outcome = detail.outcome if detail is not None else None
        # The edit that trained last keeps its live cross-entropy and margin curves; others show their stored total.
        if (self.run_presenter.training_edit is None and outcome is not None and outcome.fields.loss_curve
                and self.plots.loss.edit_id != edit_id):
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
        service = self.service
        worker = GeneratorWorker(lambda should_stop: service.apply(edit_ids, abort=should_stop))
        worker.yielded.connect(self.run_presenter.handle)
        if self._start_job(APPLY_JOB, worker, self._run_finished, self._run_crashed):
            self.run_presenter.start(total, service.editor.settings)

    def _run_finished(self, finished: RunFinished) -> None:
        short, full = run_summary(finished)
        self.run_presenter.end(short, full)
        self.statusBar().showMessage(full, 10000)
        if finished.write_error:
            self.table_model.refresh_visible()
            self.dialogs.problem(finished.write_error + "\n\nFree some space (or make the workspace's folder "
                                 "writable) and apply again.", title="The checkpoint could not be written")
            return
        failures = self.run_presenter.failures
        if failures:
            lines = "\n".join(f"Edit {self._position_of(i)}: {message}" for i, message in failures)
            count = len(failures)
            self.dialogs.problem(f"{count} edit{'s' * (count != 1)} could not be applied and "
                                 f"{'are' if count != 1 else 'is'} marked failed. Fix the edit and apply it again.\n\n"
                                 f"{lines}", title="Some edits failed")

    def _position_of(self, edit_id: int) -> int | str:
        try:
            return self.store.get_edit(edit_id).position
        except StoreError:  # deleted meanwhile: show its id instead
            return f"#{edit_id}"

    def _run_crashed(self, failure: Failure) -> None:
        self.run_presenter.end("Run stopped by an error.", failure.message)
        self.table_model.refresh_visible()
        self.dialogs.problem(f"The run stopped: {failure.message}", failure.details, title="Apply failed")

    def cancel_run(self) -> None:
        if self.applying:
            self.job.abort()
            self.run_presenter.show_message("cancelling: rolling back the edit…",
                                            "The edit in training is rolled back; the applied ones stay.")

    def undo_last_edit(self) -> None:
        """Asks first: the last applied edit leaves the side memory."""
        page = self.store.edit_page(0, 1, status=[EditStatus.APPLIED], order_by="apply_order", descending=True)
        if not page:
            return
        last = page[0]
        self.dialogs.ask("Undo last applied edit",
                         f"Roll the side memory back by one edit?\n\nEdit {last.apply_order}: “{shorten(last.prompt, 80)}”"
                         f" → “{shorten(last.target, 40)}” leaves the side memory; it stays in the list as rolled back "
                         "and can be applied again.", "Roll back", self._roll_back_last)

    def _roll_back_last(self) -> None:
        service = self.service
        job = BackgroundCall(lambda _report, _stop: (service.undo_last(), service.view()))
        self._start_job("undoing the last edit", job, self._last_edit_undone)

    def _last_edit_undone(self, result) -> None:
        edit_id, view = result
        if edit_id is None:
            self.statusBar().showMessage("No applied edit to undo.", 5000)
            return
        self.probe_panel.clear()  # its answer came from the memory as it was
        self._show_workspace_view(view)
        self.table_model.refresh_edit(edit_id)
        self._show_selected_edit()
        self.statusBar().showMessage("The last applied edit was rolled back; the side memory is as before it.", 6000)

    # ------------------------------------------------------------------------------------------
    # Probe, side-memory files

    def probe(self, question: str, form: str | None = None) -> bool:
        service = self.service
        job = BackgroundCall(lambda report, should_stop: service.probe(
            question, form, abort=should_stop, progress=lambda message, fraction: report((message, fraction))))
        job.reported.connect(lambda progress: self.probe_panel.show_progress(*progress))
        if not self._start_job(PROBE_JOB, job, self._probe_done, self._probe_failed):
            return False
        self.probe_panel.show_busy(question)
        return True

    def cancel_probe(self) -> None:
        if self.job_kind == PROBE_JOB:
            self.job.abort()

    def _probe_done(self, result: ProbeResult) -> None:
        self.probe_panel.show_result(result)
        self.probe_panel.show_history(self.store.recent_probes(30))

    def _probe_failed(self, failure: Failure) -> None:
        self.probe_panel.show_stopped(failure.message)
        if not isinstance(failure.error, WiseGuiError):  # a cancel or a refused question is said in the panel
            self._show_failure(failure, title="Probe failed")

    def export_side_memory(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export side memory", str(self.db_path.with_suffix(".safetensors")),
                                              MEMORY_FILTER)
        if path:
            self.export_side_memory_to(path)

    def export_side_memory_to(self, path: str | Path) -> bool:
        service = self.service
        job = BackgroundCall(lambda _report, _stop: service.export_memory(path))
        return self._start_job("exporting the side memory", job, self._side_memory_exported)

    def _side_memory_exported(self, report: ExportReport) -> None:
        edits = report.total_edits
        self.statusBar().showMessage(f"Side memory with {edits} edit{'s' * (edits != 1)} written to {report.path} "
                                     f"({format_bytes(report.nbytes)}).", 8000)

    def import_side_memory(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import side memory", "", MEMORY_FILTER)
        if path:
            self.import_side_memory_from(path)

    def import_side_memory_from(self, path: str | Path) -> bool:
        service = self.service
        job = BackgroundCall(lambda report, _stop: (
            service.import_memory(path, progress=lambda message, fraction: report((message, fraction))),
            service.view()))
        job.reported.connect(lambda progress: self.statusBar().showMessage(progress[0]))
        return self._start_job("importing a side memory", job, self._side_memory_imported)

    def _side_memory_imported(self, result) -> None:
        count, view = result
        self.table_model.reload()
        self.probe_panel.clear()
        self._show_workspace_view(view)
        self.statusBar().showMessage(f"Imported a side memory with {count} edits; they are listed as applied, "
                                     "with their scores as measured now.", 8000)
