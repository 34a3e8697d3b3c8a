"""The matrix's checks as plain functions: each takes a loaded model pair, returns metrics, and raises
CheckFailed with a message that names the difference when the adaptive model is not the HF model."""

from __future__ import annotations

import functools
import gc
import inspect
import threading
import time
from dataclasses import dataclass, field

import psutil
import torch

from sentinel_core import load_adaptive_model, load_baseline_model
from sentinel_core.families import reference_attention
from sentinel_core.importance import perplexity
from sentinel_core.loader import load_config
from sentinel_core.generation import position_ids as generate_positions  # HF generate's rule
from sentinel_core.synthetic import degenerate_reason, reference_stats

from . import grading
from .evidence import memo


class CheckFailed(AssertionError):
    """A measured difference, with its numbers in the message and in `metrics` (the record keeps them)."""

    def __init__(self, message: str, metrics: dict | None = None):
        super().__init__(message)
        self.metrics = metrics or {}


class CheckInconclusive(Exception):
    """The check ran but its reference cannot tell right from wrong (a degenerate HF distribution): no pass, no failure."""

    def __init__(self, message: str, metrics: dict | None = None):
        super().__init__(message)
        self.metrics = metrics or {}


@dataclass
class ModelPair:
    hf: object
    adaptive: object
    tokenizer: object | None
    device: str
    dtype: str
    real_weights: bool
    metrics: dict = field(default_factory=dict)  # load-time measurements
    # Loads HF's model in fp32 on the same device: the reference a half-precision row's rounding is
    # measured against (None: no reference, e.g. a pair built by hand in a test).
    load_fp32_reference: object = None
    # HF's side of the comparisons (hf_reference), computed once: every mutant of the mutation check reuses it.
    cache: dict = field(default_factory=dict)
    load_fp32_adaptive: object = None  # the adaptive model in fp32: mutants' effects are measured on it

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 5 ms), in MiB."""

    def __enter__(self):
        self.start = self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())
        self.growth_mb = self.peak - self.start


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed_load(fn, device: str):
    """(result, seconds, peak MiB): CUDA max allocated on GPU, RSS growth on CPU."""
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        t = time.perf_counter()
        result = fn()
        synchronize(device)
        return result, time.perf_counter() - t, (torch.cuda.max_memory_allocated() - before) / 2**20
    with PeakRSS() as mem:
        t = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t
    return result, seconds, mem.growth_mb


def load_pair(folder, device: str, dtype: str, tokenizer=None, real_weights=False, hf_kwargs=None) -> ModelPair:
    """HF's reference (eager attention, or what the family names: Falcon-RW's ALiBi is SDPA's) and the adaptive
    model, each loaded through its own public path and timed."""
    hf_kwargs = dict(hf_kwargs or {})
    hf_kwargs.setdefault("attn_implementation", reference_attention(load_config(str(folder))))
    hf, hf_s, hf_mb = timed_load(lambda: load_baseline_model(folder, device=device, dtype=dtype, **hf_kwargs), device)
    loader = (lambda: load_adaptive_model(folder, baseline_model=hf, device=device, dtype=dtype)) \
        if set(hf_kwargs) - {"attn_implementation"} else (lambda: load_adaptive_model(folder, device=device, dtype=dtype))
    adaptive, ad_s, ad_mb = timed_load(loader, device)
    metrics = {"load_s": round(ad_s, 3), "baseline_load_s": round(hf_s, 3), "peak_mem_mb": round(ad_mb, 1),
               "baseline_peak_mem_mb": round(hf_mb, 1)}
    fp32_reference = lambda: load_baseline_model(folder, device=device, dtype="float32", **hf_kwargs)  # noqa: E731
    fp32_adaptive = lambda: load_adaptive_model(folder, device=device, dtype="float32")  # noqa: E731
    return ModelPair(hf, adaptive, tokenizer, device, dtype, real_weights, metrics, load_fp32_reference=fp32_reference,
                     load_fp32_adaptive=fp32_adaptive)


# Inputs ---------------------------------------------------------------------------------------

PROMPTS = [
    "The history of the city begins in the twelfth century, when a small market grew up beside the river",
    "Water boils at a lower temperature",
    "In mathematics, a prime number is",
]


def input_batch(pair: ModelPair) -> tuple[torch.Tensor, torch.Tensor]:
    """A left-padded batch of three rows of different lengths: real text with a tokenizer, else random ids."""
    if pair.tokenizer is not None:
        rows = [pair.tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    else:
        g = torch.Generator().manual_seed(0)
        vocab = pair.adaptive.spec.vocab_size
        rows = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in (13, 9, 5)]
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    return ids.to(pair.device), mask.to(pair.device)


def max_positions(pair: ModelPair) -> int | None:
    """How many positions the model was built for (None: no limit, as with ALiBi)."""
    config = pair.hf.config
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    return None


def statistics_inputs(pair: ModelPair) -> dict[str, tuple[torch.Tensor, None]]:
    """Half precision's inputs beside the padded batch: grading.STATISTICS_BATCH rows of many positions and,
    where the device has a LONG_CONTEXT and the config allows it, one long row (rope precision shows far out).
    Real weights read the shipped Wikipedia text; synthetic ones seeded random ids. No padding: called as
    `model(ids)`, the way HF users call a model on one text."""
    if pair.dtype == "float32":
        return {}
    device = "cuda" if pair.device.startswith("cuda") else "cpu"
    limit = max_positions(pair) or 1 << 30
    rows, length = grading.STATISTICS_BATCH[device]
    length = min(length, limit)
    long = grading.LONG_CONTEXT.get(device)
    needed = max(rows * length, long if long and long <= limit else 0)
    if pair.real_weights and pair.tokenizer is not None:
        from .sources import wikipedia_text

        tokens = pair.tokenizer(wikipedia_text(), return_tensors="pt")["input_ids"][0, :needed]
    else:
        tokens = torch.randint(3, pair.adaptive.spec.vocab_size, (needed,), generator=torch.Generator().manual_seed(1))
    inputs = {"statistics": (tokens[:rows * length].view(rows, length).to(pair.device), None)}
    if long and long <= limit and len(tokens) >= long:
        inputs["long"] = (tokens[None, :long].to(pair.device), None)
    return inputs


def hf_position_kwargs(pair: ModelPair, positions: torch.Tensor) -> dict:
    """position_ids for the HF baseline where it takes them: not for ALiBi models (BLOOM, MPT).

    A wrapped model (no native spec) is asked through its HF forward's signature."""
    if pair.adaptive.adaptive_path == "native":
        takes = pair.adaptive.spec.positions != "alibi"
    else:
        takes = "position_ids" in inspect.signature(pair.hf.forward).parameters
    return {"position_ids": positions} if takes else {}


