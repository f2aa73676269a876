"""The WISE engine on a tiny random Llama: edits stick and stay, routing, shards, merging, rollback,
the indexed and MEMOIR layouts, chat-form questions, bfloat16, the state object and its deltas."""

from __future__ import annotations

import pytest
import torch
from tiny_model import TINY_SETTINGS, requests_from, tiny_loaded

from wise_gui.core.edits import EditRequest
from wise_gui.core.evaluation import evaluate
from wise_gui.core.inference import MAIN
from wise_gui.core.tokens import pad_id, pad_rows
from wise_gui.core.wise import editor as editor_module
from wise_gui.core.wise.editor import InvalidEdit, WiseEditor
from wise_gui.core.wise.merge import linear_merge, ties_merge, trim_by_magnitude
from wise_gui.core.wise.settings import SettingsError, WiseSettings
from wise_gui.core.wise.shards import KeyWhitening, RoutingRule, ShardMemories, SideMemory
from wise_gui.core.wise.state import apply_state_delta, state_delta
from wise_gui.core.wise.training import CapturedForward, EditTrainer, target_cross_entropy

# A chat template of the ChatML kind SmolLM2 uses, for a tokenizer built in the test.
CHAT_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                 "{{ 'system: be helpful\n' }}{% endif %}{{ message['role'] + ': ' + message['content'] + '\n' }}"
                 "{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")


def make_editor(tokenizer, **changes) -> WiseEditor:
    return WiseEditor(tiny_loaded(tokenizer=tokenizer), TINY_SETTINGS.replace(**changes))


def memories_of(editor):
    memories = editor.memories
    return memories.merged + memories.saved + [memories.shard]


def state_tensors(editor):
    return [m.weight.clone() for m in memories_of(editor)]


# Layer 1 of 4 has layers above it (the last of them runs its MLP at the target positions only on
# Llama); layer 3 has none; GPT-2 runs every layer above whole.
@pytest.mark.parametrize("family, layer", [("llama", 1), ("llama", 3), ("gpt2", 1)])
def test_cached_and_full_forward_give_the_same_loss_and_gradient(tokenizer, records, family, layer):
    editor = WiseEditor(tiny_loaded(tokenizer=tokenizer, family=family), TINY_SETTINGS.replace(layer=layer))
    # Move the shard away from W first so the comparison is not at a trivial point.
    editor.apply_edit(requests_from(records, 1)[0])
    groups = editor._edit_groups(records[1]["src"], records[1]["alt"])
    irrelevant = editor._irrelevant_batches(editor.irrelevant_pool[:3])
    results = []
    for full in (False, True):
        trainer = EditTrainer(editor.arch, editor.layer, groups, irrelevant, editor.margins(), full_forward=full)
        weight = editor.memories.shard.weight.detach().clone().requires_grad_(True)
        with editor.layer.through(weight):
            ce, margin, edit_scores, irrelevant_scores = trainer.losses(weight)
        (grad,) = torch.autograd.grad(ce + margin, weight)
        results.append((ce.detach(), margin.detach(), edit_scores.detach(), irrelevant_scores.detach(), grad))
    (ce_c, m_c, s_c, i_c, g_c), (ce_f, m_f, s_f, i_f, g_f) = results
    assert torch.allclose(ce_c, ce_f, atol=1e-5)
    assert torch.allclose(m_c, m_f, atol=1e-5)
    assert torch.allclose(s_c, s_f, atol=1e-5)
    assert torch.allclose(i_c, i_f, atol=1e-5)
    assert g_c.abs().max() > 0
    assert torch.allclose(g_c, g_f, atol=1e-5, rtol=1e-4)


def test_the_fused_target_loss_matches_torch_cross_entropy_in_value_and_gradient():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=True).requires_grad_(False)
    hidden = torch.randn(7, 16, requires_grad=True)
    targets = torch.tensor([3, 0, 49, 3, 17, 8, 21])
    row_weights = torch.rand(7)
    losses, predicted = target_cross_entropy(head, hidden, targets)
    (grad,) = torch.autograd.grad((losses * row_weights).sum(), hidden)
    reference = torch.nn.functional.cross_entropy(head(hidden), targets, reduction="none")
    (reference_grad,) = torch.autograd.grad((reference * row_weights).sum(), hidden)
    assert torch.allclose(losses, reference, atol=1e-6)
    assert torch.allclose(grad, reference_grad, atol=1e-6)
    assert predicted.tolist() == (head(hidden).argmax(-1) == targets).tolist()


