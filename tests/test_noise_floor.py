"""fp32's bar where HF is not exact with itself: the adaptive model may be as far from HF eager as HF's own
SDPA path is, and no further; left padding may move its rows as far as it moves HF's own. The mutation
check scores bugs against the same bar."""

import pytest
import torch

from sentinel_matrix import grading
from sentinel_matrix.checks import CheckFailed, attention_paths_diff, check_infer, check_quality, generate_positions, \
    hf_position_kwargs, input_batch, load_pair, _logprobs


def graded(diff, paths_diff=None):
    m = {"max_logprob_diff": diff, "kl": 0.0, "greedy_identical": True, "rank_check": True}
    if paths_diff is not None:
        m["baseline_attention_paths_diff"] = paths_diff
    return grading.grade_quality("float32", m)


def test_fp32_bar_is_1e4_unless_hf_differs_from_itself_by_more():
    assert graded(1.3e-4) == grading.POOR
    assert graded(1.3e-4, paths_diff=5e-6) == grading.POOR  # HF agreeing with itself changes nothing
    assert graded(1.3e-4, paths_diff=1.7e-4) == grading.GOOD  # gemma-3-1b-pt on CPU
    assert graded(1.8e-4, paths_diff=1.7e-4) == grading.POOR  # no further than HF's own other path


def test_the_mutation_bar_is_the_bar_the_fp32_row_is_graded_by():
    assert grading.mutation_bar() == 1e-4
    assert grading.mutation_bar(attention_paths_diff=1.7e-4) == 1.7e-4
    assert grading.padding_limit("float32", 3e-5) == 1e-4 and grading.padding_limit("float32", 2e-4) == 2e-4


@pytest.fixture(scope="module")
def pair(synthetic_folders):
    return load_pair(synthetic_folders("llama-gqa"), "cpu", "float32")


def test_attention_paths_diff_measures_hf_against_itself_and_restores_eager(pair):
    ids, mask = input_batch(pair)
    positions = hf_position_kwargs(pair, generate_positions(mask))
    with torch.no_grad():
        theirs = _logprobs(pair.hf, ids, mask, **positions)
        diff = attention_paths_diff(pair.hf, ids, mask, positions, theirs)
        assert pair.hf.config._attn_implementation == "eager"
        assert torch.equal(_logprobs(pair.hf, ids, mask, **positions), theirs)
    assert diff is not None and 0.0 <= diff < 1e-4


def test_quality_and_infer_record_hf_own_noise_and_still_fail_beyond_it(pair, monkeypatch):
    metrics = check_quality(pair)
    assert metrics["baseline_attention_paths_diff"] < 1e-4
    assert check_infer(pair)["baseline_padded_vs_alone_beyond_resolution"] < 1e-4
    with torch.no_grad():  # a small bug in one layer's norm weight is beyond both HF's noise and the bar
        pair.adaptive.layers[0].attn_norm.weight.add_(3e-3)
    try:
        with pytest.raises(CheckFailed, match="limit 1.0e-04; HF eager vs SDPA"):
            check_quality(pair)
    finally:
        with torch.no_grad():
            pair.adaptive.layers[0].attn_norm.weight.sub_(3e-3)
