"""How well the wise-index key gate separates an edit's paraphrases from unrelated questions, as the
number of memories grows: offline, on the base model alone (the edited layer's input does not depend
on the side memories, so every key and query feature is what a real run computes).

For each record: its key (the mean question feature over the editor's own edit rows, minus the mean
over unrelated text), and the features of its first paraphrase and first locality question in raw and
chat form. Then, for M = 100, 300, 1000 keys,
the fraction of locality questions whose best key similarity reaches the gate, and the fraction of
paraphrases whose own key is among the 8 nearest and reaches it, for the plain centred cosine and for
the cosine after the engine's `KeyWhitening` measured on the irrelevant pool (--samples, --rank,
--shrink, --forms). Features go to --features once (about 20 minutes here for 1,000 records); later runs read it.

    .venv/bin/python scripts/key_gate_study.py --features /tmp/key_features.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from wise_gui.core.wise.editor import WHITENING_RANK, WHITENING_SAMPLES, WHITENING_SHRINK
from wise_gui.core.wise.shards import KeyWhitening

DATA = Path(__file__).resolve().parents[2] / "shared/data/zsre"
CANDIDATES = 8


def dump_features(path: Path, limit: int) -> None:
    from wise_gui.core.datasets import irrelevant_samples, load_requests_from
    from wise_gui.core.models import load_model
    from wise_gui.core.wise.editor import WiseEditor
    from wise_gui.core.wise.presets import preset

    # The T = 1000 run's records and pool (docs/benchmarks.md section 8).
    requests = load_requests_from([DATA / "zsre_edit_dev.json", DATA / "zsre_train_1k.json"], limit=limit)
    pool = irrelevant_samples(DATA / "zsre_train_1k.json", start=263)
    editor = WiseEditor(load_model("default"), preset(), irrelevant_pool=pool)
    calibration = editor.prepare()
    prompter = editor.prompter

    def features(rows) -> torch.Tensor:
        return editor.question_features_of(rows).cpu()

    # As the editor keys an edit (EditTrainer.question_feature): every row of its groups counts once.
    keys = torch.stack([torch.cat([editor.batch_question_features(group.batch)
                                   for group in editor._edit_groups(r.prompt, r.target)]).mean(dim=0).cpu()
                        for r in requests])
    queries = {}
    for form in ("raw", "chat"):
        queries[f"para-{form}"] = features([prompter.question(r.paraphrases[0], form) for r in requests])
        queries[f"loc-{form}"] = features([prompter.question(r.locality[0].prompt, form) for r in requests])
        queries[f"pool-{form}"] = features([prompter.question(s, form) for s in pool])
    torch.save({"keys": keys, "queries": queries, "background": calibration.background.cpu()}, path)


def report(data: dict, name: str, transform, gates: tuple[float, ...]) -> None:
    keys, queries = data["keys"], data["queries"]

    def unit(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(transform(x - data["background"]), dim=-1)

    counts = sorted({count for count in (100, 300, 1000) if count < keys.shape[0]} | {keys.shape[0]})
    for count in counts:
        key_units, own = unit(keys[:count]), torch.arange(count)
        for gate in gates:
            cells = [f"{name} M={count} gate={gate}"]
            for form in ("raw", "chat"):
                best = (unit(queries[f"loc-{form}"][:count]) @ key_units.t()).max(dim=1).values
                cells.append(f"unrelated {form} {(best >= gate).float().mean():.3f}")
            for form in ("raw", "chat"):
                similarity = unit(queries[f"para-{form}"][:count]) @ key_units.t()
                own_similarity = similarity[own, own]
                rank = (similarity > own_similarity[:, None]).sum(dim=1)
                reached = (rank < CANDIDATES) & (own_similarity >= gate)
                cells.append(f"paraphrase {form} {reached.float().mean():.3f}")
            print("  ".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, required=True, help="feature file: written when missing")
    parser.add_argument("--limit", type=int, default=1000, help="records (dev 0..736, then train 0..262)")
    parser.add_argument("--shrink", type=float, default=WHITENING_SHRINK, help="whitening: weight of the mean variance added")
    parser.add_argument("--samples", type=int, default=WHITENING_SAMPLES, help="whitening: unrelated questions measured")
    parser.add_argument("--rank", type=int, default=WHITENING_RANK, help="whitening: leading directions kept")
    parser.add_argument("--forms", default="raw", help="whitening: the forms its questions are asked in (raw, chat or raw,chat)")
    args = parser.parse_args()
    if not args.features.exists():
        dump_features(args.features, args.limit)
    data = torch.load(args.features, weights_only=True)
    pool = torch.cat([data["queries"][f"pool-{form}"][: args.samples] for form in args.forms.split(",")])
    pool = pool - data["background"]
    report(data, "centred", lambda x: x, (0.4, 0.45, 0.48))
    whitening = KeyWhitening.measure(pool, args.shrink, args.rank)
    report(data, f"whitened ({args.forms} x {args.samples}, rank {args.rank}, shrink {args.shrink})", whitening,
           (0.25, 0.28, 0.30))


if __name__ == "__main__":
    main()