def test_the_bfloat16_head_gives_the_loss_and_gradient_to_bfloat16_precision_in_float32():
    torch.manual_seed(0)
    head = torch.nn.Linear(64, 500, bias=False).requires_grad_(False)
    hidden = torch.randn(9, 64, requires_grad=True)
    targets = torch.randint(0, 500, (9,))
    exact, _ = target_cross_entropy(head, hidden, targets)
    (exact_grad,) = torch.autograd.grad(exact.sum(), hidden)
    rounded, _ = target_cross_entropy(head, hidden, targets, head.weight.bfloat16())
    (rounded_grad,) = torch.autograd.grad(rounded.sum(), hidden)
    assert rounded.dtype == rounded_grad.dtype == torch.float32
    assert not torch.equal(rounded, exact)  # the products did run in bfloat16
    assert torch.allclose(rounded, exact, rtol=2e-2, atol=2e-2)
    assert torch.allclose(rounded_grad, exact_grad, rtol=5e-2, atol=2e-2)


def test_an_edit_trained_with_the_bfloat16_head_sticks_and_the_head_is_copied_once(tokenizer, records):
    editor = WiseEditor(tiny_loaded(tokenizer=tokenizer), TINY_SETTINGS.replace(head_bfloat16=True))
    requests = requests_from(records, 2)
    for request in requests:
        editor.apply_edit(request)
    after = evaluate(editor, requests, edit_indices=[0, 1]).mean
    assert after.rel == 1.0 and after.gen_success == 1.0
    (copy,) = editor.arch._head_copies.values()  # made by the first edit's training, kept for the next
    assert copy.dtype == torch.bfloat16 and editor.arch.head_weight(torch.bfloat16) is copy
    assert editor.arch.lm_head.weight.dtype == torch.float32  # the model itself is untouched


@pytest.mark.parametrize("layer", [1, 3])
def test_a_capturing_pass_stops_before_the_last_layer_and_the_lm_head(tokenizer, records, layer):
    editor = WiseEditor(tiny_loaded(tokenizer=tokenizer), TINY_SETTINGS.replace(layer=layer))
    batch = editor._edit_groups(records[0]["src"], records[0]["alt"])[0].batch
    calls = []
    hooks = [module.register_forward_hook(lambda m, a, out, name=name: calls.append(name))
             for name, module in (("head", editor.arch.lm_head), ("last layer", editor.arch.layers[-1]))]
    try:
        captured = CapturedForward(editor.arch, editor.layer, batch, editor.layer.weight.device)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == []
    assert captured.down_input.shape[:2] == batch.input_ids.shape
    assert len(captured.upper_calls) == 3 - layer  # the layers above the edited one, last included


def test_one_edit_sticks_and_is_generated(tokenizer, records):
    editor = make_editor(tokenizer)
    request = requests_from(records, 1)[0]
    before = evaluate(editor, [request], generation=False).mean
    outcome = editor.apply_edit(request)
    after = evaluate(editor, [request], edit_indices=[0]).mean
    assert before.rel < 1.0
    assert after.rel == 1.0
    assert after.gen_success == 1.0 and after.live["raw"].routed_own == 1.0
    assert outcome.edit_score > outcome.threshold and outcome.seconds > 0
    assert editor.route([request.prompt])[0].to_side_memory


def test_stop_when_learnt_ends_the_edit_early_and_it_still_holds(tokenizer, records):
    request = requests_from(records, 1)[0]
    full = make_editor(tokenizer).apply_edit(request)
    iterations = {}
    for settle in (0, 3):
        editor = make_editor(tokenizer, stop_when_learnt=True, settle_steps=settle)
        iterations[settle] = editor.apply_edit(request).iterations
        assert evaluate(editor, [request], generation=False).mean.rel == 1.0
    # The settle steps run on after the edit is learnt (more if it stops being learnt meanwhile).
    assert iterations[0] + 3 <= iterations[3] < full.iterations


def test_twenty_sequential_edits_all_still_hold_at_the_end(tokenizer, records):
    # Lifelong editing: whatever an edit achieved when it was applied, 19 later edits take nothing
    # from it. (How much a 4-layer random model can learn of one edit is a separate matter: targets of
    # up to 14 tokens; 15 of these 20 are fully learnt, the others mostly.)
    editor = make_editor(tokenizer)
    requests = requests_from(records, 20)
    when_applied = []
    for request in requests:
        editor.apply_edit(request)
        when_applied.append(evaluate(editor, [request], generation=False).edits[0].scores.rel)
    at_the_end = [edit.scores.rel for edit in evaluate(editor, requests, generation=False).edits]
    assert at_the_end == when_applied
    assert sum(value == 1.0 for value in at_the_end) >= 15 and sum(at_the_end) / 20 >= 0.9, at_the_end
    decisions = editor.route([r.prompt for r in requests])
    # Records 4 and 5 share their answer ("New Jersey"); prompt 5 goes to memory 4, which gives it.
    assert sum(d.route.memory == i for i, d in enumerate(decisions)) >= 19


