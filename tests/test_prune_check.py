"""The prune check's mechanics on a tiny model (the curves themselves are measured on real weights by the
matrix: random weights have no heads that matter): every method's curve over every fraction from the same
unpruned perplexity, the random control's spread, the prunable fraction's rule, gates left as they were, and
throughput measured on models really pruned."""

import pytest
import torch

from sentinel_matrix import grading
from sentinel_matrix.checks import prune
from sentinel_matrix.checks import ModelPair
from sentinel_matrix.checks.prune import prunable_fraction
from sentinel_core import load_adaptive_model
from tests.tokenizer_fixture import TEXT, make_tokenizer


@pytest.fixture(scope="module")
def result(synthetic_folders):
    model = load_adaptive_model(synthetic_folders("llama-gqa"))
    with torch.no_grad():
        model.gates[0, 1] = 0.5  # a caller's gates survive the check
    before = model.gates.detach().clone()
    tokenizer = make_tokenizer(vocab_size=model.config.vocab_size)
    pair = ModelPair(hf=None, adaptive=model, tokenizer=tokenizer, device="cpu", dtype="float32", real_weights=True)
    with pytest.MonkeyPatch.context() as mp:  # the tokenizer's text is short: smaller splits, same code
        mp.setitem(prune.SIZES, "cpu", prune.Sizes(calibration_rows=2, calibration_length=32, heldout_tokens=96))
        mp.setattr(prune, "PPL_WINDOW", 48)
        mp.setattr(prune, "THROUGHPUT_PREFILL", 16)
        mp.setattr(prune, "THROUGHPUT_NEW_TOKENS", 4)
        mp.setattr(prune, "THROUGHPUT_ROUNDS", 1)
        metrics = prune.check_prune(pair, "fixture text", TEXT * 3)
    return model, before, metrics


def test_every_method_has_a_curve_over_every_fraction(result):
    _, _, m = result
    assert set(m["ppl_by_fraction"]) == set(prune.METHODS)
    bases = set()
    for method, curve in m["ppl_by_fraction"].items():
        assert [p[0] for p in curve] == list(prune.FRACTIONS), method
        assert all(p[1] > 1 for p in curve)
        bases.add(curve[0][1])
    assert len(bases) == 1, "every curve starts from the same unpruned perplexity"
    assert m["calibration_tokens"] == 64 and m["heldout_tokens"] == 96


def test_curves_change_as_heads_go(result):
    """A curve flat at the unpruned value would mean the plan's gates never reached the forward."""
    _, _, m = result
    for method, curve in m["ppl_by_fraction"].items():
        assert curve[-1][1] != curve[0][1], method


def test_random_is_the_mean_of_its_seeds_with_their_range(result):
    _, _, m = result
    for (f, mean), (g, lo, hi) in zip(m["ppl_by_fraction"]["random"], m["ppl_random_spread"]):
        assert f == g and lo <= mean <= hi
    assert m["ppl_random_spread"][-1][1] < m["ppl_random_spread"][-1][2], "three seeds, three different plans"
    assert m["random_seeds"] == list(prune.RANDOM_SEEDS)


def test_every_metric_is_of_a_kind_the_reporter_reads(result):
    from sentinel_matrix.metrics import kind
    from sentinel_matrix.records import kind_error

    _, _, m = result
    assert {k: v for k, v in m.items() if kind_error(v, kind(k))} == {}


def test_gates_are_left_as_they_were(result):
    model, before, _ = result
    assert torch.equal(model.gates.detach(), before)
    assert model.pruned_heads == {}, "throughput is measured on copies"


def test_throughput_on_really_pruned_copies(result):
    _, _, m = result
    rows = [dict(zip(m["throughput_columns"], t)) for t in m["throughput_by_fraction"]]
    assert [r["fraction"] for r in rows] == list(prune.FRACTIONS)
    params = [r["params"] for r in rows]
    assert params == sorted(params, reverse=True) and params[-1] < params[0], "fewer parameters as heads go"
    assert all(r["decode_tokens_per_s"] > 0 and r["prefill_ms"] > 0 for r in rows)


@pytest.mark.parametrize("curve, expected", [
    ([[0.0, 10.0], [0.1, 10.4], [0.2, 10.5], [0.3, 10.6]], 0.2),  # 10.5 is exactly +5%: kept
    ([[0.0, 10.0], [0.1, 11.0], [0.2, 10.1]], 0.0),  # a later point back under the margin does not count
    ([[0.0, 10.0], [0.1, 9.0], [0.2, 10.2]], 0.2),  # better than unpruned counts as within
])
def test_prunable_fraction(curve, expected):
    assert grading.PRUNABLE_PPL_WITHIN == 0.05
    assert prunable_fraction(curve) == expected


def test_a_large_model_skips_on_cpu_saying_where_to_run_it(result, monkeypatch):
    model, _, _ = result
    assert prune.too_slow_here(model, "cpu") is None
    monkeypatch.setattr(prune, "CPU_MAX_PARAMS", 10)
    assert "run this row on a GPU (--devices cuda)" in prune.too_slow_here(model, "cpu")
    assert prune.too_slow_here(model, "cuda") is None


def test_the_pruned_model_equals_the_gated_one(result):
    _, _, m = result
    assert 0 <= m["pruned_vs_gated_max_diff"] <= m["pruned_vs_gated_limit"] == grading.pruned_vs_gated_limit("float32")


def test_a_pruned_vs_gated_mismatch_fails_the_row(synthetic_folders, monkeypatch):
    """Pruning that removes other heads than the plan names (here: every plan shifted by one head) fails the row."""
    from sentinel_core.model import AdaptiveCausalLM

    model = load_adaptive_model(synthetic_folders("llama-gqa"))
    pair = ModelPair(hf=None, adaptive=model, tokenizer=make_tokenizer(vocab_size=model.config.vocab_size),
                     device="cpu", dtype="float32", real_weights=True)
    original = AdaptiveCausalLM.prune_heads
    heads = model.num_heads

    def off_by_one(self, plan):
        return original(self, {layer: sorted({(h + 1) % heads for h in hs}) for layer, hs in plan.items()})

    monkeypatch.setattr(AdaptiveCausalLM, "prune_heads", off_by_one)
    monkeypatch.setitem(prune.SIZES, "cpu", prune.Sizes(calibration_rows=2, calibration_length=32, heldout_tokens=96))
    for name, value in (("PPL_WINDOW", 48), ("THROUGHPUT_PREFILL", 16), ("THROUGHPUT_NEW_TOKENS", 4),
                        ("THROUGHPUT_ROUNDS", 1)):
        monkeypatch.setattr(prune, name, value)
    with pytest.raises(prune.CheckFailed, match="pruned for real differs from the same heads gated to 0") as failed:
        prune.check_prune(pair, "fixture text", TEXT * 3)
    assert failed.value.metrics["pruned_vs_gated_max_diff"] > grading.pruned_vs_gated_limit("float32")
