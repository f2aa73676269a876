"""The workspace's checkpoint chain: a full state now and then, one small delta per applied edit.

After each applied edit the loop writes what that edit changed (`state_delta`: a new memory, a few
changed entries), so the bytes written per edit do not grow with the number of edits. A full state (a
complete memory file) is written for the first edit and whenever the deltas since the last full one
outweigh it, which keeps the chain short to replay and the disk use within a few full states.
"""

from __future__ import annotations

from dataclasses import dataclass

from wise_gui.core.memory_file import (
    Identity,
    MemoryFileError,
    delta_contents,
    editor_identity,
    memory_file_contents,
    read_delta,
    read_memory_file,
    refuse_mismatch,
)
from wise_gui.core.wise.editor import WiseEditor
from wise_gui.core.wise.settings import WiseSettings
from wise_gui.core.wise.state import StateDict, StateError, apply_state_delta, state_delta
from wise_gui.store import CheckpointRef, Store, StoreError


@dataclass
class ChainSizes:
    """Bytes of the current chain: its full state and the deltas after it."""

    full: int = 0
    deltas: int = 0

    @classmethod
    def of(cls, store: Store) -> ChainSizes:
        return cls(*store.chain_bytes())


@dataclass(frozen=True)
class Checkpoint:
    kind: str  # "full" or "delta"
    tensors: dict
    metadata: dict[str, str]
    nbytes: int  # of the tensors, about the file's size


def next_checkpoint(editor: WiseEditor, before: StateDict | None, after: StateDict, apply_order: int,
                    sizes: ChainSizes) -> Checkpoint:
    """The checkpoint of the edit that turned `before` into `after` (None: nothing stored before it)."""
    if before is not None and sizes.full:
        delta = state_delta(before, after)
        if sizes.deltas + delta.nbytes() <= sizes.full:
            return Checkpoint("delta", *delta_contents(editor.settings, delta, apply_order), delta.nbytes())
    return Checkpoint("full", *memory_file_contents(editor_identity(editor), editor.settings, after), after.nbytes())


def record_written(sizes: ChainSizes, checkpoint: Checkpoint, written: CheckpointRef) -> None:
    size = written.path.stat().st_size
    if checkpoint.kind == "full":
        sizes.full, sizes.deltas = size, 0
    else:
        sizes.deltas += size


@dataclass(frozen=True)
class StoredState:
    identity: Identity
    settings: WiseSettings  # as of the last applied edit
    state: StateDict


def read_chain(chain: list[CheckpointRef], where: str) -> StoredState:
    """The state the chain rebuilds: its full checkpoint, then every delta in order. No model needed."""
    try:
        base = read_memory_file(chain[0].path)
        identity, settings, state = base.identity, base.settings, base.state
        for ref in chain[1:]:
            settings, delta, order = read_delta(ref.path)
            if order != ref.apply_order:
                raise StoreError(f"{ref.path.name} belongs to edit number {order}, not {ref.apply_order}.")
            state = apply_state_delta(state, delta)
    except (MemoryFileError, StateError) as exc:
        raise StoreError(f"The checkpoints of {where} cannot be read: {exc}") from None
    return StoredState(identity, settings, state)


def restore_workspace(store: Store, editor: WiseEditor) -> CheckpointRef | None:
    """Puts the editor in the exact state after the workspace's last applied edit (unedited when none).

    The editor keeps its current settings: they are the workspace's now, whatever a checkpoint was saved with.
    """
    chain = store.checkpoint_chain()
    if not chain:
        editor.reset()
        return None
    stored = read_chain(chain, store.path.name)
    refuse_mismatch(stored.identity, editor, f"The workspace {store.path.name}")
    settings = editor.settings
    try:
        editor.update_settings(stored.settings.replace(layer=editor.layer_index))
        editor.load_state_dict(stored.state)
    except StateError as exc:
        editor.update_settings(settings)
        raise StoreError(f"The checkpoints of {store.path.name} do not make a state: {exc}") from None
    editor.update_settings(settings)
    return chain[-1]