def test_unrelated_prompts_routed_to_main_give_bit_identical_logits(tokenizer, records):
    editor = make_editor(tokenizer)
    for request in requests_from(records, 3):
        editor.apply_edit(request)
    unrelated = [r["loc"] for r in records[3:9]]
    answers = [r["loc_ans"] for r in records[3:9]]
    main_rows = [i for i, d in enumerate(editor.route(unrelated)) if d.route.memory == MAIN]
    assert len(main_rows) >= 4
    p = editor.prompter
    batch = pad_rows([p.with_target(p.question(q), a) for q, a in zip(unrelated, answers)], pad_id(tokenizer))
    with editor.layer.routed(batch.score_mask):
        edited_logits = editor._logits(batch)
    editor.detach()  # the plain model, original down projection back in place
    plain_logits = editor.loaded.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert torch.equal(edited_logits[main_rows], plain_logits[main_rows])


def test_mixed_batch_routes_each_sequence_and_ignores_padding(tokenizer, records):
    editor = make_editor(tokenizer)
    requests = requests_from(records, 2)
    for request in requests:
        editor.apply_edit(request)
    mixed = [requests[0].prompt, records[5]["loc"], requests[1].prompt, "nq question: who wrote the song let it be"]
    together = editor.route(mixed)
    alone = [editor.route([p])[0] for p in mixed]
    assert [d.to_side_memory for d in together] == [True, False, True, False]
    for batched, single in zip(together, alone):
        assert batched.route.memory == single.route.memory
        assert batched.route.score == pytest.approx(single.route.score, abs=1e-4)


def test_generation_routes_in_its_own_prefill_and_keeps_the_route_for_every_token(tokenizer, records):
    editor = make_editor(tokenizer)
    request = requests_from(records, 1)[0]
    editor.apply_edit(request)
    unrelated = next(r["loc"] for r in records[1:] if editor.route([r["loc"]])[0].route.memory == MAIN)
    routed_before = editor.layer.memory_projections
    outputs = []
    hook = editor.layer.register_forward_hook(lambda module, args, out: outputs.append(out.shape[1]))
    answers = editor.generate([request.prompt, unrelated], max_new_tokens=4, first_sentence_only=False)
    hook.remove()
    # One pass over the prompts (the prefill) routes; the generated tokens reuse its decision.
    assert outputs[0] > 1 and all(length == 1 for length in outputs[1:]) and len(outputs) >= 4
    assert editor.layer.memory_projections - routed_before == 1
    assert answers[0].route.to_side_memory and not answers[1].route.to_side_memory
    assert answers[0].text.startswith(request.target.split()[0])


def test_ties_merge_matches_a_hand_computation():
    base = torch.zeros(2, 3)
    a = torch.tensor([[1.0, -2.0, 0.0], [0.5, 0.0, 3.0]])
    b = torch.tensor([[3.0, 1.0, 0.0], [-0.1, 0.0, 1.0]])
    # density 1.0: no trimming. Signs: col sums decide; agreeing entries averaged.
    merged = ties_merge(base, [a, b], density=1.0)
    expected = torch.tensor([[2.0, -2.0, 0.0], [0.5, 0.0, 2.0]])
    assert torch.allclose(merged, expected)
    # density 0.5 keeps the 3 largest magnitudes of each task vector.
    assert torch.equal(trim_by_magnitude(a, 0.5), torch.tensor([[1.0, -2.0, 0.0], [0.0, 0.0, 3.0]]))
    merged_trimmed = ties_merge(base, [a, b], density=0.5)
    # a keeps {1,-2,3}, b keeps {3,1,1}; column 1: -2 vs +1 -> elected sign -, only a's -2 agrees.
    assert torch.allclose(merged_trimmed, torch.tensor([[2.0, -2.0, 0.0], [0.0, 0.0, 2.0]]))
    assert torch.allclose(linear_merge(base, [a, b]), (a + b) / 2)


