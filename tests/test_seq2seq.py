"""The gated encoder-decoder (T5, BART, mBART, Marian) against HF eager on randomised weights: log-probs on a
right-padded source batch, greedy tokens, the decoder cache, a zero gate in each kind of attention against HF
with that head's columns of the output projection zeroed, pruning against the same gates at 0, and the loss."""

import copy
import re

import pytest
import torch
from transformers import BartConfig, MarianConfig, MBartConfig, T5Config

from sentinel_core import GateError, PruneError, load_adaptive_model, load_baseline_model
from sentinel_core.errors import InputError
from sentinel_core.seq2seq import KINDS, AdaptiveSeq2SeqLM
from sentinel_core.synthetic import make_synthetic_checkpoint
from sentinel_matrix.checks.seq2seq import hf_output_projection

VOCAB = 128
BART_SHAPE = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                  decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64)


def seq2seq_variants() -> dict:
    return {
        # v1.0: ReLU, tied head rescaled by d_model ** -0.5; a decoder deeper than the encoder; few buckets
        "t5": T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=3, num_heads=4,
                       relative_attention_num_buckets=8, relative_attention_max_distance=16,
                       decoder_start_token_id=0),
        # v1.1 / flan-T5: gated GELU, untied head (transformers 5 keeps it tied, without the rescale)
        "t5-v1.1": T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                            feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0),
        "bart": BartConfig(**BART_SHAPE),
        "mbart": MBartConfig(**BART_SHAPE, scale_embedding=True),
        "marian": MarianConfig(**BART_SHAPE, pad_token_id=VOCAB - 1, decoder_start_token_id=VOCAB - 1,
                               eos_token_id=0),
    }


@pytest.fixture(scope="module", params=list(seq2seq_variants()))
def pair(request, tmp_path_factory):
    folder = make_synthetic_checkpoint(seq2seq_variants()[request.param], tmp_path_factory.mktemp(request.param),
                                       seed=1234)
    return load_baseline_model(folder, attn_implementation="eager"), load_adaptive_model(folder), folder


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    source = torch.randint(3, VOCAB - 8, (3, 9), generator=g)
    mask = torch.ones_like(source)
    mask[1, 6:] = 0  # right padding, as tokenizers pad an encoder batch
    mask[2, 4:] = 0
    return source.masked_fill(mask == 0, 1), mask, torch.randint(3, VOCAB - 8, (3, 7), generator=g)


def logprobs(model, source, mask, target):
    with torch.no_grad():
        return model(input_ids=source, attention_mask=mask, decoder_input_ids=target).logits.float().log_softmax(-1)


def test_native_and_hf_agree_on_a_right_padded_batch(pair, batch):
    hf, adaptive, _ = pair
    assert isinstance(adaptive, AdaptiveSeq2SeqLM) and adaptive.adaptive_path == "native"
    # transformers' activation functions are functions; no transformers layer does any of the model's work
    assert not any(type(module).__module__.startswith("transformers") and
                   type(module).__module__ != "transformers.activations" for module in adaptive.modules())
    gap = (logprobs(adaptive, *batch) - logprobs(hf, *batch)).abs().max().item()
    assert gap <= 1e-4, gap


def test_greedy_tokens_equal_hfs_and_the_cache_changes_nothing(pair, batch):
    hf, adaptive, _ = pair
    source, mask, _ = batch
    # HF 5.x's T5 cache is sized by the encoder's depth: a deeper decoder decodes without one there
    hf_cache = hf.config.model_type != "t5" or hf.config.num_decoder_layers == hf.config.num_layers
    theirs = hf.generate(source, attention_mask=mask, max_new_tokens=8, num_beams=1, do_sample=False,
                         use_cache=hf_cache)
    assert torch.equal(adaptive.generate(source, attention_mask=mask, max_new_tokens=8), theirs)
    assert torch.equal(adaptive.generate(source, attention_mask=mask, max_new_tokens=8, use_cache=False), theirs)


def test_the_decoder_cache_equals_a_full_forward(pair, batch):
    _, adaptive, _ = pair
    source, mask, target = batch
    full = logprobs(adaptive, source, mask, target)
    with torch.no_grad():
        states = adaptive.encode(source, mask)
        out = adaptive(encoder_outputs=states, attention_mask=mask, decoder_input_ids=target[:, :4], use_cache=True)
        step = adaptive(encoder_outputs=states, attention_mask=mask, decoder_input_ids=target[:, 4:],
                        past_key_values=out.past_key_values)
    incremental = torch.cat([out.logits, step.logits], dim=1).float().log_softmax(-1)
    assert (incremental - full).abs().max().item() <= 1e-5


@pytest.mark.parametrize("kind", KINDS)
def test_a_zero_gate_equals_hf_with_that_heads_columns_zeroed(pair, batch, kind):
    hf, adaptive, _ = pair
    head, d = 2, adaptive.spec.head_dim
    zeroed = copy.deepcopy(hf)
    with torch.no_grad():
        hf_output_projection(zeroed, kind, 1).weight[:, head * d:(head + 1) * d] = 0
    gated = copy.deepcopy(adaptive)
    gated.gates[kind][1, head] = 0.0
    ours, theirs = logprobs(gated, *batch), logprobs(zeroed, *batch)
    assert (ours - theirs).abs().max().item() <= 1e-4
    assert (ours - logprobs(adaptive, *batch)).abs().max().item() > 1e-3  # the head mattered


