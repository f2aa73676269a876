"""A soak of the apply loop: many sequential edits on the tiny test model, with checkpoints, then checks.

Runs the same `WorkspaceService.apply` loop as the window and `wise-gui apply` (training, answering,
measuring, a checkpoint per edit), on the tiny randomly initialised Llama of the tests, and reports:
the database's `integrity_check`, whether the checkpoint chain rebuilds exactly the side memory in RAM
and holds every applied edit, RSS growth beyond what the memories themselves take, time per edit
(last tenth against the first tenth, as measured and at the machine's speed of the moment) and disk
use per edit.

    python scripts/soak.py --edits 1000 --json soak.json     # about 2-4 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny model and its tokenizer live with the tests

from tiny_model import FIXTURES, TINY_SETTINGS, tiny_loaded, tiny_tokenizer  # noqa: E402

from wise_gui.app.apply_loop import run_to_summary  # noqa: E402
from wise_gui.app.events import EditApplied  # noqa: E402
from wise_gui.app.workspace import WorkspaceService  # noqa: E402
from wise_gui.core.datasets import load_requests_from  # noqa: E402
from wise_gui.core.edits import EditRequest, LocalityCheck  # noqa: E402
from wise_gui.core.inference import BareModel  # noqa: E402
from wise_gui.store import EditStatus, import_requests, open_store  # noqa: E402

ZSRE_FILES = [ROOT.parent / "shared" / "data" / "zsre" / name for name in ("zsre_edit_dev.json", "zsre_train_1k.json")]
# The default layout (an indexed memory of a few columns per edit), with steps cut for a soak.
SOAK_SETTINGS = TINY_SETTINGS.replace(n_iter=12, mask_kind="columns", mask_ratio=0.1, route_candidates=8)


def soak_requests(count: int) -> list[EditRequest]:
    """`count` edits: ZsRE dev records then train records (distinct questions, as real use brings) when
    ../shared/data is there; otherwise the 30 fixture records cycled, each pass giving every prompt
    another record's target."""
    if ZSRE_FILES[0].is_file():
        requests = load_requests_from(ZSRE_FILES, limit=count)
        if len(requests) == count:
            return requests
    records = json.loads((FIXTURES / "zsre_engine_30.json").read_text())
    requests = []
    for i in range(count):
        r = records[i % len(records)]
        target = records[(i + i // len(records)) % len(records)]["alt"]
        requests.append(EditRequest(r["src"], target, paraphrases=(r["rephrase"],),
                                    locality=(LocalityCheck(r["loc"], r["loc_ans"]),)))
    return requests


YARDSTICK_QUESTIONS = ["Who wrote the novel Dune?", "What is the capital of France?",
                       "Which river flows through Vienna?", "When did the Berlin Wall fall?"]


def time_yardstick(model: BareModel) -> float:
    """Seconds for a fixed amount of the work an edit does most: 16 greedy tokens for four questions."""
    started = time.perf_counter()
    model.generate(YARDSTICK_QUESTIONS, max_new_tokens=16, min_new_tokens=16, first_sentence_only=False)
    return time.perf_counter() - started


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def states_equal(a, b) -> bool:
    return a.tensors.keys() == b.tensors.keys() and all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)


def soak(edits: int, folder: Path) -> dict:
    db = folder / "soak.sqlite"
    with open_store(db) as store:
        import_requests(store, soak_requests(edits), status=EditStatus.QUEUED)
    tokenizer = tiny_tokenizer()
    service = WorkspaceService(loader=lambda *_: tiny_loaded(tokenizer=tokenizer), settings_override=SOAK_SETTINGS)
    service.load_model("tiny")
    service.open(db)
    tenth = max(1, edits // 10)
    every = max(1, tenth // 10)
    seconds: list[float] = []
    # The machine's speed varies with what else runs on it (CPU seconds vary as much as wall-clock ones):
    # a fixed workload on an unedited copy of the model, timed ten times a tenth, is the yardstick.
    yardstick = BareModel(tiny_loaded(tokenizer=tokenizer))
    yardstick_seconds: list[float] = []
    samples: list[dict] = []  # RSS, memory and disk after every tenth of the run

    def on_event(event) -> None:
        if not isinstance(event, EditApplied):
            return
        seconds.append(event.seconds)
        if len(seconds) % every == 0:
            yardstick_seconds.append(time_yardstick(yardstick))
        if len(seconds) % tenth == 0:
            samples.append({"edits": len(seconds), "seconds_per_edit": sum(seconds[-tenth:]) / tenth,
                            "yardstick_seconds": mean(yardstick_seconds[-(tenth // every):]),
                            "rss_bytes": rss_bytes(), "memory_bytes": event.status.memory_bytes,
                            "disk_bytes": folder_bytes(folder)})
            print(f"{len(seconds)}/{edits} edits  {samples[-1]['seconds_per_edit']:.3f} s/edit "
                  f"(yardstick {samples[-1]['yardstick_seconds']:.3f} s)  "
                  f"RSS {samples[-1]['rss_bytes'] / 2**20:.0f} MiB", file=sys.stderr, flush=True)

    started = time.perf_counter()
    finished = run_to_summary(service.apply(), on_event)
    wall = time.perf_counter() - started
    in_ram = service.editor.state_dict()
    applied = len(service.store.applied_edits())
    full, deltas = service.store.chain_bytes()
    service.close()

    with sqlite3.connect(db) as connection:
        integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
    reopened = WorkspaceService(loader=lambda *_: tiny_loaded(tokenizer=tokenizer), settings_override=SOAK_SETTINGS)
    reopened.load_model("tiny")
    reopened.open(db)
    rebuilt = reopened.editor.state_dict()
    edits_in_chain = len(reopened.editor.edit_log)
    reopened.close()

    first, last = seconds[:tenth], seconds[-tenth:]
    ratio = mean(last) / mean(first)
    # Growth from the first sample on (allocator and caches are warm by then), less the memories' own growth.
    rss_growth = samples[-1]["rss_bytes"] - samples[0]["rss_bytes"]
    memory_growth = samples[-1]["memory_bytes"] - samples[0]["memory_bytes"]
    disk_growth = samples[-1]["disk_bytes"] - samples[0]["disk_bytes"]
    return {
        "edits": edits, "applied": applied, "failed": len(finished.failed), "wall_seconds": wall,
        "integrity_check": integrity,
        "chain_rebuilds_ram_state": states_equal(in_ram, rebuilt),
        "edits_in_chain": edits_in_chain,
        "seconds_first_tenth": mean(first), "seconds_last_tenth": mean(last),
        "time_ratio_last_to_first": ratio,
        # The same ratio with each tenth's seconds divided by the yardstick's at the time.
        "time_ratio_at_machine_speed": ratio / (samples[-1]["yardstick_seconds"] / samples[0]["yardstick_seconds"]),
        "rss_growth_beyond_memories_mib": (rss_growth - memory_growth) / 2**20,
        "disk_bytes": samples[-1]["disk_bytes"], "chain_full_bytes": full, "chain_delta_bytes": deltas,
        "disk_bytes_per_edit_after_first_tenth": disk_growth / max(1, edits - samples[0]["edits"]),
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edits", type=int, default=1000)
    parser.add_argument("--workspace-folder", type=Path, default=None, help="keep the workspace here")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT")
    args = parser.parse_args(argv)
    # The tiny model's matrices are too small to share among threads; one thread also keeps its
    # timings steady when other work shares the machine.
    torch.set_num_threads(1)
    if args.workspace_folder:
        args.workspace_folder.mkdir(parents=True, exist_ok=True)
        result = soak(args.edits, args.workspace_folder)
    else:
        with tempfile.TemporaryDirectory() as folder:
            result = soak(args.edits, Path(folder))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    ok = (result["integrity_check"] == "ok" and result["chain_rebuilds_ram_state"]
          and result["edits_in_chain"] == result["applied"] == args.edits)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