def test_a_finished_memory_is_kept_compact_rebuilt_exactly_and_answers_without_rebuilding(tokenizer, records):
    base = torch.randn(64, 128)
    weight = base.clone()
    weight.view(-1)[torch.randperm(weight.numel())[:800]] += torch.randn(800)
    memory = SideMemory(weight.clone(), kind="merged", memory_id=1)
    memory.compact(base)
    assert memory.nbytes < weight.nbytes / 5
    assert torch.equal(memory.weight, weight)
    editor = make_editor(tokenizer, mask_ratio=0.2)  # and the editor compacts what it finishes
    editor.apply_edit(requests_from(records, 1)[0])
    assert editor.memories.merged[0].nbytes < 0.5 * editor.layer.weight.nbytes
    # Few changed entries: the output is W a + (W' - W) a, equal to projecting through the rebuilt W'.
    x = torch.randn(2, 5, 128)
    main = torch.nn.functional.linear(x, base)
    layer = editor.layer
    assert torch.allclose(memory.output(layer, x, main), torch.nn.functional.linear(x, weight), atol=1e-5)


def test_shards_roll_over_and_merge_with_ties(tokenizer, records):
    editor = make_editor(tokenizer, method="wise-merge", save_freq=2, merge_freq=4)
    requests = requests_from(records, 4)
    first_seed = editor.memories.shard.mask_seed
    editor.apply_edit(requests[0])
    outcome = editor.apply_edit(requests[1])
    assert outcome.shard_full and not outcome.merged
    assert len(editor.memories.saved) == 1 and editor.memories.shard.mask_seed != first_seed
    assert torch.equal(editor.memories.shard.weight, editor.layer.weight)  # the new shard starts from W
    editor.apply_edit(requests[2])
    saved = [editor.memories.saved[0].weight.clone()]
    snapshot = editor.snapshot()
    outcome = editor.apply_edit(requests[3])
    assert outcome.merged
    status = editor.status()
    assert status.merged_memories == [4] and status.saved_shards == [] and status.merge_events == [4]
    merged_weight = editor.memories.merged[0].weight
    # Recompute by hand from the two full shards: the second one is what edit 4 trained.
    editor.restore(snapshot)
    editor.update_settings(editor.settings.replace(merge_freq=10_000))
    editor.apply_edit(requests[3])
    shards = saved + [editor.memories.saved[1].weight]
    expected = ties_merge(editor.layer.weight, shards, density=TINY_SETTINGS.ties_density)
    assert torch.allclose(merged_weight, expected)


def test_retrieve_routes_each_prompt_to_the_memory_that_holds_it(tokenizer, records):
    editor = make_editor(tokenizer, method="wise-retrieve", save_freq=1, merge_freq=1)
    requests = requests_from(records, 3)
    for request in requests:
        editor.apply_edit(request)
    assert len(editor.memories.merged) == 3
    decisions = editor.route([r.prompt for r in requests])
    assert [d.route.memory for d in decisions] == [0, 1, 2]
    assert [editor.memory_of_edit(i) for i in range(3)] == [0, 1, 2]
    thresholds = [float(t) for t in editor.memories.thresholds()]
    assert len(set(thresholds)) == 3  # each memory has its own threshold


def test_closing_the_edit_between_steps_restores_the_exact_state(tokenizer, records):
    editor = make_editor(tokenizer)
    requests = requests_from(records, 2)
    editor.apply_edit(requests[0])
    before = state_tensors(editor)
    steps = []
    generator = editor.apply(requests[1])
    for event in generator:
        steps.append(event)
        if len(steps) == 3:
            generator.close()  # a cancel
            break
    assert len(steps) == 3
    after = state_tensors(editor)
    assert len(before) == len(after) and all(torch.equal(x, y) for x, y in zip(before, after))
    assert editor.state.total_edits == 1 and len(editor.edit_log) == 1


def test_every_edit_applied_or_cancelled_hands_the_freed_memory_back(tokenizer, records, monkeypatch):
    editor = make_editor(tokenizer)
    released = []
    monkeypatch.setattr(editor_module, "release_free_memory", lambda: released.append(len(editor.edit_log)))
    requests = requests_from(records, 2)
    editor.apply_edit(requests[0])
    generator = editor.apply(requests[1])
    next(generator)
    generator.close()  # a cancel
    assert released == [1, 1]


def test_snapshot_and_restore_roll_back_whole_edits(tokenizer, records):
    editor = make_editor(tokenizer, method="wise-merge", save_freq=2, merge_freq=2)
    requests = requests_from(records, 3)
    editor.apply_edit(requests[0])
    snapshot = editor.snapshot()
    before = state_tensors(editor)
    editor.apply_edit(requests[1])
    editor.apply_edit(requests[2])
    assert editor.memories.merged
    editor.restore(snapshot)
    assert all(torch.equal(x, y) for x, y in zip(before, state_tensors(editor)))
    assert editor.memories.merged == [] and editor.state.total_edits == 1


