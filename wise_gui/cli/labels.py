"""How the command line names a memory (the window has its own, richer labels)."""

from __future__ import annotations

from wise_gui.core.inference import Route

_KINDS = {"merged": "merged memory", "saved": "full shard", "shard": "current shard", "residual": "residual memory",
          "codebook": "codebook entry"}


def route_label(route: Route) -> str:
    if not route.to_side_memory:
        return "main memory"
    return f"side memory {route.memory + 1} ({_KINDS.get(route.kind, route.kind)})"