def _logprobs(model, ids, mask, **kw) -> torch.Tensor:
    return model(ids, attention_mask=mask, **kw).logits.float().log_softmax(-1)


# load -----------------------------------------------------------------------------------------

def check_load(pair: ModelPair) -> dict:
    n_hf = sum(p.numel() for p in pair.hf.parameters())
    n_ad = sum(p.numel() for p in pair.adaptive.parameters())
    gates = pair.adaptive.num_layers * pair.adaptive.num_heads
    metrics = {**pair.metrics, "params_hf": n_hf, "params_adaptive": n_ad, "gates": gates,
               "load_ratio": round(pair.metrics["load_s"] / max(pair.metrics["baseline_load_s"], 1e-9), 3)}
    if n_ad != n_hf + gates:
        raise CheckFailed(f"parameter count {n_ad:,} != HF {n_hf:,} + {gates} gates", metrics)
    metrics["first_and_last_layer_gate_effect"] = gate_effect(pair)
    if metrics["first_and_last_layer_gate_effect"] == 0.0:
        # At gates = 1 the generic wrapper is HF by construction; this is where it can fail.
        raise CheckFailed("closing the first and last layers' gates changed no log-prob: the gates reach no head",
                          metrics)
    return metrics


@torch.no_grad()
def gate_effect(pair: ModelPair) -> float:
    """Max |Δ log p| when every gate of the first and last layer is set to 0 (then restored)."""
    ids, mask = input_batch(pair)
    model, saved = pair.adaptive, pair.adaptive.gates.detach().clone()
    try:
        before = _logprobs(model, ids, mask)
        model.gates[0] = 0
        model.gates[-1] = 0
        return (_logprobs(model, ids, mask) - before).abs()[mask.bool()].max().item()
    finally:
        model.gates.copy_(saved)