def test_an_empty_edit_is_refused_and_changes_nothing(tokenizer):
    editor = make_editor(tokenizer)
    before = state_tensors(editor)
    with pytest.raises(InvalidEdit, match="target is empty"):
        editor.apply_edit(EditRequest("Who wrote Hamlet?", "  "))
    assert all(torch.equal(x, y) for x, y in zip(before, state_tensors(editor)))


def test_gpt2_family_is_supported(tokenizer, records):
    editor = WiseEditor(tiny_loaded(tokenizer=tokenizer, family="gpt2"), TINY_SETTINGS.replace(layer=2, n_iter=5))
    assert editor.module_name == "transformer.h.2.mlp.c_proj"
    editor.apply_edit(requests_from(records, 1)[0])
    assert editor.state.total_edits == 1


# ----------------------------------------------------------------------------------------------
# Settings check themselves


@pytest.mark.parametrize("changes, message", [
    ({"merge_method": "tie"}, "merge_method must be one of 'ties', 'linear', not 'tie'"),
    ({"margin_scale": "relativ"}, "margin_scale must be one of"),
    ({"mask_ratio": 0.0}, "mask_ratio must be above 0"),
    ({"n_iter": 2.5}, "n_iter must be a whole number"),
    ({"stop_when_learnt": 1}, "stop_when_learnt must be true or false"),
    ({"act_ratio": -1.0}, "act_ratio must be above 0"),
])
def test_bad_settings_are_refused_when_made_with_the_field_named(changes, message):
    with pytest.raises(SettingsError, match=message):
        WiseSettings(**changes)
    with pytest.raises(SettingsError, match="Unknown WISE settings: margin_scael"):
        WiseSettings.from_dict({"margin_scael": "relative"})
    assert WiseSettings.from_dict({"retrieve": True}).method == "wise-retrieve"  # first-format settings
    assert "activation score" in WiseSettings.field_help()["alpha"]
    assert WiseSettings.choices("merge_method") == ("ties", "linear") and WiseSettings.choices("lr") is None


# ----------------------------------------------------------------------------------------------
# Many memories: an index, sparse memories


def _synthetic_memories(count: int, inputs: int = 128, outputs: int = 64, candidates: int = 4):
    """`count` one-edit memories, each a few random changed entries and a random key."""
    torch.manual_seed(0)
    base = torch.randn(outputs, inputs) * 0.05
    memories = []
    for i in range(count):
        weight = base.clone()
        weight.view(-1)[torch.randperm(base.numel())[:40]] += torch.randn(40)
        memory = SideMemory(weight, "merged", i + 1, [i], [1.0], keys=torch.randn(1, inputs))
        memory.compact(base)
        memories.append(memory)
    layout = ShardMemories(SideMemory(base.clone(), "shard", count + 1), merged=memories,
                           rule=RoutingRule(act_ratio=0.5, shared_threshold=False, candidates=candidates),
                           background=torch.zeros(inputs))
    return base, layout


def test_with_hundreds_of_memories_only_the_nearest_keys_are_scored(tokenizer):
    base, layout = _synthetic_memories(300)
    layer = make_editor(tokenizer).layer
    layer.memories = layout
    target = layout.merged[123]
    # A question whose mean input is memory 123's key: that memory is among the few scored.
    x = target.keys[0].expand(1, 6, -1).clone()
    main = torch.nn.functional.linear(x, base)
    info = layout.route(layer, x, main, torch.ones(1, 6, dtype=torch.bool))
    assert info.scored == 4  # projections computed: the candidates, not the 300 memories
    assert 123 in layout.candidates(layout.routing(), x, torch.ones(1, 6, dtype=torch.bool))[0].tolist()
    layout.rule.candidates = 0
    assert layout.route(layer, x, main, None).scored == 300  # every memory, without the index


