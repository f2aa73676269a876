"""Measuring edits: the paper's teacher-forced Rel / Gen / Loc, and what a user reads when asking.

- Rel, Gen: teacher-forced token accuracy on the target (edit prompt, paraphrase), raw form.
- Loc: fraction of answer positions where the edited model's argmax equals the unedited model's.
- Live decoding, per form (raw prompt, or the model's chat template): greedy answers to a natural stop
  (inference.generate); an edit prompt or paraphrase passes when its answer states the target, an
  unrelated question when its answer is unchanged by the edits. Also which memory answered: the edit's
  own, for its prompt; a side memory at all, for an unrelated question.

Teacher forcing overstates what a user sees (wise-method.md section 6); both are reported side by side.
"""

from __future__ import annotations

import dataclasses
import re
import string
from dataclasses import dataclass, field
from typing import Literal

import torch

from wise_gui.core.edits import EditRequest
from wise_gui.core.inference import Answer, EditedModel, Route, TeacherForced
from wise_gui.core.tokens import QueryForm

_ARTICLES = re.compile(r"\b(a|an|the)\b")
QuestionKind = Literal["prompt", "paraphrase", "locality"]
TEACHER_FORCED_BATCH = 16
GENERATION_BATCH = 32  # on a 2-core CPU the evaluation takes 0.6x its time with 8 rows per decode


def normalize_answer(text: str) -> str:
    text = text.strip().splitlines()[0] if text.strip() else ""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def generation_matches(generated: str, target: str) -> bool:
    """The answer states the target: it starts with it or holds it as whole words (normalised)."""
    expected = normalize_answer(target)
    produced = normalize_answer(generated)
    return bool(expected) and (produced.startswith(expected) or f" {expected} " in f" {produced} ")


# ----------------------------------------------------------------------------------------------
# What is measured


@dataclass
class LiveScores:
    """Live decoding in one form: what a person asking that way reads."""

    prompt: float | None = None  # edit prompts whose answer states the target
    paraphrase: float | None = None  # paraphrases whose answer states the target
    locality: float | None = None  # unrelated questions whose answer the edits left unchanged
    routed_own: float | None = None  # edit prompts answered by the memory that holds their edit
    unrelated_to_side: float | None = None  # unrelated questions answered by a side memory


@dataclass
class Scores:
    """The measurements of one edit, or their means over many: the one shape that evaluation, benchmark
    rows and stored outcomes share."""

    rel: float | None = None
    gen: float | None = None
    loc: float | None = None
    portability: float | None = None
    ood: float | None = None
    perplexity: float | None = None  # of the target, clipped at 100 per sample (hallucination set)
    live: dict[str, LiveScores] = field(default_factory=dict)  # by form: "raw", "chat"

    @property
    def gen_success(self) -> float | None:
        """The edit prompt's raw-form answer states the target (the first version's generation success)."""
        raw = self.live.get("raw")
        return raw.prompt if raw is not None else None

    def to_dict(self) -> dict:
        values = {name: getattr(self, name) for name in ("rel", "gen", "loc", "portability", "ood", "perplexity")}
        values["gen_success"] = self.gen_success
        values["live"] = {form: dataclasses.asdict(live) for form, live in self.live.items()}
        return values

    @classmethod
    def from_dict(cls, values: dict) -> Scores:
        live = {form: LiveScores(**scores) for form, scores in (values.get("live") or {}).items()}
        return cls(**{name: values.get(name) for name in ("rel", "gen", "loc", "portability", "ood", "perplexity")},
                   live=live)


@dataclass(frozen=True)
class QuestionAnswer:
    """One question asked after an edit: the answers panel's row and the benchmark's per-edit record."""

    kind: QuestionKind
    form: QueryForm
    question: str
    expected: str  # the target; for a locality question the dataset's answer (may be empty)
    before: str | None  # the unedited model's answer, where it was asked for
    after: str
    route: Route
    passed: bool  # prompt, paraphrase: the target was generated; locality: the answer is unchanged

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["route"] = self.route.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict) -> QuestionAnswer:
        return cls(values["kind"], values["form"], values["question"], values.get("expected", ""),
                   values.get("before"), values.get("after", ""), Route.from_dict(values["route"]),
                   bool(values.get("passed")))


