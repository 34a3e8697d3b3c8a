"""Half-precision quality is graded against HF's own rounding: when the adaptive model and HF (both
bf16) differ past the bar, each is measured against HF in fp32, and only the error beyond HF's own
is graded. Rounding is then forgiven and a real mapping error is still caught."""

import torch

from matrix import grading
from matrix.checks import CheckFailed, check_quality, load_pair
from sentinel_core.synthetic import make_synthetic_checkpoint
from transformers import AutoModelForCausalLM

K = grading.HALF_PRECISION_LOGPROB_TOP_K


def peaked_checkpoint(variant_config, folder):
    """Logits in the hundreds, as a tied 256k-vocabulary Gemma's are: bf16 resolves them only to ~1."""
    make_synthetic_checkpoint(variant_config, folder / "base", seed=1234)
    model = AutoModelForCausalLM.from_pretrained(folder / "base", dtype=torch.float32)
    with torch.no_grad():
        model.lm_head.weight.mul_(48.0)
    model.save_pretrained(folder / "peaked")
    return folder / "peaked"


def test_bf16_rounding_past_the_bar_is_graded_against_hfs_own_rounding(tmp_path):
    from variants import variants

    pair = load_pair(peaked_checkpoint(variants()["llama-gqa"], tmp_path), "cpu", "bfloat16")
    metrics = check_quality(pair)
    # The direct comparison is past the Good bar: only the fp32 reference can say whose error it is.
    assert metrics[f"max_logprob_diff_top{K}"] > grading.tolerance("bfloat16").max_logprob_diff
    assert metrics[f"baseline_error_vs_fp32_top{K}"] > grading.tolerance("bfloat16").max_logprob_diff
    beyond = metrics[f"error_beyond_baseline_rounding_top{K}"]
    assert beyond == max(0.0, metrics[f"adaptive_error_vs_fp32_top{K}"] - metrics[f"baseline_error_vs_fp32_top{K}"])
    assert beyond <= grading.tolerance("bfloat16").max_logprob_diff and metrics["grade"] != grading.POOR


def test_a_mapping_error_is_still_caught_in_bf16(tmp_path):
    from variants import variants

    pair = load_pair(peaked_checkpoint(variants()["llama-gqa"], tmp_path), "cpu", "bfloat16")
    with torch.no_grad():  # one layer's MLP output scaled by 5%: a converter bug HF would not have
        pair.adaptive.layers[0].mlp.down.weight.mul_(1.05)
    try:
        check_quality(pair)
    except CheckFailed as failure:
        assert "further from HF fp32 than HF's own bfloat16" in str(failure), str(failure)
        assert failure.metrics[f"error_beyond_baseline_rounding_top{K}"] > grading.tolerance("bfloat16").fair_logprob_diff
    else:
        raise AssertionError("an MLP weight scaled by 5% passed bf16 quality")


def test_an_fp32_reference_that_does_not_fit_is_named_and_the_raw_difference_graded(tmp_path):
    from variants import variants

    pair = load_pair(peaked_checkpoint(variants()["llama-gqa"], tmp_path), "cpu", "bfloat16")

    def out_of_memory():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 26.00 GiB")

    pair.load_fp32_reference = out_of_memory
    try:
        check_quality(pair)
    except CheckFailed as failure:
        assert "not measured against fp32: out of memory" in str(failure), str(failure)
        assert f"error_beyond_baseline_rounding_top{K}" not in failure.metrics
    else:
        raise AssertionError("a raw bf16 difference past the Fair bar passed without its fp32 reference")
