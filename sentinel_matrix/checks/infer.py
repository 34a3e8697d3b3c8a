"""The infer check: finite outputs, left padding changes no row, the cache equals a full forward (called with
generate's positions and as HF users call it), cached greedy equals uncached."""

from __future__ import annotations

import torch

from sentinel_core.generation import position_ids as generate_positions  # HF generate's rule

from .. import grading
from ..evidence import memo
from .inputs import _logprobs, hf_position_kwargs, input_batch
from .pair import CheckFailed, ModelPair


INFER_NEW_TOKENS = 8  # cached vs uncached greedy; the logits themselves are compared over the whole batch

@torch.no_grad()
def check_infer(pair: ModelPair) -> dict:
    tol = grading.tolerance(pair.dtype)
    model = pair.adaptive
    ids, mask = input_batch(pair)
    pos = generate_positions(mask)
    real = mask.bool()
    logits = model(ids, attention_mask=mask, position_ids=pos).logits
    if not torch.isfinite(logits[real]).all():
        raise CheckFailed("forward produced NaN or inf logits on real tokens")
    out = model.generate(ids, attention_mask=mask, max_new_tokens=INFER_NEW_TOKENS, eos_token_id=[])
    if out.shape != (ids.shape[0], ids.shape[1] + INFER_NEW_TOKENS):
        raise CheckFailed(f"generate returned shape {tuple(out.shape)}")

    full = logits.float().log_softmax(-1)

    def beyond_resolution(a: torch.Tensor, ref: torch.Tensor) -> float:
        """max |a - ref| after allowing the dtype's resolution at each value (rtol · |ref|)."""
        return ((a - ref).abs() - tol.consistency_rtol * ref.abs()).max().item()

    def padding_effect(model, full) -> tuple[float, float]:
        """How far left padding moves a row's log-probs from the row alone: raw, and beyond resolution."""
        raw, excess = 0.0, float("-inf")
        for row in range(ids.shape[0]):
            alone = _logprobs(model, ids[row:row + 1, real[row]], None)[0]
            raw = max(raw, (full[row, real[row]] - alone).abs().max().item())
            excess = max(excess, beyond_resolution(full[row, real[row]], alone))
        return raw, excess

    padded_vs_alone, padded_excess = padding_effect(model, full)
    # HF's own, once per pair (the mutation check calls this per mutant)
    hf_padded_excess = memo(pair.cache, "hf_padding_effect", lambda: padding_effect(
        pair.hf, _logprobs(pair.hf, ids, mask, **hf_position_kwargs(pair, pos)))[1])
    padding_limit = grading.padding_limit(pair.dtype, hf_padded_excess)

    split = ids.shape[1] // 2
    first = model(ids[:, :split], attention_mask=mask[:, :split], position_ids=pos[:, :split], use_cache=True)
    rest = model(ids[:, split:], attention_mask=mask, position_ids=pos[:, split:],
                 past_key_values=first.past_key_values, use_cache=True)
    stitched = torch.cat([first.logits, rest.logits], dim=1).float().log_softmax(-1)
    cache_diff = (stitched - full)[real].abs().max().item()
    cache_excess = beyond_resolution(stitched[real], full[real])
    # The call as HF users make it: ids and mask only, the model deriving positions itself, cached in two
    # chunks against one full forward called the same way.
    plain = _logprobs(model, ids, mask)
    if not torch.isfinite(plain[real]).all():
        raise CheckFailed("a forward called with ids and mask only produced NaN or inf log-probs on real tokens")
    first = model(ids[:, :split], attention_mask=mask[:, :split], use_cache=True)
    rest = model(ids[:, split:], attention_mask=mask, past_key_values=first.past_key_values, use_cache=True)
    plain_stitched = torch.cat([first.logits, rest.logits], dim=1).float().log_softmax(-1)
    plain_cache_diff = (plain_stitched - plain)[real].abs().max().item()
    plain_cache_excess = beyond_resolution(plain_stitched[real], plain[real])
    # HF's own cached decoding against its own full forward, called the same way: how exact HF's cache is, a
    # quantity of HF alone (a release that changes it shows in the release table, not as ours)
    hf_cache_diff = memo(pair.cache, "hf_cache_effect", lambda: hf_cache_vs_full(pair.hf, ids, mask, split))
    no_cache = model.generate(ids, attention_mask=mask, max_new_tokens=INFER_NEW_TOKENS, eos_token_id=[],
                              use_cache=False)
    greedy_cache_agreement = (out[:, ids.shape[1]:] == no_cache[:, ids.shape[1]:]).float().mean().item()

    metrics = {"padded_vs_alone_max_diff": padded_vs_alone, "cache_vs_full_max_diff": cache_diff,
               # what is graded: the diff beyond the dtype's resolution (rtol · |log p|)
               "padded_vs_alone_beyond_resolution": padded_excess, "cache_vs_full_beyond_resolution": cache_excess,
               "baseline_padded_vs_alone_beyond_resolution": hf_padded_excess, "greedy_cache_agreement": greedy_cache_agreement,
               "hf_call_cache_vs_full_max_diff": plain_cache_diff, "hf_call_cache_vs_full_beyond_resolution": plain_cache_excess,
               "baseline_cache_vs_full_max_diff": hf_cache_diff}
    problems = []
    if padded_excess > padding_limit:
        problems.append(f"left-padded rows differ from the rows alone by {padded_vs_alone:.2e} "
                        f"(> {padding_limit:.1e} + {tol.consistency_rtol:.1e}·|log p|; HF's own padding moves "
                        f"{hf_padded_excess:.1e} beyond that resolution)")
    if cache_excess > tol.cache_vs_no_cache:
        problems.append(f"cached decoding differs from a full forward by {cache_diff:.2e} "
                        f"(> {tol.cache_vs_no_cache:.0e} + {tol.consistency_rtol:.1e}·|log p|)")
    if plain_cache_excess > tol.cache_vs_no_cache:
        problems.append(f"called with ids and mask only, cached decoding differs from a full forward by "
                        f"{plain_cache_diff:.2e} (> {tol.cache_vs_no_cache:.0e} + {tol.consistency_rtol:.1e}·|log p|)")
    if pair.dtype == "float32" and greedy_cache_agreement < 1.0:
        problems.append(f"greedy tokens with cache agree with no-cache on only {greedy_cache_agreement:.0%}")
    if problems:
        raise CheckFailed("; ".join(problems), metrics)
    return metrics


@torch.no_grad()
def hf_cache_vs_full(hf, ids, mask, split: int) -> float | None:
    """Max |Δ log p| over real tokens between HF decoding `ids` in two chunks through its cache and HF's one full
    forward, both called with ids and mask only; None where HF's class keeps no cache."""
    try:
        full = _logprobs(hf, ids, mask)
        first = hf(ids[:, :split], attention_mask=mask[:, :split], use_cache=True)
        if getattr(first, "past_key_values", None) is None:
            return None
        rest = hf(ids[:, split:], attention_mask=mask, past_key_values=first.past_key_values, use_cache=True)
    except (TypeError, ValueError, NotImplementedError):
        return None
    stitched = torch.cat([first.logits, rest.logits], dim=1).float().log_softmax(-1)
    return (stitched - full)[mask.bool()].abs().max().item()
