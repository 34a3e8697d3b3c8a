"""The prune check: which heads a trained model can lose, and what losing them costs and gains.

Importance is estimated on a calibration split of the perplexity text and perplexity measured on a disjoint
held-out split, at every fraction of heads removed (global ranking, one head per layer kept) for every
importance method; random is the control (mean and spread over seeds). Perplexity is taken with the plan's
gates at 0, which is the pruned model (tests/test_gates.py), so one loaded model serves every point; the
throughput of each fraction is measured on a copy really pruned with `prune_heads`.

Michel, Levy & Neubig 2019 (Figure 3) is the picture this reproduces: importance order against random.
"""

from __future__ import annotations

import copy
import gc
import statistics
from dataclasses import dataclass

import torch

from sentinel_core.errors import UnsupportedModelError
from sentinel_core.names import IMPORTANCE_METHODS
from sentinel_core.importance import (calibration_and_heldout, gated_plan, head_importance,
                                      importance_prune_plan, perplexity)

from .. import grading
from ..timing import spread, time_runs
from .kinds import is_encoder_decoder
from .pair import CheckFailed, ModelPair

FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)  # 0.05: small models lose more per head than the paper's
METHODS = IMPORTANCE_METHODS
RANDOM_SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Sizes:
    calibration_rows: int  # windows importance is estimated on (the text's first tokens)
    calibration_length: int
    heldout_tokens: int  # perplexity's tokens (the text's last)


# Ablation is one forward per head and every point of every curve one perplexity: a CPU affords a small
# calibration split (noisier rankings), a GPU a larger one. Each record names the sizes it used.
SIZES = {"cpu": Sizes(calibration_rows=2, calibration_length=64, heldout_tokens=512),
         "cuda": Sizes(calibration_rows=8, calibration_length=256, heldout_tokens=4096)}
PPL_WINDOW = grading.PERPLEXITY_WINDOW
THROUGHPUT_METHOD = "gradient"  # whose plans are pruned for real and timed
THROUGHPUT_PROMPT, THROUGHPUT_NEW_TOKENS, THROUGHPUT_PREFILL, THROUGHPUT_ROUNDS = 16, 32, 256, 3

# On a CPU a model past this size takes longer than a matrix row should (measured on the project's 2 cores:
# SmolLM2-135M about 4 minutes, Qwen2.5-0.5B past 12 minutes unfinished): its row skips and says so.
CPU_MAX_PARAMS = 300_000_000


def too_slow_here(model, device: str) -> str | None:
    """Why this row is not run here (None: it runs)."""
    if is_encoder_decoder(model):
        return ("pruning curves are perplexity on text, which an encoder-decoder has no source for: its pruning is "
                "held to its gates at 0 in the quality row")
    params = sum(p.numel() for p in model.parameters())
    if device == "cpu" and params > CPU_MAX_PARAMS:
        return (f"pruning curves of a {params / 1e6:.0f}M-parameter model take too long on a CPU (ablation is one "
                f"forward per head, every curve point a perplexity): run this row on a GPU (--devices cuda)")
    return None


def prunable_fraction(curve: list[list[float]], within: float = grading.PRUNABLE_PPL_WITHIN) -> float:
    """The largest fraction f of `curve` ([[fraction, ppl], ...] from 0) with every point up to f within
    (1 + within) × the perplexity at 0."""
    base = curve[0][1]
    best = 0.0
    for fraction, ppl in curve:
        if ppl > (1 + within) * base:
            break
        best = fraction
    return best


