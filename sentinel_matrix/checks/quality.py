"""The quality check: the adaptive model against HF on the same device and dtype (sentinel_matrix/grading.py grades it)."""

from __future__ import annotations

import torch

from sentinel_core.generation import position_ids as generate_positions  # HF generate's rule
from sentinel_core.importance import perplexity
from sentinel_core.names import NATIVE
from sentinel_core.synthetic import degenerate_reason, reference_stats

from .. import grading
from .inputs import hf_position_kwargs
from .pair import CheckFailed, CheckInconclusive, ModelPair
from .reference import adaptive_logprobs, hf_reference, widened_max_diff


@torch.no_grad()
def rank_check(pair: ModelPair, prompt_ids, prompt_mask, ours, theirs, k: int) -> tuple[bool, int | None]:
    """vLLM-style: where greedy tokens first differ, each side's token must be in the other's top-k."""
    ok, first_divergence = True, None
    start = prompt_ids.shape[1]
    for row in range(ours.shape[0]):
        diff = (ours[row, start:] != theirs[row, start:]).nonzero()
        if not len(diff):
            continue
        at = start + diff[0].item()
        first_divergence = at - start if first_divergence is None else min(first_divergence, at - start)
        prefix = ours[row:row + 1, :at]
        mask = torch.cat([prompt_mask[row:row + 1], prompt_mask.new_ones(1, at - start)], dim=1)
        pos = generate_positions(mask)
        top_ours = pair.adaptive(prefix, attention_mask=mask, position_ids=pos).logits[0, -1].topk(k).indices
        top_theirs = pair.hf(prefix, attention_mask=mask, **hf_position_kwargs(pair, pos)).logits[0, -1].topk(k).indices
        ok &= bool((ours[row, at] == top_theirs).any() and (theirs[row, at] == top_ours).any())
    return ok, first_divergence


def _graded_diff_text(metrics: dict, dtype: str) -> str:
    if dtype == "float32":
        text = f"max |Δ log p| {metrics['max_logprob_diff']:.3e}"
        if metrics.get("hf_call_max_logprob_diff") is not None:
            text += f", called as HF users do (ids and mask) {metrics['hf_call_max_logprob_diff']:.3e}"
        if metrics.get("baseline_attention_paths_diff") is not None:
            text += f" (limit {grading.fp32_logprob_limit(metrics):.1e}; HF eager vs SDPA {metrics['baseline_attention_paths_diff']:.1e})"
        return text
    k = grading.HALF_PRECISION_LOGPROB_TOP_K
    text = f"max |Δ log p| {metrics[f'max_logprob_diff_top{k}']:.3e} over the top {k} tokens"
    if not grading.widened_within_limit(metrics):
        text += (f"; computed in fp32 on the row's own {dtype} weights, max |Δ log p| "
                 f"{metrics['widened_max_logprob_diff']:.3e} against HF's alike (limit {grading.widened_limit(metrics):.1e})")
    if "fp32_reference" in metrics:
        return text + f" (not measured against fp32: {metrics['fp32_reference']})"
    worst = [f"{name} ({h['positions']} positions): mean KL {h['kl_ratio']:.2f}×, mean |Δ log p| "
             f"{h['error_ratio']:.2f}× HF's own"
             for name, h in metrics["half_precision"].items() if h["grade"] != grading.GOOD]
    if not worst:
        return text
    return text + f"; against HF fp32 ({dtype} rounding of HF itself as the unit): " + "; ".join(worst)


def _quality_failure(pair: ModelPair, metrics: dict) -> CheckFailed:
    m = metrics
    return CheckFailed(
        f"adaptive differs from HF ({pair.dtype}): {_graded_diff_text(m, pair.dtype)}, "
        f"KL {m['kl']:.3e}, top-1 agreement {m['top1_agreement']:.1%}"
        + (f", greedy {m['greedy_agreement']:.1%} identical" if "greedy_agreement" in m else "")
        + (f", first divergence at token {m['first_greedy_divergence']}, rank check "
           f"{'passed' if m['rank_check'] else 'failed'}" if m.get("greedy_identical") is False else "")
        + (f", perplexity ratio {m['ppl_ratio']:.6f}" if "ppl_ratio" in m else ""), m)


