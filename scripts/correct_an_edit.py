"""Correcting an applied fact: one ZsRE edit, another, then the first question again with a new target,
on the default model and preset; prints what the model answers to the question and its paraphrase, raw
and through the chat template, and which memory answers (the correction's is the last, memory 2).

    .venv/bin/python scripts/correct_an_edit.py --data ../shared/data/zsre/zsre_edit_dev.json
"""

from __future__ import annotations

import argparse
import json

from wise_gui.core.edits import EditRequest
from wise_gui.core.models import load_model
from wise_gui.core.wise.editor import WiseEditor
from wise_gui.core.wise.presets import preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a ZsRE JSON file; its records 0 and 1 are edited")
    parser.add_argument("--correction", default="Stanley Kubrick", help="the new target of record 0's question")
    args = parser.parse_args()
    first, second = json.loads(open(args.data).read())[:2]
    editor = WiseEditor(load_model(), preset())
    for prompt, target in ((first["src"], first["alt"]), (second["src"], second["alt"]), (first["src"], args.correction)):
        editor.apply_edit(EditRequest(prompt, target))
        print(f"applied: {prompt} -> {target}")
    for form in ("chat", "raw"):
        for question in (first["src"], first["rephrase"]):
            answer = editor.generate([question], form=form)[0].text.strip()
            memory = editor.route([question], form=form)[0].route.memory
            print(f"{form} | {question} | {answer[:80]} | memory {memory}")


if __name__ == "__main__":
    main()