def test_the_routing_index_follows_memories_appended_and_replaced():
    """The index of keys and thresholds is extended as memories are added, not rebuilt: after appends,
    a merge that replaces the list, and the shard taking an edit, it matches one built from scratch."""
    _, layout = _synthetic_memories(40)
    memories = list(layout.merged)

    def fresh():
        return ShardMemories(layout.shard, list(layout.saved), list(layout.merged), rule=layout.rule,
                             background=layout.background).routing()

    def assert_matches_fresh():
        got, want = layout.routing(), fresh()
        assert got.memories == want.memories
        assert torch.equal(got.min_scores, want.min_scores)
        assert torch.equal(got.keys, want.keys) and torch.equal(got.owners, want.owners)

    layout.merged = memories[:10]
    assert_matches_fresh()
    for count in range(11, 41):  # one memory per edit, as wise-index adds them
        layout.merged = memories[:count]
        assert_matches_fresh()
    layout.merged = memories[5:25]  # a merge or a restore: another list
    assert_matches_fresh()
    layout.shard.edit_ids.append(99)  # the shard being filled changes in place
    layout.shard.edit_scores.append(0.25)
    layout.shard.keys = torch.randn(1, 128)
    assert_matches_fresh()
    assert layout.routing().memories[-1] is layout.shard and float(layout.routing().min_scores[-1]) == 0.25


def test_of_two_memories_above_threshold_the_one_with_the_nearest_key_answers(tokenizer):
    """A twin question (the same fact edited twice, asked in other words) lights up its twin's memory as
    strongly as its own: with a key index the nearest key decides, not the larger activation score."""
    torch.manual_seed(0)
    inputs, outputs = 128, 64
    base = torch.randn(outputs, inputs) * 0.05
    query = torch.randn(inputs)
    own = SideMemory(base + 0.5 * torch.randn(outputs, inputs), "merged", 1, [0], [1.0], keys=query.unsqueeze(0))
    twin = SideMemory(base + 2.0 * torch.randn(outputs, inputs), "merged", 2, [1], [1.0],
                      keys=(query + 0.8 * torch.randn(inputs)).unsqueeze(0))
    layout = ShardMemories(SideMemory(base.clone(), "shard", 3), merged=[own, twin],
                           rule=RoutingRule(act_ratio=0.5, shared_threshold=False, candidates=2),
                           background=torch.zeros(inputs))
    layer = make_editor(tokenizer).layer
    layer.memories = layout
    x = query.expand(1, 6, -1).clone()
    main = torch.nn.functional.linear(x, base)
    mask = torch.ones(1, 6, dtype=torch.bool)
    routed = layout.route(layer, x, main, mask)
    assert routed.choice.tolist() == [0]
    layout.rule.candidates = 0  # no index: the larger activation score (the twin's) wins
    unindexed = layout.route(layer, x, main, mask)
    assert unindexed.choice.tolist() == [1] and unindexed.score[0] > routed.score[0]


def test_whitened_keys_let_paraphrases_through_the_gate_and_keep_unrelated_questions_out():
    """Questions share a few large, varying directions (their form, their template); what tells two
    apart is small. Against the plain cosine, an unrelated question often looks as near a key as a
    paraphrase does; after whitening with unrelated questions' spread it does not."""
    torch.manual_seed(0)
    inputs, memories, gate = 128, 200, 0.5
    shared = torch.randn(6, inputs) * 2.0  # 96% of the variance

    def questions(count: int, own: torch.Tensor | None = None) -> torch.Tensor:
        own = torch.randn(count, inputs) if own is None else own
        return torch.randn(count, 6) @ shared + own

    distinct = torch.randn(memories, inputs)
    keys = questions(memories, distinct)
    paraphrases = questions(memories, distinct + 0.2 * torch.randn(memories, inputs))
    unrelated = questions(memories)
    layout = ShardMemories(SideMemory(torch.zeros(8, inputs), "shard", memories + 1),
                           merged=[SideMemory(torch.zeros(8, inputs), "merged", i + 1, [i], [1.0], keys=keys[i:i + 1])
                                   for i in range(memories)],
                           rule=RoutingRule(candidates=4, key_similarity=gate), background=torch.zeros(inputs))

    def reached(features: torch.Tensor) -> torch.Tensor:
        """[count]: the nearest candidate each question is scored against (MAIN: none passes the gate)."""
        return layout.candidates(layout.routing(), features.unsqueeze(1), None)[:, 0]

    own = torch.arange(memories)
    plain_unrelated = (reached(unrelated) != MAIN).float().mean()
    layout.whitening = KeyWhitening.measure(questions(600), shrink=0.1, rank=32)
    assert layout.whitening.nbytes == (inputs * 32 + 32) * 4  # fixed: whatever the number of memories
    assert plain_unrelated > 0.5
    assert (reached(unrelated) != MAIN).float().mean() <= 0.02
    assert (reached(paraphrases) == own).float().mean() >= 0.95