# infer ----------------------------------------------------------------------------------------

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
    no_cache = model.generate(ids, attention_mask=mask, max_new_tokens=INFER_NEW_TOKENS, eos_token_id=[],
                              use_cache=False)
    greedy_cache_agreement = (out[:, ids.shape[1]:] == no_cache[:, ids.shape[1]:]).float().mean().item()

    metrics = {"padded_vs_alone_max_diff": padded_vs_alone, "cache_vs_full_max_diff": cache_diff,
               # what is graded: the diff beyond the dtype's resolution (rtol · |log p|)
               "padded_vs_alone_beyond_resolution": padded_excess, "cache_vs_full_beyond_resolution": cache_excess,
               "baseline_padded_vs_alone_beyond_resolution": hf_padded_excess, "greedy_cache_agreement": greedy_cache_agreement,
               "hf_call_cache_vs_full_max_diff": plain_cache_diff, "hf_call_cache_vs_full_beyond_resolution": plain_cache_excess}
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


# quality --------------------------------------------------------------------------------------

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


@dataclass
class Reference:
    """HF's side of a quality comparison: the padded batch called as generate calls the model (`theirs`, `fp32`),
    the same batch called as HF users do (ids and mask only, `plain`), and for half precision the statistics
    inputs (`statistics`: name -> (ids, HF's log-probs, HF fp32's))."""

    ids: torch.Tensor
    mask: torch.Tensor
    theirs: torch.Tensor  # HF's log-probs in the row's dtype
    fp32: torch.Tensor | None  # HF's log-probs in fp32 on the same device (the row's own for fp32 rows)
    fp32_note: str | None  # why there is no fp32 reference
    attention_paths_diff: float | None  # fp32 rows: HF's reference attention against its other path (eager ↔ SDPA)
    greedy: torch.Tensor  # HF's greedy continuation
    plain: tuple[torch.Tensor, torch.Tensor | None]  # HF called with ids and mask only: (row dtype, fp32)
    statistics: dict = field(default_factory=dict)

    @property
    def real(self) -> torch.Tensor:
        return self.mask.bool()


def hf_reference(pair: ModelPair) -> Reference:
    """HF's side of every comparison, computed once per pair."""
    return memo(pair.cache, "reference", lambda: _hf_reference(pair))


@torch.no_grad()
def _hf_reference(pair: ModelPair) -> Reference:
    ids, mask = input_batch(pair)
    positions = hf_position_kwargs(pair, generate_positions(mask))
    inputs = statistics_inputs(pair)
    theirs = _logprobs(pair.hf, ids, mask, **positions)
    plain = _logprobs(pair.hf, ids, mask)
    stats = {name: _logprobs(pair.hf, s_ids, s_mask) for name, (s_ids, s_mask) in inputs.items()}
    fp32, plain_fp32, stats_fp32, note = (theirs, plain, stats, None) if pair.dtype == "float32" else \
        (None, None, {}, "no fp32 loader given")
    if pair.dtype != "float32" and pair.load_fp32_reference is not None:
        try:
            reference_model = pair.load_fp32_reference()
            fp32, note = _logprobs(reference_model, ids, mask, **positions), None
            plain_fp32 = _logprobs(reference_model, ids, mask)
            stats_fp32 = {name: _logprobs(reference_model, s_ids, s_mask) for name, (s_ids, s_mask) in inputs.items()}
            del reference_model
        except torch.OutOfMemoryError:
            note = "out of memory: HF in fp32 did not fit beside both models"
        gc.collect()
        if pair.device == "cuda":
            torch.cuda.empty_cache()
    paths_diff = attention_paths_diff(pair.hf, ids, mask, positions, theirs) if pair.dtype == "float32" else None
    n = grading.GREEDY_TOKENS
    # No eos on either side: HF takes an explicit eos_token_id=None as "none"; ours spells it [].
    greedy = pair.hf.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                              eos_token_id=None, pad_token_id=0)
    statistics = {name: (inputs[name][0], stats[name], stats_fp32[name]) for name in stats_fp32}
    return Reference(ids, mask, theirs, fp32, note, paths_diff, greedy, (plain, plain_fp32), statistics)