def test_pruning_equals_the_same_gates_at_zero_with_fewer_parameters(pair, batch, tmp_path):
    _, adaptive, _ = pair
    plan = {"encoder": {0: [1], 1: [0, 3]}, "decoder": {1: [2]}, "cross": {0: [0, 1, 2]}}
    gated, pruned = copy.deepcopy(adaptive), copy.deepcopy(adaptive)
    for kind, layers in plan.items():
        for layer, heads in layers.items():
            gated.gates[kind][layer, heads] = 0.0
    pruned.prune_heads(plan)
    assert pruned.pruned_heads == plan
    assert pruned.num_parameters() < adaptive.num_parameters()
    assert (logprobs(pruned, *batch) - logprobs(gated, *batch)).abs().max().item() <= 1e-5
    assert torch.equal(pruned.generate(batch[0], attention_mask=batch[1], max_new_tokens=5),
                       gated.generate(batch[0], attention_mask=batch[1], max_new_tokens=5))


def test_labels_give_hfs_loss(pair, batch):
    hf, adaptive, _ = pair
    source, mask, target = batch
    labels = target.clone()
    labels[2, 5:] = -100
    with torch.no_grad():
        ours = adaptive(input_ids=source, attention_mask=mask, labels=labels).loss
        theirs = hf(input_ids=source, attention_mask=mask, labels=labels).loss
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-5), (ours, theirs)


def test_bad_plans_and_calls_are_one_line(pair):
    _, adaptive, _ = pair
    model = copy.deepcopy(adaptive)
    with pytest.raises(InputError, match="kind one of encoder, decoder, cross"):
        model.prune_heads({"self": {0: [1]}})
    with pytest.raises(PruneError, match="no heads left"):
        model.prune_heads({"cross": {0: [0, 1, 2, 3]}})
    with pytest.raises(PruneError, match="no head"):
        model.prune_heads({"encoder": {0: [9]}})
    assert model.pruned_heads == {}  # a refused plan changes nothing
    with pytest.raises(InputError, match="decoder_input_ids"):
        model(input_ids=torch.tensor([[5, 6]]))
    with pytest.raises(InputError, match="does not take"):
        model.generate(torch.tensor([[5, 6]]), num_beams=4)
    model.gates["cross"][1, 2] = float("nan")
    with pytest.raises(GateError, match="finite"):
        model(input_ids=torch.tensor([[5, 6]]), decoder_input_ids=torch.tensor([[0]]))
    model.gates["cross"][1, 2] = 1.0
    model.prune_heads({"encoder": {0: [1]}})
    model.gates["encoder"][0, 1] = 1.0
    with pytest.raises(GateError, match="was pruned"):
        model.generate(torch.tensor([[5, 6]]), max_new_tokens=1)


def test_a_pruned_gated_model_saves_and_loads_bit_for_bit(pair, batch, tmp_path):
    _, adaptive, _ = pair
    model = copy.deepcopy(adaptive)
    model.prune_heads({"encoder": {1: [0, 3]}, "cross": {0: [2]}})
    model.gates["decoder"][1, 1] = 0.5
    model.gates["cross"][1, 0] = -1.0
    model.save_pretrained(tmp_path / "saved")
    loaded = load_adaptive_model(tmp_path / "saved")
    assert isinstance(loaded, AdaptiveSeq2SeqLM) and loaded.spec == model.spec
    assert loaded.pruned_heads == model.pruned_heads
    assert all(torch.equal(loaded.gates[kind], model.gates[kind]) for kind in KINDS)
    state, back = model.state_dict(), loaded.state_dict()
    assert state.keys() == back.keys() and all(torch.equal(state[k], back[k]) for k in state)
    assert torch.equal(logprobs(loaded, *batch), logprobs(model, *batch))


@pytest.mark.parametrize("method", ["gradient", "ablation", "magnitude", "random"])
def test_importance_scores_all_three_kinds_and_leaves_the_gates_as_they_were(pair, batch, method):
    from sentinel_core.importance import head_importance

    _, adaptive, _ = pair
    model = copy.deepcopy(adaptive)
    model.prune_heads({"cross": {1: [3]}})
    model.gates["encoder"][0, 1] = 0.25
    before = {kind: model.gates[kind].clone() for kind in KINDS}
    source, mask, target = batch
    scores = head_importance(model, source, mask, method=method, labels=target)
    assert set(scores) == set(KINDS)
    for kind in KINDS:
        assert scores[kind].shape == model.gates[kind].shape and torch.equal(model.gates[kind], before[kind])
        assert not model.gates[kind].requires_grad
    assert scores["cross"][1, 3] == 0  # a pruned head scores 0
    assert all(scores[kind].abs().sum() > 0 for kind in KINDS)
    if method == "ablation":  # the score is the loss with that head gated off, less the loss with none off
        gated = copy.deepcopy(model)
        for kind in KINDS:
            gated.gates[kind].copy_((gated.gates[kind] != 0).float())
        with torch.no_grad():
            base = gated(input_ids=source, attention_mask=mask, labels=target).loss
            gated.gates["decoder"][1, 2] = 0
            off = gated(input_ids=source, attention_mask=mask, labels=target).loss
        assert torch.isclose(scores["decoder"][1, 2], (off - base).to(scores["decoder"].dtype), atol=1e-6)