@torch.no_grad()
def check_quality(pair: ModelPair, text: str | None = None, fail_fast: bool = False) -> dict:
    """fail_fast: stop before greedy decoding when the log-probs alone already grade Poor (the mutation
    check's mutants); a matrix row measures everything, so its record has every number."""
    ref = hf_reference(pair)
    ids, mask, real, theirs = ref.ids, ref.mask, ref.real, ref.theirs
    calls = adaptive_logprobs(pair, ref)
    ours = calls["padded"][0]
    k = grading.HALF_PRECISION_LOGPROB_TOP_K
    # Every side's top tokens, so a token one side favours and the others do not is compared too.
    top = torch.cat([t.topk(k, dim=-1).indices for t in (theirs, ours, ref.fp32) if t is not None], dim=-1)

    def top_k_diff(a, b) -> float:
        return (a.gather(-1, top) - b.gather(-1, top)).abs()[real].max().item()

    metrics = {"max_logprob_diff": (ours - theirs).abs()[real].max().item(),
               f"max_logprob_diff_top{k}": top_k_diff(ours, theirs),
               "kl": (theirs.exp() * (theirs - ours)).sum(-1)[real].mean().item(),
               "top1_agreement": (ours.argmax(-1) == theirs.argmax(-1))[real].float().mean().item(),
               # the call as HF users make it (ids and mask, no position_ids), against HF called the same way
               "hf_call_max_logprob_diff": (calls["hf_call"][0] - ref.plain[0]).abs()[real].max().item()}
    if ref.attention_paths_diff is not None:
        metrics["baseline_attention_paths_diff"] = ref.attention_paths_diff
    if ref.fp32 is not None:
        metrics["reference_stats"] = reference_stats(ref.fp32, ids, real)
    if ref.widened:
        metrics.update(widened_max_logprob_diff=widened_max_diff(pair, ref),
                       widened_attention_paths_diff=ref.widened_paths_diff)
    if pair.dtype != "float32":
        if ref.fp32 is None:
            metrics["fp32_reference"] = ref.fp32_note
        else:
            # recorded, not graded: a maximum grows with vocabulary and length (grading.py)
            metrics.update(grading.rounding_excess(ours=ours, baseline=theirs, reference=ref.fp32, tokens=top, real=real,
                                                   dtype=pair.dtype))
            half = {name: grading.half_precision_error(ours=o, baseline=t, reference=f, real=r)
                    for name, (o, t, f, r) in calls.items()}
            # The fused decode path (CUDA, half precision) on the same statistics inputs, one token at a time: graded
            # as the forward is, against HF fp32 with HF's own half precision as the unit.
            fused, reason = fused_logprobs(pair, ref)
            half.update({f"fused decode, {name}": grading.half_precision_error(ours=o, baseline=t, reference=f, real=r)
                         for name, (o, t, f, r) in fused.items()})
            if reason:
                metrics["fused_unavailable"] = reason
            metrics.update(half_precision=half, kl_ratio=max(h["kl_ratio"] for h in half.values()),
                           error_ratio=max(h["error_ratio"] for h in half.values()))
    if fail_fast and grading.grade_quality(pair.dtype, {**metrics, "greedy_identical": True,
                                                        "rank_check": True}) == grading.POOR:
        metrics["grade"] = grading.POOR
        raise _quality_failure(pair, metrics)

    if "fused_unavailable" not in metrics and pair.device == "cuda" and pair.dtype != "float32":
        metrics["fused_greedy_agreement"] = fused_greedy_agreement(pair, ids[:1, :16])
    g_theirs = ref.greedy
    g_ours = pair.adaptive.generate(ids, attention_mask=mask, max_new_tokens=grading.GREEDY_TOKENS, eos_token_id=[],
                                    pad_token_id=0)
    identical = bool(torch.equal(g_ours, g_theirs))
    rank_ok, first_div = (True, None) if identical else rank_check(pair, ids, mask, g_ours, g_theirs,
                                                                  grading.RANK_CHECK_TOP_K)
    metrics.update(greedy_agreement=(g_ours[:, ids.shape[1]:] == g_theirs[:, ids.shape[1]:]).float().mean().item(),
                   greedy_identical=identical, first_greedy_divergence=first_div, rank_check=rank_ok)
    grade = grading.grade_quality(pair.dtype, metrics)

    if pair.real_weights and text is not None and pair.tokenizer is not None:
        tokens = pair.tokenizer(text, return_tensors="pt")["input_ids"][:, :grading.PERPLEXITY_TOKENS].to(pair.device)
        ppl_hf = perplexity(pair.hf, tokens, grading.PERPLEXITY_WINDOW)
        ppl_ad = perplexity(pair.adaptive, tokens, grading.PERPLEXITY_WINDOW)
        metrics.update(ppl=ppl_ad, baseline_ppl=ppl_hf, ppl_ratio=ppl_ad / ppl_hf, ppl_tokens=tokens.shape[1])
        grade = grading.worst(grade, grading.grade_perplexity(pair.dtype, ppl_ad / ppl_hf))
        metrics["sample_output"] = sample_output(pair)
    metrics["grade"] = grade
    if grade == grading.POOR:
        raise _quality_failure(pair, metrics)
    degenerate = degenerate_reason(metrics["reference_stats"]) if "reference_stats" in metrics else None
    if degenerate:
        metrics["grade"] = grading.INCONCLUSIVE
        raise CheckInconclusive(f"inconclusive: {degenerate}, so agreement with it proves little", metrics)
    return metrics