def adaptive_logprobs(pair: ModelPair, ref: Reference, model=None) -> dict[str, tuple]:
    """The adaptive model (or `model`) on every input of `ref`: name -> (its log-probs, HF's, HF fp32's, real)."""
    model = model if model is not None else pair.adaptive
    real = ref.real
    out = {"padded": (_logprobs(model, ref.ids, ref.mask, position_ids=generate_positions(ref.mask)), ref.theirs,
                      ref.fp32, real),
           "hf_call": (_logprobs(model, ref.ids, ref.mask), *ref.plain, real)}
    for name, (ids, theirs, fp32) in ref.statistics.items():
        out[name] = (_logprobs(model, ids, None), theirs, fp32, torch.ones_like(ids, dtype=torch.bool))
    return out


OTHER_ATTENTION = {"eager": "sdpa", "sdpa": "eager"}


@torch.no_grad()
def attention_paths_diff(hf, ids, mask, positions: dict, theirs: torch.Tensor) -> float | None:
    """Max |Δ log p| over real tokens between HF's reference attention and its other path (eager ↔ SDPA) on
    the same batch: how far HF is from itself in this dtype on this device. None where HF cannot switch."""
    before = hf.config._attn_implementation
    other = OTHER_ATTENTION.get(before)
    if other is None or not hasattr(hf, "set_attn_implementation"):
        return None
    try:
        hf.set_attn_implementation(other)
        if hf.config._attn_implementation != other:  # transformers warns and keeps the old one
            return None
        alt = _logprobs(hf, ids, mask, **positions)
    except (ValueError, ImportError, NotImplementedError):
        return None
    finally:
        hf.set_attn_implementation(before)
    return (alt - theirs).abs()[mask.bool()].max().item()


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
    if "fp32_reference" in metrics:
        return text + f" (not measured against fp32: {metrics['fp32_reference']})"
    worst = [f"{name} ({h['positions']} positions): mean KL {h['kl_ratio']:.2f}×, mean |Δ log p| "
             f"{h['error_ratio']:.2f}× HF's own"
             for name, h in metrics["half_precision"].items() if h["grade"] != grading.GOOD]
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
    if pair.dtype != "float32":
        if ref.fp32 is None:
            metrics["fp32_reference"] = ref.fp32_note
        else:
            # recorded, not graded: a maximum grows with vocabulary and length (grading.py)
            metrics.update(grading.rounding_excess(ours=ours, baseline=theirs, reference=ref.fp32, tokens=top, real=real,
                                                   dtype=pair.dtype))
            half = {name: grading.half_precision_error(ours=o, baseline=t, reference=f, real=r)
                    for name, (o, t, f, r) in calls.items()}
            metrics.update(half_precision=half, kl_ratio=max(h["kl_ratio"] for h in half.values()),
                           error_ratio=max(h["error_ratio"] for h in half.values()))
    if fail_fast and grading.grade_quality(pair.dtype, {**metrics, "greedy_identical": True,
                                                        "rank_check": True}) == grading.POOR:
        metrics["grade"] = grading.POOR
        raise _quality_failure(pair, metrics)

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


