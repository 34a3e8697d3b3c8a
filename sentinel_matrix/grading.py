"""Every tolerance and grade the matrix and the report use, in one place.

fp32 is held to exactness (the adaptive model is the HF model); bf16/fp16 rows compare two
implementations that round differently, so they are judged against HF in fp32, token by token, next to
HF's own rounding (rounding_excess), and greedy tokens may part ways only where both sides' tokens are
in each other's top-k (vLLM's rank check). A rule here is trusted only with its mutation score: the
`mutation` check injects conversion bugs (sentinel_matrix/mutants.py) and records which of them the rules catch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

GOOD, FAIR, POOR = "Good", "Fair", "Poor"
INCONCLUSIVE = "inconclusive"  # the reference distribution is degenerate (sentinel_core/synthetic.py)


@dataclass(frozen=True)
class Tolerance:
    max_logprob_diff: float  # max |log p(adaptive) - log p(HF)| over real tokens, for Good
    fair_logprob_diff: float  # ... for Fair
    max_kl: float  # mean KL(HF || adaptive) per token, for Good
    fair_kl: float
    padded_vs_alone: float  # |log p| diff between a left-padded row and the same row alone ...
    cache_vs_no_cache: float  # ... and between cached decoding and one full forward, each plus
    consistency_rtol: float  # ... this share of |log p|: the dtype's resolution (torch.testing's rtol).
    # A log p of -288 (gemma-2b's 256k-token tail, synthetic weights) is resolved to 3e-5 in fp32; HF
    # itself moved 9.2e-5 there between a padded row and the row alone, and the adaptive model 1.2e-4.
    ppl_ratio: float  # |ppl(adaptive) / ppl(HF) - 1| for Good
    fair_ppl_ratio: float


TOLERANCES = {
    "float32": Tolerance(max_logprob_diff=1e-4, fair_logprob_diff=1e-3, max_kl=1e-6, fair_kl=1e-4,
                         padded_vs_alone=1e-4, cache_vs_no_cache=1e-4, consistency_rtol=1.3e-6, ppl_ratio=1e-4,
                         fair_ppl_ratio=1e-3),
    "bfloat16": Tolerance(max_logprob_diff=0.25, fair_logprob_diff=1.0, max_kl=2e-3, fair_kl=2e-2,
                          padded_vs_alone=0.5, cache_vs_no_cache=0.5, consistency_rtol=1.6e-2, ppl_ratio=5e-3,
                          fair_ppl_ratio=2e-2),
    "float16": Tolerance(max_logprob_diff=0.05, fair_logprob_diff=0.25, max_kl=2e-4, fair_kl=2e-3,
                         padded_vs_alone=0.1, cache_vs_no_cache=0.1, consistency_rtol=1e-3, ppl_ratio=1e-3,
                         fair_ppl_ratio=5e-3),
}

# Half precision: two implementations that round differently cannot agree to fp32's 1e-4, and a bar on
# their raw difference is either loose enough to pass real bugs or fails on HF's own rounding. So a
# bf16/fp16 row is graded against HF in fp32 on the same device, on statistics that average rounding away:
# the mean KL(HF fp32 || model) per position and the mean |log p - HF fp32| over fp32's top tokens, each as a
# multiple of HF's own half-precision error on the same inputs. Maxima are recorded, never graded: the
# maximum over every position and token grows with vocabulary and length, and on SmolLM2's real weights
# (bf16, 512 tokens) the correct adaptive model's was twice HF's (0.93 against 0.47) while its mean KL was
# 1.14x HF's and one swapped pair of query heads 6.25x.
# The statistics need many positions: on a GPU rows x tokens of seeded random ids (or the real text for real
# weights), plus one long row where the config allows it, since rope precision shows only far out.
HALF_PRECISION_LOGPROB_TOP_K = 32
STATISTICS_BATCH = {"cuda": (4, 512), "cpu": (2, 256)}  # rows x tokens, capped by the model's positions
LONG_CONTEXT = {"cuda": 2048}  # one row of this many positions where the config allows; none on a CPU
ROUNDING_SCALE_QUANTILE = 0.9
KL_RATIO_GOOD = 1.25  # mean KL(HF fp32 || adaptive half) over HF's own KL(HF fp32 || HF half); the same for the
KL_RATIO_FAIR = 1.5  # mean |Δ log p| over fp32's top tokens
KL_FLOOR = 1e-5  # nats: below this both KLs are rounding of rounding
ERROR_FLOOR = 1e-4  # mean |Δ log p| below fp32's own bar: both sides are exact
RANK_CHECK_TOP_K = 5  # vLLM's check_logprobs_close: at the first greedy divergence each token is in the other's top 5
GREEDY_TOKENS = 32
SAMPLE_PROMPT = "The adaptive transformer architecture enables AI systems to"
SAMPLE_TOKENS = 24
PERPLEXITY_TOKENS = 1024  # of real English text, in windows of PERPLEXITY_WINDOW
PERPLEXITY_WINDOW = 512
# The prune check's "prunable" fraction: the largest one up to which held-out perplexity stays within this
# much of the unpruned model's (a measurement, not a grade: the prune check decides no status).
PRUNABLE_PPL_WITHIN = 0.05


def tolerance(dtype: str) -> Tolerance:
    return TOLERANCES[dtype]


def rounding_excess(*, ours, baseline, reference, tokens, real, dtype: str) -> dict:
    """Token-by-token comparison of two half-precision log-prob tensors with an fp32 reference ([B, T, V]
    each; `tokens` [B, T, n] the token ids compared at each position, `real` [B, T] the positions).

    scale(p) = the ROUNDING_SCALE_QUANTILE of HF's own error over position p's tokens (at least the
    dtype's eps): what rounding alone does there. excess(p, v) = (|ours - ref| - |baseline - ref|) / scale(p).
    rounding_excess is its maximum: one token far beyond HF's rounding at that position is enough to show."""
    k = HALF_PRECISION_LOGPROB_TOP_K
    ref = reference.gather(-1, tokens)[real]
    err_ours = (ours.gather(-1, tokens)[real] - ref).abs()
    err_base = (baseline.gather(-1, tokens)[real] - ref).abs()
    floor = torch.finfo(getattr(torch, dtype)).eps
    scale = err_base.quantile(ROUNDING_SCALE_QUANTILE, dim=-1, keepdim=True).clamp_min(floor)
    excess = (err_ours - err_base) / scale

    def kl(p_log, q_log):
        return (p_log.exp() * (p_log - q_log)).sum(-1)[real].mean().item()

    return {f"adaptive_error_vs_fp32_top{k}": err_ours.max().item(), f"baseline_error_vs_fp32_top{k}": err_base.max().item(),
            "rounding_excess": excess.max().item(), "rounding_excess_q99": excess.flatten().quantile(0.99).item(),
            "kl_vs_fp32": kl(reference, ours), "baseline_kl_vs_fp32": kl(reference, baseline)}


def half_precision_error(*, ours, baseline, reference, real) -> dict:
    """Mean errors of two half-precision log-prob tensors against an fp32 reference ([B, T, V] each; `real`
    [B, T] the positions): KL per position and |Δ log p| over the reference's top tokens, ours, HF's and their
    ratios, and the grade they give (Good within KL_RATIO_GOOD of HF's own on both, Fair within KL_RATIO_FAIR)."""
    top = reference.topk(HALF_PRECISION_LOGPROB_TOP_K, dim=-1).indices

    def kl(q_log):
        return (reference.exp() * (reference - q_log)).sum(-1)[real].mean().item()

    def error(q_log):
        return (q_log.gather(-1, top) - reference.gather(-1, top)).abs()[real].mean().item()

    m = {"kl_vs_fp32": kl(ours), "baseline_kl_vs_fp32": kl(baseline), "error_vs_fp32": error(ours),
         "baseline_error_vs_fp32": error(baseline), "positions": int(real.sum())}
    m["kl_ratio"] = m["kl_vs_fp32"] / max(m["baseline_kl_vs_fp32"], KL_FLOOR)
    m["error_ratio"] = m["error_vs_fp32"] / max(m["baseline_error_vs_fp32"], ERROR_FLOOR)

    def within(ratio: float) -> bool:
        return (m["kl_vs_fp32"] <= ratio * m["baseline_kl_vs_fp32"] + KL_FLOOR
                and m["error_vs_fp32"] <= ratio * m["baseline_error_vs_fp32"] + ERROR_FLOOR)

    m["grade"] = GOOD if within(KL_RATIO_GOOD) else FAIR if within(KL_RATIO_FAIR) else POOR
    return m


def grade_quality(dtype: str, m: dict) -> str:
    """Good: equal within the dtype's bar and greedy identical; Fair: close, divergence only between
    near-ties; Poor: anything else (the row fails).

    fp32: the whole-vocabulary max |Δ log p| (of the generate-style call and of HF's plain call) and KL against
    HF. Half precision, two questions: is it HF's function, and does it round no worse than HF? The first is
    fp32's rule on the row's own weights (widened_within_limit); the second, with an fp32 reference, every
    input's mean KL and mean |Δ log p| to fp32 beside HF's own (half_precision_error; greedy tokens are shown, not
    graded), and without one the raw top-32 difference."""
    tol = tolerance(dtype)
    greedy, rank = m["greedy_identical"], m["rank_check"]
    if dtype == "float32":
        limit = fp32_logprob_limit(m)
        exact = m["max_logprob_diff"] <= limit and m.get("hf_call_max_logprob_diff", 0.0) <= limit
        return GOOD if exact and m["kl"] <= tol.max_kl and greedy else POOR
    function = GOOD if widened_within_limit(m) else POOR
    if "half_precision" in m:  # per input: the statistics batch, the long row, the padded batch both ways
        return worst(function, *(probe["grade"] for probe in m["half_precision"].values()))
    diff, kl = m[f"max_logprob_diff_top{HALF_PRECISION_LOGPROB_TOP_K}"], m["kl"]
    if diff <= tol.max_logprob_diff and kl <= tol.max_kl and greedy:
        return function
    if diff <= tol.fair_logprob_diff and kl <= tol.fair_kl and (greedy or rank):
        return worst(function, FAIR)
    return POOR


# Half precision's first question. The model loaded in bf16 or fp16, its weights widened to fp32 (exact: every
# half-precision value is an fp32 value) and computed in fp32, against HF in fp32 with each weight rounded as loading
# in that dtype rounds it, on the padded batch called both ways: no rounding of the row's dtype is left, so the fp32
# row's rule applies, on the fp32 row's inputs (the limit is HF's own eager/SDPA distance there where that is
# larger). It sees the conversion bugs that survive in the loaded weights and buffers (a head permuted, an eps, a
# rotary base, frequencies stored in bf16), which half precision's own rounding hides: on the GPU records of
# 67e2748, the statistics alone caught 58 of the 94 catchable mutants of the 8 verdict geometries. What it cannot
# see is arithmetic done in half precision where HF widens, or an error that shows only far out: those are the
# statistics' part. (Long inputs are not held to fp32's bar: over 4 x 512 + 2,048 positions a correct BLOOM-560m
# was 2.3e-4 from HF in fp32, where HF has no second path to measure its own spread by.)
def widened_limit(m: dict) -> float:
    return fp32_logprob_limit({"baseline_attention_paths_diff": m.get("widened_attention_paths_diff")})


def widened_within_limit(m: dict) -> bool:
    return m.get("widened_max_logprob_diff") is None or m["widened_max_logprob_diff"] <= widened_limit(m)


# fp32 is held to 1e-4, unless HF is not that exact with itself: where HF's eager and SDPA attention
# differ by more on the same batch (gemma-3-1b-pt on CPU: 1.3e-4, where ours equals HF SDPA bitwise), the adaptive model
# may be as far from HF eager as HF's own other path is, and no further. Padding likewise: left padding may
# move the adaptive model's rows as far as it moves HF's own. The mutation check's fp32 noise is this same
# limit, so a bug is scored against the bar the row is graded by.
def fp32_logprob_limit(m: dict) -> float:
    return max(TOLERANCES["float32"].max_logprob_diff, m.get("baseline_attention_paths_diff") or 0.0)


def pruned_vs_gated_limit(dtype: str) -> float:
    """A model pruned for real against the same model with those heads' gates at 0: one model computed in other
    shapes, so the bar is the dtype's consistency bar (as for cached decoding against a full forward); in fp32,
    fp32's 1e-4."""
    return tolerance(dtype).cache_vs_no_cache


def padding_limit(dtype: str, baseline_padding_effect: float) -> float:
    return max(tolerance(dtype).padded_vs_alone, baseline_padding_effect)


def grade_perplexity(dtype: str, ratio: float) -> str:
    tol = tolerance(dtype)
    off = abs(ratio - 1.0)
    return GOOD if off <= tol.ppl_ratio else FAIR if off <= tol.fair_ppl_ratio else POOR


def worst(*grades: str) -> str:
    order = [GOOD, FAIR, POOR]
    return max(grades, key=order.index)


# Status rules of the report live in sentinel_reports/status.py; benchmark ratios are reported, not graded.

# Benchmarks: batch-1 decode cannot beat reading every weight once per token. The figure for
# the H200 (HBM3e) is about 4.3 TB/s; the report states graph and compiled decode as a share of it.
WEIGHT_BANDWIDTH_BYTES_PER_S = {"H200": 4.3e12}
BANDWIDTH_SHARE_MIN_MB = 64  # below this a decode step is bound by latency, not bytes: no share is shown


# Mutation testing (sentinel_matrix/mutants.py): a mutant is catchable when its effect, measured in fp32 against HF in
# fp32 on the row's inputs, exceeds the fp32 bar (fp32_logprob_limit): then it is a real change of the model,
# and a row of any dtype must catch it. There is no noise factor: in half precision the share caught is the
# checks' power; in fp32, where the effect is the quality check's own statistic, it is the mutants' sensitivity.
def mutation_bar(attention_paths_diff: float | None = None) -> float:
    return fp32_logprob_limit({"baseline_attention_paths_diff": attention_paths_diff})
