"""The mutation harness: each injected bug changes the model and is undone exactly; the mutation check
catches every catchable mutant (fp32 effect past the fp32 bar) with the matrix's own checks, and fails when a check goes blind."""

import pytest
import torch

from sentinel_matrix import grading
from sentinel_matrix.checks import CheckFailed, _logprobs, check_mutation, input_batch, load_pair
from sentinel_matrix.mutants import MUTANTS

NATIVE = ["llama-gqa", "bloom-post-ln-residual-6-heads", "gpt2", "mistral-sliding-window", "gemma-multi-query-wide-heads"]


@pytest.fixture(scope="module")
def pairs(synthetic_folders):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = load_pair(synthetic_folders(name), "cpu", "float32")
        return cache[name]
    return get


@pytest.mark.parametrize("name", NATIVE)
def test_every_mutant_changes_the_model_and_is_undone_exactly(pairs, name):
    pair = pairs(name)
    ids, mask = input_batch(pair)
    with torch.no_grad():
        before = _logprobs(pair.adaptive, ids, mask)
        for mutant in MUTANTS.values():
            undo = mutant.apply(pair.adaptive)
            if isinstance(undo, str):
                continue
            undo()
            assert torch.equal(_logprobs(pair.adaptive, ids, mask), before), f"{mutant.name} was not undone"


@pytest.mark.parametrize("name", NATIVE)
def test_every_catchable_mutant_is_caught_in_fp32(pairs, name):
    metrics = check_mutation(pairs(name))
    score = metrics["mutation_score"]
    assert score["missed"] == [] and score["caught"] == score["catchable"] >= 5 and score["catch_rate"] == 1.0, score
    assert score["meaning"] == "sensitivity"
    for mutant, result in metrics["mutants"].items():
        if result["applicable"] and result["catchable"]:
            assert result["effect"] > grading.tolerance("float32").max_logprob_diff and result["caught_by"], mutant


def test_position_and_window_mutants_apply_where_the_architecture_has_them(pairs):
    applicable = {name: {m for m, r in check_mutation(pairs(name))["mutants"].items() if r["applicable"]}
                  for name in ("bloom-post-ln-residual-6-heads", "mistral-sliding-window")}
    assert "alibi_slopes_swapped" in applicable["bloom-post-ln-residual-6-heads"]
    assert "rope_base_plus_1pct" not in applicable["bloom-post-ln-residual-6-heads"]
    assert {"rope_base_plus_1pct", "rope_angles_half", "k_heads_swapped"} <= applicable["mistral-sliding-window"]


def test_a_blind_quality_check_fails_the_mutation_row(pairs, monkeypatch):
    """Loosen fp32's bars a thousandfold (a rule nobody should accept): the harness must say so."""
    pair = pairs("llama-gqa")
    loose = grading.Tolerance(**{**vars(grading.tolerance("float32")), "max_logprob_diff": 0.1, "max_kl": 1e-2,
                                 "padded_vs_alone": 0.1, "cache_vs_no_cache": 0.1})
    monkeypatch.setitem(grading.TOLERANCES, "float32", loose)
    monkeypatch.setattr(grading, "mutation_bar", lambda attention_paths_diff=None: 1e-4)  # what catchable means
    with pytest.raises(CheckFailed, match="catchable mutants") as info:
        check_mutation(pair)
    missed = info.value.metrics["mutation_score"]["missed"]
    assert "rope_base_plus_1pct" in missed or "norm_eps_x100" in missed, missed


def test_the_generic_wrapper_gets_the_mutants_that_change_weights(synthetic_folders):
    from transformers import GPTBigCodeConfig

    from sentinel_core.synthetic import make_synthetic_checkpoint

    config = GPTBigCodeConfig(vocab_size=512, n_embd=64, n_layer=2, n_head=4, n_positions=64, multi_query=True)
    folder = make_synthetic_checkpoint(config, synthetic_folders("gpt2").parent / "bigcode", seed=3)
    pair = load_pair(folder, "cpu", "float32")
    assert pair.adaptive.adaptive_path == "generic-wrapper"
    metrics = check_mutation(pair)
    ran = {m for m, r in metrics["mutants"].items() if r["applicable"]}
    assert {"head_out_permuted", "norm_eps_x100", "bias_dropped"} <= ran
    assert metrics["mutation_score"]["missed"] == []