@torch.no_grad()
def sample_output(pair: ModelPair) -> str:
    tok = pair.tokenizer
    enc = tok(grading.SAMPLE_PROMPT, return_tensors="pt").to(pair.device)
    out = pair.adaptive.generate(enc["input_ids"], attention_mask=enc["attention_mask"],
                                 max_new_tokens=grading.SAMPLE_TOKENS)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


# mutation -------------------------------------------------------------------------------------

def check_mutation(pair: ModelPair, names=None) -> dict:
    """Every applicable mutant (matrix/mutants.py) injected in turn into the adaptive model, the quality and
    infer checks run on it, and the model restored.

    A mutant's effect is a property of the bug, not of rounding: it is measured on an fp32 copy of the
    adaptive model with the same mutant (the row's own model in fp32 rows), against HF in fp32, on every
    input the row is graded on (whole vocabulary, real positions). It is catchable when that exceeds the fp32
    bar (grading.mutation_bar), in every dtype; the row fails when a catchable mutant passes the checks, and
    records the catch rate. A mutant that cannot act on these inputs is not applicable, by construction."""
    from .mutants import MUTANTS

    ref = hf_reference(pair)
    if ref.fp32 is None:
        raise CheckFailed(f"no fp32 reference to measure mutants against: {ref.fp32_note}")
    try:  # the unmutated model must pass, or every mutant is "caught" for nothing
        check_quality(pair)
        check_infer(pair)
    except CheckFailed as exc:
        raise CheckFailed(f"the unmutated model already fails ({exc}); a mutation score would mean nothing",
                          exc.metrics) from None
    fp32_model = pair.adaptive if pair.dtype == "float32" else pair.load_fp32_adaptive()
    bar = grading.mutation_bar(ref.attention_paths_diff)
    longest = max([ref.ids.shape[1]] + [ids.shape[1] for ids, _, _ in ref.statistics.values()])
    mutants = {}
    for name, m in MUTANTS.items():
        if names is not None and name not in names:
            continue
        why_not = m.inapplicable(pair.adaptive, longest=longest, dtype=pair.dtype)
        undo = why_not or m.apply(pair.adaptive)
        if isinstance(undo, str):
            mutants[name] = {"applicable": False, "reason": undo}
            continue
        undo_fp32 = m.apply(fp32_model) if fp32_model is not pair.adaptive else (lambda: None)
        try:
            effect = max((o - f).abs()[r].max().item()
                         for o, _, f, r in adaptive_logprobs(pair, ref, model=fp32_model).values())
            caught_by = ""
            for check in (functools.partial(check_quality, fail_fast=True), check_infer):
                try:
                    check(pair)
                except (CheckFailed, CheckInconclusive) as exc:
                    caught_by = f"{'infer' if check is check_infer else 'quality'}: {str(exc)[:160]}"
                    break
        finally:
            undo()
            undo_fp32()
        mutants[name] = {"applicable": True, "effect": effect, "catchable": effect > bar,
                         "caught": bool(caught_by), "caught_by": caught_by}
    del fp32_model
    ran = [(n, v) for n, v in mutants.items() if v["applicable"]]
    catchable = [n for n, v in ran if v["catchable"]]
    missed = [n for n in catchable if not mutants[n]["caught"]]
    caught = len(catchable) - len(missed)
    score = {"caught": caught, "catchable": len(catchable), "missed": missed,
             "catch_rate": caught / len(catchable) if catchable else None,
             "below_bar": len(ran) - len(catchable), "not_applicable": len(mutants) - len(ran),
             "caught_below_bar": sum(1 for n, v in ran if not v["catchable"] and v["caught"]),
             # fp32: how many mutants move the model past the bar (sensitivity); half precision: the checks' power
             "meaning": "sensitivity" if pair.dtype == "float32" else "power"}
    metrics = {"mutants": mutants, "mutation_score": score, "bar": bar}
    if missed:
        raise CheckFailed(f"{len(missed)} of {len(catchable)} catchable mutants (fp32 effect above {bar:.1e}) passed "
                          f"the {pair.dtype} checks: "
                          + ", ".join(f"{n} (effect {mutants[n]['effect']:.2e})" for n in missed), metrics)
    return metrics
