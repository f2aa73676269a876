"""Writing files so that a crash leaves either the old file or the complete new one, never a mix."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file


def _fsync_folder(folder: Path) -> None:
    """Makes a rename durable; folders cannot be opened for fsync on Windows, where rename is durable enough."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """Calls `write(temporary_path)` for a file next to `path`, syncs it to disk, then renames it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    temp = Path(temp_name)
    try:
        write(temp)
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def write_safetensors_atomic(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    # safetensors refuses views into shared storage; contiguous copies of slices are what we want stored.
    cpu_tensors = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    write_atomic(path, lambda temp: save_file(cpu_tensors, str(temp), metadata=metadata))
