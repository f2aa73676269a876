"""Safetensors checkpoints of the edited state, written so that a crash never leaves a torn file.

A workspace `edits.sqlite` keeps them in `edits.checkpoints/`, one per applied edit, named by apply
order: `state-000012.safetensors` holds the whole state after edit 12, `delta-000013.safetensors`
what edit 13 changed; the store decides which of them to keep.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from wise_gui.core.files import write_safetensors_atomic
from wise_gui.store.errors import StoreError


def checkpoint_folder(db_path: Path) -> Path:
    return db_path.with_name(f"{db_path.stem}.checkpoints")


def checkpoint_name(apply_order: int, kind: str = "full") -> str:
    return f"{'state' if kind == 'full' else 'delta'}-{apply_order:06d}.safetensors"


def write_checkpoint_atomic(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Writes `tensors` to `path`: either the old file or the complete new one is there, never a mix."""
    write_safetensors_atomic(path, tensors, metadata)


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors (on the CPU) and the metadata of a checkpoint written by `write_checkpoint_atomic`."""
    path = Path(path)
    try:
        tensors = load_file(path)
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
    except FileNotFoundError:
        raise StoreError(f"Checkpoint file not found: {path}") from None
    except Exception as exc:  # safetensors reports a damaged header with several exception types
        raise StoreError(f"Checkpoint {path} is damaged or not a safetensors file: {exc}") from None
    return tensors, metadata
