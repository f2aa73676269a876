"""Handing freed memory back to the operating system between edits.

An edit allocates and frees hundreds of megabytes of activations, their sizes changing with every
prompt. glibc serves them from its heap and keeps the freed pages, and the few small tensors each edit
keeps (its memory's columns, its key) land among them, so the heap only grows: about 1.3 MB of resident
memory per edit on SmolLM2, over ten times the edit's own state (docs/benchmarks.md section 8).
`malloc_trim(0)` returns every free page of the heap, not only its top.
"""

from __future__ import annotations

import ctypes
import sys


def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc; musl and others have none
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Returns the allocator's free pages to the OS where the C library can (glibc); elsewhere nothing."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
