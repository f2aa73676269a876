"""The workspace service: the workflows the window and the CLI share, Qt-free.

It owns the loaded model, the editor attached to it and the open workspace's store, and offers load,
open (locked, or read-only), apply (a generator of events), undo, probe, import of edits and of a side
memory, and export. Every call runs to its end on the caller's thread; the window calls it from one
worker thread at a time, so the editor is never used by two threads at once.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path

from wise_gui.app.apply_loop import Abort, apply_edits
from wise_gui.app.checkpoints import read_chain, restore_workspace
from wise_gui.app.events import RunEvent, RunFinished
from wise_gui.app.views import WorkspaceView, edit_points
from wise_gui.core.edits import MAX_TEXT_CHARS, EditRequest
from wise_gui.core.errors import WiseGuiError
from wise_gui.core.evaluation import evaluate
from wise_gui.core.files import write_atomic
from wise_gui.core.inference import Answer
from wise_gui.core.memory_file import (
    editor_identity,
    memory_file_contents,
    read_memory_file,
    save_memory_file,
    write_memory_file,
)
from wise_gui.core.models import DEFAULT_MODEL, LoadedModel, ProgressCallback, load_model
from wise_gui.core.tokens import QueryForm
from wise_gui.core.wise.editor import RouteDecision, WiseEditor
from wise_gui.core.wise.settings import SettingsError, WiseSettings
from wise_gui.store import (
    EditStatus,
    OutcomeFields,
    Store,
    StoreError,
    import_requests,
    open_store,
    open_workspace,
    record_applied,
)

ModelLoader = Callable[[str, str, str, ProgressCallback], LoadedModel]
PROBE_TOKENS = 48


def default_model_loader(source: str, device: str, dtype: str, progress: ProgressCallback) -> LoadedModel:
    return load_model(source, device=device, dtype=None if dtype == "auto" else dtype, progress=progress)


class Cancelled(WiseGuiError):
    """The user stopped the call; nothing was changed."""


@dataclass(frozen=True)
class ProbeResult:
    question: str
    form: QueryForm
    decision: RouteDecision
    edited: Answer
    original: Answer


@dataclass(frozen=True)
class ExportReport:
    path: Path
    total_edits: int
    nbytes: int


def stored_settings(store: Store) -> WiseSettings | None:
    """The settings a workspace was last used with; None for a new one (or one only filled by import)."""
    workspace = store.workspace
    values = json.loads(workspace.settings_json) if workspace is not None else {}
    if not values:
        return None
    try:
        return WiseSettings.from_dict(values)
    except (TypeError, SettingsError) as exc:
        raise StoreError(f"The workspace's stored settings cannot be used: {exc}") from None


def check_question(question: str) -> str:
    question = question.strip()
    if not question:
        raise WiseGuiError("The question is empty: type a question to probe.")
    if len(question) > MAX_TEXT_CHARS:
        raise WiseGuiError(f"The question is {len(question):,} characters long; questions and edits are limited to "
                           f"{MAX_TEXT_CHARS:,}.")
    return question


class WorkspaceService:
    def __init__(self, loader: ModelLoader = default_model_loader, settings_override: WiseSettings | None = None):
        self.loader = loader
        # Settings for every workspace opened (tests, benchmarks); None: each workspace's own.
        self.settings_override = settings_override
        self.loaded: LoadedModel | None = None
        self.editor: WiseEditor | None = None
        self.store: Store | None = None

    # ---- model and workspace ------------------------------------------------------------------

    @property
    def form(self) -> QueryForm:
        """The form questions are asked in: through the chat template for an instruct model."""
        return "chat" if self.loaded is not None and self.loaded.has_chat_template else "raw"

    @property
    def read_only(self) -> bool:
        return self.store is not None and self.store.read_only

    def load_model(self, source: str = DEFAULT_MODEL, device: str = "cpu", dtype: str = "auto",
                   progress: ProgressCallback = lambda message, fraction: None) -> LoadedModel:
        """Loads a model; the current one (and its editor) stay until it has loaded."""
        loaded = self.loader(source, device, dtype, progress)
        self._detach()
        self.loaded = loaded
        return loaded

    def _detach(self) -> None:
        if self.editor is not None:
            self.editor.detach()
            self.editor = None

    def close(self) -> None:
        self._detach()
        if self.store is not None:
            self.store.close()
            self.store = None

    def open(self, path: str | Path | None, new: bool = False, settings: WiseSettings | None = None,
             read_only: bool = False) -> WorkspaceView:
        """Opens (or creates) the workspace at `path` for the loaded model, restored to its last applied
        edit. `settings=None`: the workspace's own (the model's preset for a new one)."""
        if self.loaded is None:
            raise WiseGuiError("Load a model first: a workspace's edits belong to one model.")
        self.close()
        settings = settings or self.settings_override
        if settings is None and not new:
            with open_store(path, create=not read_only) as probe_store:
                settings = stored_settings(probe_store)
        editor = WiseEditor(self.loaded, settings)
        try:
            store = open_workspace(
                path, model_source=self.loaded.source, fingerprint=editor.fingerprint(), layer=editor.layer_index,
                module_name=editor.module_name, settings_json=editor.settings.to_json(), new_workspace=new,
                read_only=read_only)
            try:
                if not read_only:
                    store.requeue_interrupted()
                restore_workspace(store, editor)
            except BaseException:
                store.close()
                raise
        except BaseException:
            editor.detach()  # leaves the model free for another editor
            raise
        self.editor, self.store = editor, store
        return self.view()

    def view(self) -> WorkspaceView:
        store, editor = self._ready()
        history = [p for p in (edit_points(d) for d in store.applied_edits()) if p is not None]
        threshold = history[-1].threshold if history else None
        return WorkspaceView(history, editor.status(), threshold, editor.settings.retrieve)

    def _ready(self) -> tuple[Store, WiseEditor]:
        if self.store is None or self.editor is None:
            raise WiseGuiError("Open a workspace first.")
        return self.store, self.editor

    # ---- editing --------------------------------------------------------------------------------

    def apply(self, edit_ids: list[int] | None = None, abort: Abort = lambda: False, form: QueryForm | None = None
              ) -> Generator[RunEvent, None, RunFinished]:
        """The apply loop over the queue (or `edit_ids`), answers asked in `form` (default: self.form)."""
        store, editor = self._ready()
        if store.read_only:
            raise StoreError(f"The workspace {store.path.name} is open read-only: edits cannot be applied here.")
        return apply_edits(store, editor, edit_ids, abort, form or self.form)

    def undo_last(self) -> int | None:
        """Rolls back the last applied edit, in the store and in the editor; returns its id (None: nothing applied)."""
        store, editor = self._ready()
        edit_id = store.roll_back_last()
        if edit_id is not None:
            restore_workspace(store, editor)
        return edit_id

    def probe(self, question: str, form: QueryForm | None = None, abort: Abort = lambda: False,
              progress: Callable[[str, float], None] = lambda message, fraction: None) -> ProbeResult:
        """Routes the question and answers it with and without the side memory; `abort` is asked between
        generated tokens (Cancelled when it said stop)."""
        store, editor = self._ready()
        question = check_question(question)
        form = editor.prompter.resolve(form or self.form)
        progress("Routing the question", 0.05)
        decision = editor.route([question], form)[0]
        progress("Answering with the side memory", 0.2)
        edited = editor.generate([question], form=form, max_new_tokens=PROBE_TOKENS, stop_when=abort)[0]
        if abort():
            raise Cancelled("The probe was cancelled.")
        progress("Answering as the original model", 0.6)
        original = editor.generate([question], form=form, max_new_tokens=PROBE_TOKENS, use_side_memory=False,
                                   stop_when=abort)[0]
        if abort():
            raise Cancelled("The probe was cancelled.")
        route = decision.route
        store.record_probe(question, form, route.memory, route.kind, route.score, route.threshold, edited.text)
        return ProbeResult(question, form, decision, edited, original)

    # ---- files ----------------------------------------------------------------------------------

    def import_edits(self, path: str | Path, status: str = EditStatus.QUEUED):
        from wise_gui.app.transfer import import_file

        if self.store is None:
            raise WiseGuiError("Open a workspace first.")
        return import_file(self.store, path, status=status)

    def export_memory(self, path: str | Path) -> ExportReport:
        _, editor = self._ready()
        path = Path(path).expanduser()
        try:
            save_memory_file(editor, path)
        except OSError as exc:
            raise WiseGuiError(f"Cannot write {path}: {exc.strerror or exc}. Nothing was changed.") from None
        return ExportReport(path, editor.state.total_edits, path.stat().st_size)

    def import_memory(self, path: str | Path, progress: Callable[[str, float], None] = lambda m, f: None) -> int:
        """Loads a memory file into a workspace without applied edits; its edits are listed as applied,
        each with its score and threshold from the file, and measured (Rel and the generated answer).
        Only the last of them gets a checkpoint (the file's state): they cannot be undone one by one.
        Returns how many edits the file holds."""
        store, editor = self._ready()
        if store.read_only:
            raise StoreError(f"The workspace {store.path.name} is open read-only: nothing can be imported into it.")
        applied = store.count_edits(status=EditStatus.APPLIED)
        if applied:
            raise StoreError(f"This workspace already has {applied} applied edits; a side memory can only be imported "
                             "into a workspace without applied edits (File > New workspace).")
        memory = read_memory_file(path)
        if not memory.edit_log:
            raise StoreError(f"{Path(path).name} holds no edits.")
        settings = editor.settings
        memory.restore_into(editor)  # refuses a file made for another model
        name = Path(path).name
        requests = [EditRequest(prompt, target, source=f"{name}#{i}") for i, (prompt, target) in enumerate(memory.edit_log)]
        edit_ids: list[int] = []
        try:
            progress(f"Measuring the {len(requests)} imported edits", 0.1)
            measured = evaluate(editor, requests, forms=(self.form,), edit_indices=list(range(len(requests))))
            outcomes = []
            for index, edit in enumerate(measured.edits):
                record = editor.edit_record(index)
                outcomes.append(OutcomeFields(
                    answers=[a.to_dict() for a in edit.answers], rel=edit.scores.rel,
                    gen_success=edit.scores.live[self.form].prompt, activation_score=record.score,
                    threshold=record.threshold, shard_index=record.memory + 1,
                    extra_metrics={"memory": record.memory, "imported_from": name,
                                   "live": edit.scores.to_dict()["live"]}))
            progress("Saving", 0.9)
            edit_ids = import_requests(store, requests, status=EditStatus.DRAFT).edit_ids
            with store.session() as session:
                for edit_id, outcome in zip(edit_ids[:-1], outcomes):
                    record_applied(session, edit_id, outcome, None)
            tensors, metadata = memory_file_contents(editor_identity(editor), editor.settings, editor.state_dict())
            store.save_applied(edit_ids[-1], outcomes[-1], tensors, metadata, "full")
        except BaseException:
            # Back to the workspace as it was: unedited, its own settings, without the half-imported edits.
            editor.reset()
            editor.update_settings(settings)
            if edit_ids:
                store.delete_edits(edit_ids, including_applied=True)
            raise
        return len(edit_ids)


def export_workspace_memory(db: str | Path | None, out: str | Path) -> ExportReport:
    """The side memory after a workspace's last applied edit, as a standalone file; no model needed."""
    with open_store(db, create=False) as store:
        chain = store.checkpoint_chain()
        if not chain:
            raise StoreError(f"No edit is applied in {store.path}: there is no side memory to export.")
        stored = read_chain(chain, store.path.name)
    out = Path(out).expanduser()
    try:
        if len(chain) == 1:  # the full checkpoint is already a memory file: copy it
            write_atomic(out, lambda temp: shutil.copyfile(chain[0].path, temp))
        else:
            write_memory_file(out, stored.identity, stored.settings, stored.state)
    except OSError as exc:
        raise WiseGuiError(f"Cannot write {out}: {exc.strerror or exc}. Nothing was changed.") from None
    return ExportReport(out, int(stored.state.meta["total_edits"]), out.stat().st_size)

