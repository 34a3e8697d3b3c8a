"""The encoder-decoder checks (sentinel_matrix/checks/seq2seq.py) can fail: each passes the right model and fails on
a bug it exists to see, naming the difference. The same check names reach them through the dispatch (kinds.py)."""

import pytest
import torch

from sentinel_core import load_adaptive_model, load_baseline_model
from sentinel_core.synthetic import make_synthetic_checkpoint
from sentinel_matrix.checks import CheckFailed, ModelPair, check_infer, check_load, check_mutation, check_quality
from sentinel_matrix.checks import seq2seq
from sentinel_matrix.mutants_seq2seq import SEQ2SEQ_MUTANTS
from tests.test_seq2seq import seq2seq_variants


# (the "t5" variant's decoder is deeper than its encoder, where HF 5's own cached generate fails)
@pytest.fixture(scope="module", params=["t5-v1.1", "marian"])
def pair(request, tmp_path_factory):
    folder = make_synthetic_checkpoint(seq2seq_variants()[request.param], tmp_path_factory.mktemp(request.param),
                                       seed=1234)
    hf = load_baseline_model(folder, attn_implementation="eager")
    return ModelPair(hf, load_adaptive_model(folder), None, "cpu", "float32", False,
                     {"load_s": 1.0, "baseline_load_s": 1.0})


@pytest.fixture
def fresh(pair):
    pair.cache.clear()
    yield pair
    pair.cache.clear()


def test_the_right_model_passes_every_check(fresh):
    load = check_load(fresh)
    assert load["gates"] == sum(g.numel() for g in fresh.adaptive.gates.values())
    assert all(effect > 0 for effect in load["first_and_last_layer_gate_effect"].values())
    check_infer(fresh)
    quality = check_quality(fresh)
    assert quality["greedy_identical"] and quality["max_logprob_diff"] <= 1e-4
    assert all(m["max_logprob_diff"] <= 1e-4 and m["hf_effect"] > 1e-3
               for m in quality["zero_gate_vs_hf_zeroed"].values())
    assert quality["pruned_params"] < quality["unpruned_params"]


@pytest.mark.parametrize("bug", ["cross_keys_values_swapped", "encoder_attends_padding", "cross_attends_padding",
                                 "cross_head_out_permuted", "score_scale_swapped"])
def test_quality_fails_on_a_conversion_bug(fresh, bug):
    undo = SEQ2SEQ_MUTANTS[bug].apply(fresh.adaptive)
    try:
        with pytest.raises(CheckFailed, match="adaptive differs from HF"):
            check_quality(fresh)
    finally:
        undo()


def test_infer_fails_when_the_cache_is_wrong_and_when_padding_leaks(fresh):
    undo = SEQ2SEQ_MUTANTS["cache_positions_restart"].apply(fresh.adaptive)
    try:
        with pytest.raises(CheckFailed, match="the decoder's cache differs"):
            check_infer(fresh)
    finally:
        undo()
    undo = SEQ2SEQ_MUTANTS["encoder_attends_padding"].apply(fresh.adaptive)
    try:
        with pytest.raises(CheckFailed, match="right-padded source rows differ"):
            check_infer(fresh)
    finally:
        undo()


def test_a_gate_on_the_wrong_head_fails_quality(fresh, monkeypatch):
    """Gates read one head over: every check against HF at gates = 1 passes; the zeroed-head comparison does not."""
    real = type(fresh.adaptive)._gates

    def shifted(self, kind):
        gates = real(self, kind)
        return None if gates is None else gates.roll(1, dims=1)
    monkeypatch.setattr(type(fresh.adaptive), "_gates", shifted)
    with pytest.raises(CheckFailed, match="gated to 0 differs from HF with it zeroed"):
        check_quality(fresh)


def test_pruning_the_wrong_head_fails_quality(fresh, monkeypatch):
    from sentinel_core.seq2seq import Attention

    real = Attention.prune

    def columns_rolled(self, heads):  # the kept heads' rows right, their columns of the output projection rolled
        real(self, heads)
        with torch.no_grad():
            self.o.weight.copy_(self.o.weight.roll(self.head_dim, dims=1))
    monkeypatch.setattr(Attention, "prune", columns_rolled)
    with pytest.raises(CheckFailed, match="pruned for real, the heads differ from their gates at 0"):
        check_quality(fresh)


def test_load_fails_when_a_kind_of_gate_reaches_no_head(fresh, monkeypatch):
    real = type(fresh.adaptive)._gates
    monkeypatch.setattr(type(fresh.adaptive), "_gates", lambda self, kind: None if kind == "cross" else real(self, kind))
    with pytest.raises(CheckFailed, match="cross gates changed no log-prob"):
        check_load(fresh)


def test_mutation_scores_the_encoder_decoder_mutants(fresh):
    names = ["cross_keys_values_swapped", "cache_positions_restart", "positions_offset_off_by_one",
             "decoder_buckets_bidirectional"]
    metrics = check_mutation(fresh, names=names)
    mutants = metrics["mutants"]
    assert set(mutants) == set(names)
    assert mutants["cross_keys_values_swapped"]["caught"] and mutants["cache_positions_restart"]["catchable"]
    table = fresh.adaptive.spec.positions == "table"
    assert mutants["positions_offset_off_by_one"]["applicable"] is table
    assert mutants["decoder_buckets_bidirectional"]["applicable"] is not table
    assert metrics["mutation_score"]["missed"] == []


def test_dispatch_sends_only_encoder_decoders_to_the_seq2seq_checks(fresh, monkeypatch):
    from sentinel_matrix.checks.kinds import is_encoder_decoder

    assert is_encoder_decoder(fresh.adaptive)
    monkeypatch.setattr(seq2seq, "check_load", lambda pair: {"ran": "seq2seq"})  # the binding is made at import
    assert check_load(fresh)["gates"] == sum(g.numel() for g in fresh.adaptive.gates.values())
    assert not is_encoder_decoder(torch.nn.Linear(2, 2))


def test_half_precision_rounds_the_reference_as_hf_loads_it(tmp_path):
    """bf16: HF rounds a checkpoint's own buffer (BART's final_logits_bias) as it rounds the weights, so the fp32
    reference on the row's weights rounds it too; leaving it in fp32 made every BART-family bf16 row fail (H100,
    a810801: 1.9e-3..2.2e-3 against a 1e-4 bar, with the bf16 log-probs equal to HF's bit for bit)."""
    folder = make_synthetic_checkpoint(seq2seq_variants()["bart"], tmp_path / "bart", seed=1234)
    from sentinel_matrix.checks import load_pair

    pair = load_pair(folder, "cpu", "bfloat16")
    assert pair.hf.final_logits_bias.dtype == torch.bfloat16
    metrics = check_quality(pair)
    assert metrics["widened_max_logprob_diff"] <= 1e-4 and metrics["grade"] == "Good"