def test_undo_to_before_whitened_keys_were_switched_on_keeps_the_whitening(tokenizer, records, monkeypatch):
    """Measuring the whitening takes the first edit about a minute on SmolLM2: an undo past the point
    where the setting was switched on must not pay it again."""
    editor = make_editor(tokenizer, n_iter=10, mask_kind="columns", mask_ratio=0.2, route_candidates=2)
    editor.apply_edit(requests_from(records, 1)[0])
    before = editor.state_dict()
    measured = []
    measure = editor._measure_whitening
    monkeypatch.setattr(editor, "_measure_whitening", lambda: measured.append(1) or measure())
    editor.update_settings(editor.settings.replace(key_whitening=True, key_similarity=0.2))
    whitening = editor.memories.whitening
    assert measured == [1] and whitening is not None
    editor.load_state_dict(before)  # the state saved before the switch, as an undo restores it
    assert measured == [1] and editor.memories.whitening is whitening
    assert "calibration.whitening.directions" in editor.state_dict().tensors


def test_an_indexed_sparse_edit_holds_and_is_stored_as_few_entries(tokenizer, records):
    editor = make_editor(tokenizer, mask_kind="columns", mask_ratio=0.2, route_candidates=2)
    requests = requests_from(records, 4)
    for request in requests:
        editor.apply_edit(request)
    memory = editor.memories.merged[0]
    # Only the fifth of the inputs (26 of 128 columns) the edit's question stands out on were changed.
    changed_columns = (memory.weight != editor.layer.weight).any(dim=0).sum()
    assert 0 < changed_columns <= round(0.2 * 128)
    inputs, change = memory.columns  # kept as those columns' change, in float16
    assert inputs.numel() == changed_columns and change.shape == (64, changed_columns) and change.dtype == torch.float16
    assert memory.nbytes < 0.25 * editor.layer.weight.nbytes
    before = editor.layer.memory_projections
    decisions = editor.route([r.prompt for r in requests])
    assert [d.route.memory for d in decisions] == [0, 1, 2, 3]
    assert editor.layer.memory_projections - before <= 4 * 2  # two candidates per question at most


def test_the_same_question_edited_again_is_answered_by_its_latest_edit(tokenizer, records):
    """Correcting an applied fact (the window's advice: duplicate the edit, change the target, apply)
    leaves two memories with the same key; the one applied last must answer."""
    editor = make_editor(tokenizer, mask_kind="columns", mask_ratio=0.2, route_candidates=2)
    first, other = requests_from(records, 2)
    corrected = EditRequest(first.prompt, other.target)
    for request in (first, other, corrected):
        editor.apply_edit(request)
    routes = [d.route.memory for d in editor.route([first.prompt, other.prompt, first.paraphrases[0]])]
    assert routes[:2] == [2, 1] and routes[2] != 0  # the paraphrase, if routed, to the correction as well


# ----------------------------------------------------------------------------------------------
# MEMOIR


def test_a_memoir_edit_writes_only_its_mask_columns_and_routes_by_overlap(tokenizer, records):
    editor = make_editor(tokenizer, method="memoir", mask_ratio=0.25, n_iter=60)
    requests = requests_from(records, 3)
    previous = editor.memories.residual.clone()
    for index, request in enumerate(requests):
        editor.apply_edit(request)
        memories = editor.memories
        columns = memories.masks[index]
        assert columns.numel() == round(0.25 * 128)
        written = (memories.residual != previous).any(dim=0).nonzero().flatten()
        assert set(written.tolist()) <= set(columns.tolist()) and written.numel() > 0
        previous = memories.residual.clone()
    decisions = editor.route([r.prompt for r in requests])
    assert all(d.route.kind == "residual" and d.route.score >= d.route.threshold for d in decisions)
    assert sum(d.route.memory == i for i, d in enumerate(decisions)) >= 2
    # The overlap is the share of the query's mask in the stored one: 1 against its own mask.
    assert decisions[0].route.score > 0.4 and evaluate(editor, requests[:1], generation=False).mean.rel >= 0.5


# ----------------------------------------------------------------------------------------------
# The question as a user asks it: through the chat template


@pytest.fixture
def chat_tokenizer(tokenizer):
    chat = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, unk_token="<unk>", pad_token="<pad>",
                               eos_token="<eos>")
    chat.chat_template = CHAT_TEMPLATE
    return chat


def test_an_edit_learnt_in_raw_and_chat_form_routes_and_answers_in_chat_form(chat_tokenizer, records):
    # Half of the learning goes to each form: twice the steps the raw-only tests take.
    editor = WiseEditor(tiny_loaded(tokenizer=chat_tokenizer), TINY_SETTINGS.replace(chat_form=True, n_iter=200))
    assert editor.forms == ("raw", "chat")
    request = requests_from(records, 1)[0]
    editor.apply_edit(request)
    for form in ("raw", "chat"):
        decision = editor.route([request.prompt], form)[0]
        assert decision.route.memory == 0, form
        answer = editor.generate([request.prompt], form=form)[0]
        assert answer.route.memory == 0 and answer.text.startswith(request.target.split()[0]), (form, answer)


