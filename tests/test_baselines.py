"""FT-L and GRACE on the tiny random Llama: their edits, the interface evaluation uses, and a clean detach."""

from __future__ import annotations

import pytest
import torch
from tiny_model import requests_from, tiny_loaded

from wise_gui.core.baselines import Codebook, FineTuneLayer, FtSettings, Grace
from wise_gui.core.baselines.base import target_loss
from wise_gui.core.edits import EditRequest
from wise_gui.core.evaluation import evaluate
from wise_gui.core.inference import MAIN
from wise_gui.core.tokens import pad_id, pad_rows

LAYER = 3


def rows(method, prompts, answers):
    p = method.prompter
    return pad_rows([p.with_target(p.question(q), a) for q, a in zip(prompts, answers)], pad_id(method.tokenizer))


def logits_of(method, prompts, answers, use_edits=True):
    batch = rows(method, prompts, answers)
    with method._edits(use_edits, batch.score_mask, lock=False):
        return method._logits(batch)


def edit_loss(method, request) -> float:
    batch = rows(method, [request.prompt], [request.target])
    return float(target_loss(logits_of(method, [request.prompt], [request.target]), batch))


def plain_logits(loaded, method, prompts, answers):
    batch = rows(method, prompts, answers)
    return loaded.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


def test_ft_l_trains_the_layer_weight_in_place_and_puts_the_original_back(tokenizer, records):
    loaded = tiny_loaded(tokenizer=tokenizer)
    down = loaded.model.model.layers[LAYER].mlp.down_proj
    original = down.weight.detach().clone()
    method = FineTuneLayer(loaded, LAYER, FtSettings(lr=1e-2, n_iter=10, norm_constraint=5e-3))
    request = requests_from(records, 1)[0]
    loss_before = edit_loss(method, request)
    unedited = method.snapshot()

    outcome = method.apply_edit(request)
    change = (down.weight.detach() - original).abs()
    assert 1 <= outcome.iterations <= 10 and outcome.seconds > 0
    assert 0 < change.max() <= 5e-3 + 1e-6  # trained, within the L-infinity constraint
    assert edit_loss(method, request) < loss_before
    assert method.added_state_bytes() == 0 and method.overwrites_weights
    # Without the edits (Loc's reference) the model answers with the original weight, bit for bit.
    unrelated, answers = [r["loc"] for r in records[5:8]], [r["loc_ans"] for r in records[5:8]]
    bare = logits_of(method, unrelated, answers, use_edits=False)
    assert not torch.equal(down.weight.detach(), original)  # the edited weight is back in place after the pass

    method.restore(unedited)
    assert torch.equal(down.weight.detach(), original)
    method.apply_edit(request)
    method.detach()
    assert torch.equal(down.weight.detach(), original)
    assert loaded.model.model.layers[LAYER].mlp.down_proj is down
    assert torch.equal(plain_logits(loaded, method, unrelated, answers), bare)


def test_grace_answers_an_edited_prompt_from_its_codebook_and_leaves_far_prompts_bit_identical(tokenizer, records):
    loaded = tiny_loaded(tokenizer=tokenizer)
    down = loaded.model.model.layers[LAYER].mlp.down_proj
    method = Grace(loaded, LAYER)
    # One token in the tiny vocabulary: a single replacement vector cannot spell out a long answer on this
    # random 4-layer model (it can on a trained one), and the test is about the lookup.
    request = EditRequest(records[0]["src"], "movie", paraphrases=(records[0]["rephrase"],))
    assert len(tokenizer(" movie", add_special_tokens=False)["input_ids"]) == 1
    assert evaluate(method, [request]).mean.rel == 0.0

    method.apply_edit(request)
    assert len(method.codebook) == 1 and method.codebook.labels == ["movie"]
    assert method.added_state_bytes() == method.codebook.nbytes() > 0
    forced = method.teacher_forced([request.prompt], [request.target])[0]
    assert forced.predicted == forced.target and forced.route.memory == 0
    far = [r["loc"] for r in records[5:9]]
    answers = [r["loc_ans"] for r in records[5:9]]
    # In one batch: the edited prompt is looked up on its own last token, the far ones are left alone.
    generated = method.generate([request.prompt] + far, max_new_tokens=3, first_sentence_only=False)
    assert generated[0].text.startswith("movie")
    assert [a.text for a in generated[1:]] == [
        a.text for a in method.generate(far, max_new_tokens=3, use_side_memory=False, first_sentence_only=False)]
    results = method.teacher_forced(far, answers)
    assert [r.route.memory for r in results] == [MAIN] * len(far)
    edited = logits_of(method, far, answers)

    method.detach()
    assert loaded.model.model.layers[LAYER].mlp.down_proj is down
    assert torch.equal(plain_logits(loaded, method, far, answers), edited)


def test_grace_codebook_adds_expands_and_splits_as_published():
    book = Codebook.empty(2, 3, torch.float32, torch.device("cpu"))
    value = torch.zeros(3)

    def place(x, y, label):
        return book.place(torch.tensor([x, y]), label, eps_init=1.0, initial_value=value)

    assert place(0.0, 0.0, "a") == 0  # empty codebook: a new key with radius eps_init
    assert place(5.0, 0.0, "b") == 1  # 5 > eps_init + 1: too far from key 0, a new key
    assert place(1.5, 0.0, "a") == 0  # within reach, same answer: key 0's radius grows to cover it
    assert book.radii.tolist() == [1.5, 1.0]
    assert place(0.0, 1.2, "c") == 2  # within reach, another answer: split, the two balls only touch
    assert book.radii.tolist() == pytest.approx([0.6, 1.0, 0.6])
    assert place(5.0, 0.0, "d") == 1  # the same key with a new answer: the newer edit takes it over
    assert book.labels == ["a", "d", "c"] and len(book) == 3
    snapshot = book.clone()
    place(9.0, 9.0, "e")
    assert len(snapshot) == 3 and len(book) == 4
