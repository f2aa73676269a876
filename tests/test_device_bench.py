"""The GPU benchmark script runs end to end on the CPU with a tiny config, so it cannot rot unseen."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_device_bench_tiny_run_reports_every_figure(tmp_path):
    out = tmp_path / "device.json"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "device_bench.py"), "--tiny", "--edits", "2",
         "--full-forward-edits", "1", "--n-iter", "3", "--memories", "0,5", "--json", str(out)],
        check=True, cwd=ROOT, timeout=600,
    )
    result = json.loads(out.read_text())
    assert result["edits_timed"] == 2
    assert len(result["seconds_per_edit_cached"]) == 2
    assert len(result["seconds_per_edit_full_forward"]) == 1
    assert all(steps == 3 for steps in result["steps_per_edit"])
    assert [row["memories"] for row in result["generation_overhead"]] == [0, 5]
    assert result["memory_file_bytes"] > 0
