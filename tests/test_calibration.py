"""Synthetic weights whose HF distribution looks like a trained model's, and the quality check refusing
to call a pass against a degenerate one."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from sentinel_matrix import grading
from sentinel_matrix.checks import CheckInconclusive, check_quality, load_pair
from sentinel_core.synthetic import (ENTROPY_RANGE, INPUT_TOKEN_ARGMAX_MAX, TOP1_PROB_MAX, calibrate_,
                                     degenerate_reason, make_synthetic_checkpoint, randomise_, reference_stats)
from variants import variants


def _in_range(stats: dict) -> bool:
    return degenerate_reason(stats) is None


@pytest.mark.parametrize("name", ["bloom", "gemma-multi-query-wide-heads", "llama-gqa", "gpt2", "opt-350m-style", "neox-parallel"])
def test_calibration_brings_every_geometry_into_range(name):
    torch.manual_seed(0)
    model = randomise_(AutoModelForCausalLM.from_config(variants()[name], dtype=torch.float32), seed=0)
    calibration = calibrate_(model, seed=0)
    assert _in_range(calibration), calibration
    # Measured again on other input than the calibration probe: it holds beyond the probe.
    ids = torch.randint(3, variants()[name].vocab_size, (3, 20), generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        stats = reference_stats(model(ids).logits.log_softmax(-1), ids)
    assert _in_range(stats), stats


def test_uncalibrated_random_weights_were_degenerate():
    """The failure calibration exists for: a tied BLOOM one-hot on its input (a flat untied head is the
    inconclusive test below)."""
    for name, expected in (("bloom", "nats"),):
        torch.manual_seed(0)
        model = randomise_(AutoModelForCausalLM.from_config(variants()[name], dtype=torch.float32), seed=0)
        ids = torch.randint(3, 512, (2, 32), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            reason = degenerate_reason(reference_stats(model(ids).logits.log_softmax(-1), ids))
        assert reason is not None and expected in reason, (name, reason)


def test_degenerate_reason_names_each_range():
    good = {"median_entropy": 3.0, "median_top1_prob": 0.3, "input_token_argmax_share": 0.05}
    assert degenerate_reason(good) is None
    assert "entropy" in degenerate_reason({**good, "median_entropy": ENTROPY_RANGE[1] + 1})
    assert "entropy" in degenerate_reason({**good, "median_entropy": ENTROPY_RANGE[0] / 2})
    assert "one-hot" in degenerate_reason({**good, "median_top1_prob": TOP1_PROB_MAX + 0.05})
    assert "input token" in degenerate_reason({**good, "input_token_argmax_share": INPUT_TOKEN_ARGMAX_MAX + 0.1})


def test_a_degenerate_reference_makes_quality_inconclusive_never_a_pass(tmp_path):
    folder = make_synthetic_checkpoint(variants()["llama-gqa"], tmp_path / "flat", seed=1, calibrate=False)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():  # a near-zero LM head: every next-token distribution flat
        model.lm_head.weight.mul_(1e-3)
    model.save_pretrained(tmp_path / "flatter")
    pair = load_pair(tmp_path / "flatter", "cpu", "float32")
    with pytest.raises(CheckInconclusive, match="inconclusive: HF's median next-token entropy") as info:
        check_quality(pair)
    assert info.value.metrics["grade"] == grading.INCONCLUSIVE
    assert info.value.metrics["reference_stats"]["median_entropy"] > ENTROPY_RANGE[1]


def test_quality_rows_record_their_reference_statistics(synthetic_folders):
    metrics = check_quality(load_pair(synthetic_folders("llama-gqa"), "cpu", "float32"))
    assert _in_range(metrics["reference_stats"]) and metrics["grade"] == grading.GOOD