def scores_by_method(model, calibration: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every method's scores; random once per seed (`random/0`, ...). A method the model's layout cannot
    give (magnitude on some wrapped models) is left out."""
    scores = {}
    for method in METHODS:
        if method == "random":
            for seed in RANDOM_SEEDS:
                scores[f"random/{seed}"] = head_importance(model, None, method="random", seed=seed)
            continue
        try:
            scores[method] = head_importance(model, calibration, method=method, normalize=method == "gradient")
        except UnsupportedModelError:
            continue
    return scores


@torch.no_grad()
def pruned_vs_gated(model, plan: dict[int, list[int]], ids: torch.Tensor) -> float:
    """Max |Δ log p| between the model pruned for real and the model with the plan's gates at 0: the same model,
    so they must agree (grading.pruned_vs_gated_limit) or the curves, taken through the gates, say nothing about
    what pruning gives. Both run in float64: the two compute one function in different shapes, and in fp32 their
    rounding alone differs by more than fp32's bar (SmolLM2, 512 tokens, half the heads: 1.3e-3 in fp32, 2.1e-12 in
    float64), so only float64 tells a pruning bug from rounding."""
    exact = copy.deepcopy(model).to(torch.float64)
    with gated_plan(exact, plan):
        gated = exact(ids).logits.log_softmax(-1)
    exact.prune_heads(plan)
    difference = (exact(ids).logits.log_softmax(-1) - gated).abs().max().item()
    del exact
    gc.collect()
    return difference


def throughput(model, plan: dict[int, list[int]], device: str, vocab: int, check_ids: torch.Tensor | None = None) -> dict:
    """Prefill latency and decode throughput of a copy of `model` with `plan` pruned for real; with no plan, of
    `model` itself (a copy's fresh allocations would time something other than the model every other point is
    compared with)."""
    pruned = copy.deepcopy(model) if plan else model
    if plan:
        pruned.prune_heads(plan)
    g = torch.Generator().manual_seed(0)
    prefill_ids = torch.randint(3, vocab, (1, THROUGHPUT_PREFILL), generator=g).to(device)
    prompt = torch.randint(3, vocab, (1, THROUGHPUT_PROMPT), generator=g).to(device)
    with torch.no_grad():
        prefill = time_runs(lambda: pruned(prefill_ids), device, THROUGHPUT_ROUNDS)
        decode = time_runs(lambda: pruned.generate(prompt, max_new_tokens=THROUGHPUT_NEW_TOKENS, eos_token_id=[]),
                           device, THROUGHPUT_ROUNDS)
    params = sum(p.numel() for p in pruned.parameters())
    del pruned
    gc.collect()
    return {**spread("prefill_ms", [t * 1e3 for t in prefill]),
            **spread("decode_tokens_per_s", [THROUGHPUT_NEW_TOKENS / t for t in decode]), "params": params,
            "pruned_vs_gated": pruned_vs_gated(model, plan, check_ids) if plan and check_ids is not None else 0.0}


def check_prune(pair: ModelPair, text_name: str, text: str) -> dict:
    model = pair.adaptive
    sizes = SIZES[pair.device]
    calibration, heldout = calibration_and_heldout(pair.tokenizer, text, sizes.calibration_rows,
                                                   sizes.calibration_length, sizes.heldout_tokens)
    calibration, heldout = calibration.to(pair.device), heldout.to(pair.device)
    scores = scores_by_method(model, calibration)
    base = perplexity(model, heldout, PPL_WINDOW)

    curves: dict[str, list[list[float]]] = {}
    plans: dict[str, dict[float, dict]] = {}
    for name, method_scores in scores.items():
        curves[name], plans[name] = [[0.0, base]], {0.0: {}}
        for fraction in FRACTIONS[1:]:
            plan = importance_prune_plan(method_scores, fraction=fraction)
            with gated_plan(model, plan):
                curves[name].append([fraction, perplexity(model, heldout, PPL_WINDOW)])
            plans[name][fraction] = plan

    seeds = [curves.pop(f"random/{seed}") for seed in RANDOM_SEEDS]
    curves["random"] = [[fraction, statistics.mean(c[i][1] for c in seeds)] for i, fraction in enumerate(FRACTIONS)]
    random_spread = [[fraction, min(c[i][1] for c in seeds), max(c[i][1] for c in seeds)]
                     for i, fraction in enumerate(FRACTIONS)]

    vocab = model.config.vocab_size if getattr(model, "config", None) is not None else int(heldout.max()) + 1
    check_ids = heldout[:, :PPL_WINDOW]
    timed = {fraction: throughput(model, plans[THROUGHPUT_METHOD][fraction], pair.device, vocab, check_ids)
             for fraction in FRACTIONS}
    limit = grading.pruned_vs_gated_limit("float32")  # compared in float64 (pruned_vs_gated), held to fp32's bar
    metrics = {
        "ppl_text": text_name, "calibration_tokens": calibration.numel(), "heldout_tokens": heldout.shape[1],
        "heads": int(model.gates.numel()),
        "ppl_by_fraction": curves, "ppl_random_spread": random_spread,
        "prunable_fraction": {method: prunable_fraction(curve) for method, curve in curves.items()},
        "prunable_within": grading.PRUNABLE_PPL_WITHIN, "random_seeds": list(RANDOM_SEEDS),
        "throughput_method": THROUGHPUT_METHOD,
        "throughput_by_fraction": [[fraction, t["prefill_ms"], t["prefill_ms_iqr"], t["decode_tokens_per_s"],
                                    t["decode_tokens_per_s_iqr"], t["params"]] for fraction, t in timed.items()],
        "throughput_columns": ["fraction", "prefill_ms", "prefill_ms_iqr", "decode_tokens_per_s",
                               "decode_tokens_per_s_iqr", "params"],
        "pruned_vs_gated_max_diff": max(t["pruned_vs_gated"] for t in timed.values()),
        "pruned_vs_gated_limit": limit,
    }
    wrong = [f"{fraction:.0%} ({t['pruned_vs_gated']:.2e})" for fraction, t in timed.items() if t["pruned_vs_gated"] > limit]
    if wrong:
        raise CheckFailed(f"the model pruned for real differs from the same heads gated to 0 by more than {limit:.0e} "
                          f"(max |Δ log p|) at {', '.join(wrong)} of heads removed: pruning is broken, and the curves "
                          f"(taken through the gates) do not describe the pruned model", metrics)
    return metrics