@pytest.mark.end_to_end
def test_a_local_encoder_decoder_runs_the_matrix_rows(tmp_path):
    """A folder named with --models goes through the encoder-decoder checks (checks/seq2seq.py), one record per row."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    folder = make_synthetic_checkpoint(seq2seq_variants()["marian"], tmp_path / "marian", seed=1234)
    results = tmp_path / "rows.jsonl"
    done = subprocess.run([sys.executable, "-m", "pytest", "matrix/", "--models", str(folder), "--checks",
                           "load,infer,quality", "--results", str(results), "-q", "-p", "no:randomly",
                           "-p", "no:cacheprovider"],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-1500:]
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert {r["check"]: r["outcome"] for r in records} == {"load": "passed", "infer": "passed", "quality": "passed"}
    quality = next(r for r in records if r["check"] == "quality")["metrics"]
    assert set(quality["zero_gate_vs_hf_zeroed"]) == set(KINDS) and quality["pruned_vs_gated_max_diff_fp64"] == 0.0


def test_generate_resolves_settings_as_hf_does(pair, batch):
    """No length given (HF's 20 new tokens), a passed config filled in from the checkpoint's, a forced BOS token
    argument, and a padded source without a mask (transformers 4 masks its pads, 5 attends them)."""
    from transformers import GenerationConfig

    hf, adaptive, _ = pair
    source, mask, _ = batch
    hf_cache = hf.config.model_type != "t5" or hf.config.num_decoder_layers == hf.config.num_layers
    for kwargs in ({}, {"generation_config": GenerationConfig(max_new_tokens=5)}, {"forced_bos_token_id": 7,
                                                                                   "max_new_tokens": 4}):
        theirs = hf.generate(source, attention_mask=mask, num_beams=1, do_sample=False, use_cache=hf_cache, **kwargs)
        assert torch.equal(adaptive.generate(source, attention_mask=mask, **kwargs), theirs), kwargs
    pad = hf.generation_config.pad_token_id
    eos = hf.generation_config.eos_token_id
    if pad is not None and pad != eos:
        padded = batch[0].masked_fill(batch[1] == 0, pad)
        theirs = hf.generate(padded, max_new_tokens=4, num_beams=1, do_sample=False, use_cache=hf_cache)
        assert torch.equal(adaptive.generate(padded, max_new_tokens=4), theirs)
    sampled = adaptive.generate(source, attention_mask=mask, do_sample=True, max_new_tokens=3,
                                generator=torch.Generator().manual_seed(0))
    assert sampled.shape[0] == source.shape[0] and sampled.shape[1] <= 4


@pytest.mark.parametrize("kwargs, says", [
    ({"num_beams": 4}, "num_beams=4"), ({"repetition_penalty": 1.3}, "repetition_penalty=1.3"),
    ({"max_new_tokens": 0}, "max_new_tokens=0"), ({"max_length": 5, "max_new_tokens": 2}, "give one"),
    ({"do_sample": True, "temperature": 0.0}, "must be > 0"), ({"top_p": 1.5}, "(0, 1]"),
    ({"output_scores": True}, "does not take"),
])
def test_generate_refuses_what_it_does_not_implement(pair, kwargs, says):
    from transformers import GenerationConfig

    _, adaptive, _ = pair
    source = torch.tensor([[5, 6, 7]])
    with pytest.raises(InputError, match=re.escape(says)):
        if set(kwargs) <= {"num_beams", "repetition_penalty"}:
            adaptive.generate(source, generation_config=GenerationConfig(**kwargs))
        else:
            adaptive.generate(source, **kwargs)


def test_encoder_outputs_as_hf_passes_them_and_labels_without_targets(pair, batch):
    from transformers.modeling_outputs import BaseModelOutput

    _, adaptive, _ = pair
    source, mask, target = batch
    states = adaptive.encode(source, mask)
    with torch.no_grad():
        direct = adaptive(encoder_outputs=states, attention_mask=mask, decoder_input_ids=target).logits
        wrapped = adaptive(encoder_outputs=BaseModelOutput(last_hidden_state=states), attention_mask=mask,
                           decoder_input_ids=target).logits
        as_tuple = adaptive(encoder_outputs=(states,), attention_mask=mask, decoder_input_ids=target).logits
    assert torch.equal(direct, wrapped) and torch.equal(direct, as_tuple)
    with pytest.raises(InputError, match="all -100"):
        adaptive(input_ids=source, attention_mask=mask, labels=torch.full_like(target, -100))
