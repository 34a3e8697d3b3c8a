"""Half-precision quality is graded against HF in fp32, token by token, next to HF's own rounding: a
correct conversion passes whatever bf16 does to HF, and an error at a single token is caught even when
it is smaller than HF's worst rounding somewhere else (the rule that compared maxima let it through)."""

import pytest
import torch

from matrix import grading
from matrix.checks import CheckFailed, check_quality, load_pair

K = grading.HALF_PRECISION_LOGPROB_TOP_K


def synthetic_half_precision(error_at=None, error=0.0, seed=0):
    """fp32 reference log-probs and two 'bf16' copies rounded alike (independent noise of one scale),
    the adaptive one with `error` added at the token `error_at` = (row, position, top-rank)."""
    g = torch.Generator().manual_seed(seed)
    reference = (torch.randn(2, 10, 64, generator=g) * 3).log_softmax(-1)
    rounding = 0.02
    baseline = (reference + rounding * torch.randn(reference.shape, generator=g)).log_softmax(-1)
    ours = (reference + rounding * torch.randn(reference.shape, generator=g)).log_softmax(-1)
    tokens = torch.cat([t.topk(K // 4, dim=-1).indices for t in (reference, baseline, ours)], dim=-1)
    if error_at is not None:
        row, position, rank = error_at
        ours[row, position, reference[row, position].topk(K // 4).indices[rank]] += error
    real = torch.ones(2, 10, dtype=torch.bool)
    metrics = grading.rounding_excess(ours=ours, baseline=baseline, reference=reference, tokens=tokens, real=real,
                                      dtype="bfloat16")
    return metrics | {"greedy_identical": True, "rank_check": True}


def test_rounding_alone_is_good():
    for seed in range(5):
        m = synthetic_half_precision(seed=seed)
        assert grading.grade_quality("bfloat16", m) == grading.GOOD, m


def test_a_single_token_error_beyond_hfs_rounding_there_fails_where_comparing_maxima_passed_it():
    clean = synthetic_half_precision()
    bf16_bar = grading.tolerance("bfloat16").max_logprob_diff
    # The largest single-token error the old rule forgave: max(ours) may exceed max(HF) by the Good bar.
    error = bf16_bar + clean[f"baseline_error_vs_fp32_top{K}"] - 0.05
    m = synthetic_half_precision(error_at=(1, 7, 0), error=error)
    old_rule_excess = max(0.0, m[f"adaptive_error_vs_fp32_top{K}"] - m[f"baseline_error_vs_fp32_top{K}"])
    assert old_rule_excess <= bf16_bar  # Good under the rule that compared maxima
    assert m["rounding_excess"] > grading.ROUNDING_EXCESS_FAIR
    assert grading.grade_quality("bfloat16", m) == grading.POOR


def test_a_systematic_error_within_hfs_rounding_per_token_is_caught_by_the_kl():
    m = synthetic_half_precision()
    hf_kl = 1e-3  # HF bf16's own KL to fp32, as on the real geometries
    assert grading.grade_quality("bfloat16", m | {"baseline_kl_vs_fp32": hf_kl, "kl_vs_fp32": 1.6 * hf_kl}) == grading.POOR
    assert grading.grade_quality("bfloat16", m | {"baseline_kl_vs_fp32": hf_kl, "kl_vs_fp32": 1.4 * hf_kl}) == grading.FAIR
    assert grading.grade_quality("bfloat16", m | {"baseline_kl_vs_fp32": hf_kl, "kl_vs_fp32": 1.1 * hf_kl}) == grading.GOOD


def test_a_correct_bf16_conversion_passes_against_fp32(synthetic_folders):
    metrics = check_quality(load_pair(synthetic_folders("llama-gqa"), "cpu", "bfloat16"))
    assert metrics["grade"] in (grading.GOOD, grading.FAIR), metrics
    assert metrics["rounding_excess"] <= grading.ROUNDING_EXCESS_FAIR
    assert metrics["kl_vs_fp32"] <= grading.KL_RATIO_FAIR * metrics["baseline_kl_vs_fp32"] + grading.KL_FLOOR


def test_a_mapping_error_is_caught_in_bf16(synthetic_folders):
    pair = load_pair(synthetic_folders("llama-gqa"), "cpu", "bfloat16")
    with torch.no_grad():  # one layer's MLP output scaled by 5%: a converter bug HF would not have
        pair.adaptive.layers[0].mlp.down.weight.mul_(1.05)
    with pytest.raises(CheckFailed, match="token by token") as failure:
        check_quality(pair)
    assert failure.value.metrics["grade"] == grading.POOR


def test_an_fp32_reference_that_does_not_fit_is_named_and_the_raw_difference_graded(synthetic_folders):
    pair = load_pair(synthetic_folders("llama-gqa"), "cpu", "bfloat16")

    def out_of_memory():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 26.00 GiB")

    pair.load_fp32_reference = out_of_memory
    with torch.no_grad():
        pair.adaptive.layers[0].mlp.down.weight.mul_(1.5)
    with pytest.raises(CheckFailed, match="not measured against fp32: out of memory") as failure:
        check_quality(pair)
    assert "rounding_excess" not in failure.value.metrics
