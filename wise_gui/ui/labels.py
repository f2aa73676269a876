"""How the window names memories and answers. The store keeps a route as (memory index, kind); the words
are made here, so a label never goes stale in the database."""

from __future__ import annotations

from wise_gui.core.inference import MAIN, Route

MEMORY_KINDS = {"merged": "merged memory", "saved": "full shard", "shard": "current shard",
                "residual": "residual memory", "codebook": "codebook entry"}
NO_ANSWER = "(no answer: the model ended at once)"
NOT_ASKED = "–"  # the question was not asked (an imported edit has no answer from before it)
FORM_LABELS = {"chat": "chat (the model's chat template)", "raw": "raw completion"}


def memory_label(memory: int, kind: str) -> str:
    """"main memory", "side memory 3 (merged memory)", "residual memory (mask of edit 4)"."""
    if memory == MAIN:
        return "main memory"
    if kind == "residual":  # MEMOIR: one residual memory; a route names the edit whose mask matched
        return f"residual memory (mask of edit {memory + 1})"
    return f"side memory {memory + 1} ({MEMORY_KINDS.get(kind, kind)})"


def route_label(route: Route) -> str:
    return memory_label(route.memory, route.kind)


def answer_text(text: str | None) -> str:
    """An answer as shown: never an empty cell."""
    if text is None:
        return NOT_ASKED
    text = text.strip()
    return text if text else NO_ANSWER