def fused_unavailable(pair: ModelPair) -> str | None:
    if pair.device != "cuda":
        return "the fused decode path runs on CUDA"
    if getattr(pair.adaptive, "adaptive_path", None) != NATIVE:
        return "the generic wrapper decodes with HF"
    from sentinel_core.fused import unsupported_reason

    return unsupported_reason(pair.adaptive)


@torch.no_grad()
def fused_logprobs(pair: ModelPair, ref) -> tuple[dict, str | None]:
    """The fused decode step's log-probs on each statistics input (name -> (ours, HF's, HF fp32's, real)), each row
    teacher-forced one token at a time after its first; or ({}, why the fused path does not run here)."""
    reason = fused_unavailable(pair)
    if reason:
        return {}, reason
    from sentinel_core.decoder import StaticKVCache
    from sentinel_core.fused import FusedDecodeStep

    model = pair.adaptive
    step = FusedDecodeStep(model)
    out = {}
    for name, (ids, theirs, fp32) in ref.statistics.items():
        rows = []
        for row in ids:
            T = row.shape[0]
            cache = StaticKVCache(model, 1, T)
            mask = torch.zeros(1, T, dtype=torch.long, device=row.device)
            mask[0, 0] = 1
            logits = [model(row[None, :1], attention_mask=mask, position_ids=torch.zeros(1, 1, dtype=torch.long,
                            device=row.device), past_key_values=cache, logits_to_keep=1).logits[0, -1]]
            for t in range(1, T):
                mask[0, t] = 1
                logits.append(step(row[None, t:t + 1], attention_mask=mask, past_key_values=cache,
                                   position_ids=torch.full((1, 1), t, device=row.device)).logits[0, -1])
            rows.append(torch.stack(logits).float().log_softmax(-1))
        out[name] = (torch.stack(rows), theirs, fp32, torch.ones_like(ids, dtype=torch.bool))
    return out, None


@torch.no_grad()
def fused_greedy_agreement(pair: ModelPair, prompt) -> float:
    """The share of greedy tokens the fused path gives as the CUDA-graph path does (recorded: near-ties may part)."""
    kw = dict(max_new_tokens=grading.GREEDY_TOKENS, eos_token_id=[])
    fused, graph = pair.adaptive.generate(prompt, fused=True, **kw), pair.adaptive.generate(prompt, cuda_graph=True, **kw)
    new = slice(prompt.shape[1], None)
    return (fused[:, new] == graph[:, new]).float().mean().item()


@torch.no_grad()
def sample_output(pair: ModelPair) -> str:
    tok = pair.tokenizer
    enc = tok(grading.SAMPLE_PROMPT, return_tensors="pt").to(pair.device)
    out = pair.adaptive.generate(enc["input_ids"], attention_mask=enc["attention_mask"],
                                 max_new_tokens=grading.SAMPLE_TOKENS)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
