"""A short soak of the apply loop (scripts/soak.py runs the 1,000-edit one): integrity, the checkpoint
chain against the state in RAM, and disk use that stays per-edit."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from soak import soak  # noqa: E402


def test_fifty_edits_leave_an_intact_workspace_whose_chain_rebuilds_the_memory(tmp_path):
    result = soak(50, tmp_path)
    assert result["applied"] == 50 and result["failed"] == 0
    assert result["integrity_check"] == "ok"
    assert result["chain_rebuilds_ram_state"]
    assert result["edits_in_chain"] == 50
    # The chain is a full state and the deltas after it, never more than twice the full state.
    assert result["chain_delta_bytes"] <= result["chain_full_bytes"]
    assert result["rss_growth_beyond_memories_mib"] < 50