@dataclass
class EditEvaluation:
    prompt: str
    target: str
    scores: Scores
    answers: list[QuestionAnswer]

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "target": self.target, **self.scores.to_dict(),
                "answers": [a.to_dict() for a in self.answers]}


@dataclass
class Evaluation:
    mean: Scores
    edits: list[EditEvaluation]


# ----------------------------------------------------------------------------------------------
# Measuring


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def teacher_forced(model: EditedModel, prompts: list[str], targets: list[str], use_side_memory: bool = True
                   ) -> list[TeacherForced]:
    results = []
    for chunk in _batches(list(zip(prompts, targets)), TEACHER_FORCED_BATCH):
        results += model.teacher_forced([p for p, _ in chunk], [t for _, t in chunk], use_side_memory=use_side_memory)
    return results


def locality_agreement(model: EditedModel, prompts: list[str], answers: list[str]) -> list[float]:
    """Agreement of the edited model's argmax with the unedited model's on loc + " " + loc_ans."""
    before = teacher_forced(model, prompts, answers, use_side_memory=False)
    after = teacher_forced(model, prompts, answers)
    return [sum(int(a == b) for a, b in zip(x.predicted, y.predicted)) / max(len(y.predicted), 1)
            for x, y in zip(after, before)]


def answers(model: EditedModel, questions: list[str], form: QueryForm, use_side_memory: bool = True,
            cap: int | None = None) -> list[Answer]:
    results = []
    for chunk in _batches(questions, GENERATION_BATCH):
        kwargs = {"max_new_tokens": cap} if cap is not None else {}
        results += model.generate(chunk, form=form, use_side_memory=use_side_memory, **kwargs)
    return results


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _questions(request: EditRequest) -> list[tuple[QuestionKind, str, str]]:
    return ([("prompt", request.prompt, request.target)]
            + [("paraphrase", p, request.target) for p in request.paraphrases]
            + [("locality", c.prompt, c.answer) for c in request.locality])


@torch.no_grad()
def evaluate(model: EditedModel, requests: list[EditRequest], forms: tuple[QueryForm, ...] | None = None,
             generation: bool = True, perplexity: bool = False, edit_indices: list[int | None] | None = None,
             answers_before: bool = False, answer_cap: int | None = None) -> Evaluation:
    """Evaluate every request with the model's current edits (the paper's protocol: after the last edit).

    `forms`: the forms live decoding asks in (default: every form the model has). `edit_indices`: each
    request's position in the model's edit log (None: not in it), to check that its prompt reaches its
    own memory.
    `answers_before`: also record the unedited model's answer to the prompts and paraphrases."""
    forms = tuple(model.prompter.resolve(f) for f in (forms or model.forms))
    forms = tuple(dict.fromkeys(forms))
    prompts = [r.prompt for r in requests]
    targets = [r.target for r in requests]
    per_edit = [Scores() for _ in requests]
    rel = teacher_forced(model, prompts, targets)
    for scores, result in zip(per_edit, rel):
        scores.rel = result.accuracy
    _fill(per_edit, requests, lambda r: [(p, r.target) for p in r.paraphrases],
          lambda ps, ts: [x.accuracy for x in teacher_forced(model, ps, ts)], "gen")
    _fill(per_edit, requests, lambda r: [(c.prompt, c.answer) for c in r.locality if c.answer],
          lambda ps, ts: locality_agreement(model, ps, ts), "loc")
    _fill(per_edit, requests, lambda r: list(r.portability),
          lambda ps, ts: [x.accuracy for x in teacher_forced(model, ps, ts)], "portability")
    _fill(per_edit, requests, lambda r: list(r.ood), lambda ps, ts: [x.accuracy for x in teacher_forced(model, ps, ts)],
          "ood")
    if perplexity:
        for scores, request in zip(per_edit, requests):
            scores.perplexity = model.target_perplexity(request.prompt, request.target)
    recorded: list[list[QuestionAnswer]] = [[] for _ in requests]
    if generation:
        owners = [None if i is None else model.memory_of_edit(i) for i in edit_indices or [None] * len(requests)]
        for form in forms:
            _live(model, requests, form, per_edit, recorded, owners, answers_before, answer_cap)
    edits = [EditEvaluation(r.prompt, r.target, s, a) for r, s, a in zip(requests, per_edit, recorded)]
    return Evaluation(mean_scores(per_edit), edits)


