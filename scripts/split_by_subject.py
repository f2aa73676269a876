"""The scores of a `wise-gui bench --json` file apart for edits whose subject the run also edits to
another target, for files written before `bench` reported the split itself (rows' `by_subject`).

    .venv/bin/python scripts/split_by_subject.py docs/bench/wise-index_zsre_T1000_pool263.json \
        --data ../shared/data/zsre/zsre_edit_dev.json ../shared/data/zsre/zsre_train_1k.json

`--data` (and `--start`) must be those of the run: each row's edits are its first n_edits records.
"""

from __future__ import annotations

import argparse
import json
import sys

from wise_gui.core.bench import SUBJECT_GROUPS, reedited_subjects, split_by_subject
from wise_gui.core.datasets import load_requests_from
from wise_gui.core.evaluation import Scores


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", help="rows written by `wise-gui bench --json`")
    parser.add_argument("--data", nargs="+", required=True, help="the run's dataset files, in its order")
    parser.add_argument("--start", type=int, default=0)
    args = parser.parse_args(argv)
    rows = json.loads(open(args.json, encoding="utf-8").read())
    rows = rows if isinstance(rows, list) else [rows]
    requests = load_requests_from(args.data, start=args.start, limit=max(r["n_edits"] for r in rows))
    print("| method | T | edits | n | Rel | Gen | Loc | generated paraphrase raw / chat |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        edited = requests[: row["n_edits"]]
        if [r.prompt.strip() for r in edited] != [e["prompt"].strip() for e in row["per_edit"]]:
            print(f"{args.json}: the rows' prompts are not those of --data from record {args.start}", file=sys.stderr)
            return 1
        groups = split_by_subject(edited, [Scores.from_dict(e) for e in row["per_edit"]])
        again = sum(reedited_subjects(edited))
        for name, scores in groups.items():
            count = again if name == SUBJECT_GROUPS[1] else len(edited) - again
            paraphrase = " / ".join(_fmt(scores.live[f].paraphrase, 2) if f in scores.live else "-" for f in ("raw", "chat"))
            print(f"| {row['method']} | {row['n_edits']} | {name} | {count} | {_fmt(scores.rel)} | {_fmt(scores.gen)} | "
                  f"{_fmt(scores.loc)} | {paraphrase} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