def test_template_tokens_do_not_count_for_the_score(chat_tokenizer, records):
    editor = WiseEditor(tiny_loaded(tokenizer=chat_tokenizer), TINY_SETTINGS.replace(chat_form=True))
    request = requests_from(records, 1)[0]
    editor.apply_edit(request)
    decision = editor.route([request.prompt], "chat")[0]
    # The scored tokens are the question's own, not "system: be helpful" or the role markers ...
    assert "".join(decision.tokens) == request.prompt
    # ... and the score is their mean distance.
    assert decision.route.score == pytest.approx(sum(decision.token_distances) / len(decision.token_distances), rel=1e-5)


# ----------------------------------------------------------------------------------------------
# bfloat16


def test_bfloat16_routes_as_float32_does_and_round_trips(tokenizer, records, tmp_path):
    from wise_gui.core.memory_file import attach_memory_file, save_memory_file

    requests = requests_from(records, 4)
    questions = [r.prompt for r in requests] + [r.paraphrases[0] for r in requests] + [r["loc"] for r in records[4:12]]
    decisions = {}
    for dtype in (torch.float32, torch.bfloat16):
        loaded = tiny_loaded(tokenizer=tokenizer)
        loaded.model.to(dtype)
        loaded.dtype = dtype
        editor = WiseEditor(loaded, TINY_SETTINGS)
        for request in requests:
            editor.apply_edit(request)
        decisions[dtype] = [d.route.memory for d in editor.route(questions)]
        if dtype == torch.bfloat16:
            path = tmp_path / "bf16.safetensors"
            save_memory_file(editor, path)
            editor.detach()
            reloaded = attach_memory_file(loaded, path)
            assert [d.route.memory for d in reloaded.route(questions)] == decisions[dtype]
            assert reloaded.memories.merged[0].values.dtype == torch.bfloat16
    # Trained apart in each dtype, the same edits send every prompt and paraphrase to the same memory,
    # and every question to a side memory or to the main one alike.
    assert decisions[torch.bfloat16][:8] == decisions[torch.float32][:8]
    assert [m != MAIN for m in decisions[torch.bfloat16]] == [m != MAIN for m in decisions[torch.float32]]
    assert decisions[torch.float32][:4] == [0, 1, 2, 3]


# ----------------------------------------------------------------------------------------------
# The state object and its deltas


@pytest.mark.parametrize("changes", [{}, {"method": "memoir", "mask_ratio": 0.25, "n_iter": 20},
                                     {"mask_kind": "columns", "mask_ratio": 0.2, "route_candidates": 2,
                                      "key_similarity": 0.2, "key_whitening": True}])
def test_a_state_is_the_previous_one_plus_its_delta(tokenizer, records, changes):
    editor = make_editor(tokenizer, **{"n_iter": 20, **changes})
    requests = requests_from(records, 3)
    editor.apply_edit(requests[0])
    before = editor.state_dict()
    editor.apply_edit(requests[1])
    after = editor.state_dict()
    delta = state_delta(before, after)
    rebuilt = apply_state_delta(before, delta)
    assert rebuilt.meta == after.meta and set(rebuilt.tensors) == set(after.tensors)
    assert all(torch.equal(rebuilt.tensors[name], after.tensors[name]) for name in after.tensors)
    assert delta.nbytes() < 0.75 * after.nbytes()  # the edit's change, not the whole state
    if changes.get("key_whitening"):  # measured once, part of the state, never in a delta
        assert "calibration.whitening.directions" in after.tensors and not any("whitening" in n for n in delta.tensors)
        # The window tells the whitening apart from the memories' RAM: it is not a per-edit cost.
        status = editor.status()
        assert status.whitening_bytes == editor.memories.whitening.nbytes > 0
        assert status.memory_bytes + status.whitening_bytes + status.working_bytes == editor.memories.nbytes()
    clone = make_editor(tokenizer, **{"n_iter": 20, **changes})
    clone.load_state_dict(rebuilt)
    editor.apply_edit(requests[2])
    clone.apply_edit(requests[2])
    assert [d.route.memory for d in editor.route([r.prompt for r in requests])] == \
        [d.route.memory for d in clone.route([r.prompt for r in requests])]