def _fill(per_edit: list[Scores], requests: list[EditRequest], items_of, measure, name: str) -> None:
    """Measures every request's items in one batched call and sets each edit's mean under `name`."""
    items = [(i, p, t) for i, r in enumerate(requests) for p, t in items_of(r)]
    if not items:
        return
    values = measure([p for _, p, _ in items], [t for _, _, t in items])
    for index, scores in enumerate(per_edit):
        mine = [v for (i, _, _), v in zip(items, values) if i == index]
        if mine:
            setattr(scores, name, sum(mine) / len(mine))


def _live(model: EditedModel, requests: list[EditRequest], form: QueryForm, per_edit: list[Scores],
          recorded: list[list[QuestionAnswer]], owners: list[int | None], answers_before: bool,
          cap: int | None) -> None:
    asked = [(i, kind, q, expected) for i, r in enumerate(requests) for kind, q, expected in _questions(r)]
    after = answers(model, [q for _, _, q, _ in asked], form, cap=cap)
    needs_before = [n for n, (_, kind, _, _) in enumerate(asked) if answers_before or kind == "locality"]
    before_answers = answers(model, [asked[n][2] for n in needs_before], form, use_side_memory=False, cap=cap)
    before: dict[int, str] = {n: a.text for n, a in zip(needs_before, before_answers)}
    live = [LiveScores() for _ in requests]
    results: list[dict[str, list[float]]] = [{} for _ in requests]
    for n, ((i, kind, question, expected), answer) in enumerate(zip(asked, after)):
        if kind == "locality":
            passed = answer.text == before[n]
            results[i].setdefault("unrelated_to_side", []).append(float(answer.route.to_side_memory))
        else:
            passed = generation_matches(answer.text, expected)
            if kind == "prompt" and owners[i] is not None:
                results[i].setdefault("routed_own", []).append(float(answer.route.memory == owners[i]))
        results[i].setdefault(kind, []).append(float(passed))
        recorded[i].append(QuestionAnswer(kind, form, question, expected, before.get(n), answer.text, answer.route,
                                          passed))
    for scores, values, mine in zip(per_edit, results, live):
        for name, got in values.items():
            setattr(mine, name, sum(got) / len(got))
        scores.live[form] = mine


def mean_scores(per_edit: list[Scores]) -> Scores:
    """The mean of each measurement over the edits that have it (e.g. Gen over edits with paraphrases)."""
    def mean_of(getter) -> float | None:
        return _mean([v for v in (getter(s) for s in per_edit) if v is not None])

    mean = Scores(**{name: mean_of(lambda s, n=name: getattr(s, n))
                     for name in ("rel", "gen", "loc", "portability", "ood", "perplexity")})
    for form in dict.fromkeys(form for s in per_edit for form in s.live):
        in_form = [s.live[form] for s in per_edit if form in s.live]
        mean.live[form] = LiveScores(**{
            f.name: _mean([getattr(live, f.name) for live in in_form if getattr(live, f.name) is not None])
            for f in dataclasses.fields(LiveScores)})
    return mean

