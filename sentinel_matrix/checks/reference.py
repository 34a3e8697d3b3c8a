"""HF's side of the quality and mutation checks, computed once per pair, and the adaptive model on the same inputs."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from sentinel_core.generation import position_ids as generate_positions  # HF generate's rule

from .. import grading
from ..evidence import memo
from .inputs import _logprobs, hf_position_kwargs, input_batch, statistics_inputs
from .pair import ModelPair


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
    # Half precision: HF in fp32 with its weights rounded to the row's dtype, on the padded batch called both ways
    # (name -> log-probs), and how far its two attention paths are apart there: fp32's rule, on the row's weights.
    widened: dict = field(default_factory=dict)
    widened_paths_diff: float | None = None

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
    widened, widened_paths = {}, None
    if pair.dtype != "float32" and pair.load_fp32_reference is not None:
        try:
            reference_model = pair.load_fp32_reference()
            fp32, note = _logprobs(reference_model, ids, mask, **positions), None
            plain_fp32 = _logprobs(reference_model, ids, mask)
            stats_fp32 = {name: _logprobs(reference_model, s_ids, s_mask) for name, (s_ids, s_mask) in inputs.items()}
            # HF in fp32 on the row's own weights: each parameter rounded as loading in the row's dtype rounds it
            # (buffers HF computes at load stay fp32, as they are in an fp32 model)
            for p in reference_model.parameters():
                p.data = p.data.to(pair.torch_dtype).float()
            calls = hf_calls(ids, mask, positions)
            widened = {name: _logprobs(reference_model, *args, **kw) for name, (args, kw) in calls.items()}
            diffs = [attention_paths_diff(reference_model, *args, kw, widened[name]) for name, (args, kw) in calls.items()]
            widened_paths = None if None in diffs else max(diffs)
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
    return Reference(ids, mask, theirs, fp32, note, paths_diff, greedy, (plain, plain_fp32), statistics, widened,
                     widened_paths)


def hf_calls(ids, mask, positions: dict) -> dict[str, tuple[tuple, dict]]:
    """HF's calls on the padded batch, as adaptive_logprobs makes ours: name -> ((ids, mask), keyword arguments)."""
    return {"padded": ((ids, mask), positions), "hf_call": ((ids, mask), {})}


HALF_DTYPES = (torch.bfloat16, torch.float16)


@contextmanager
def widened_to_fp32(model):
    """The model's half-precision parameters and buffers widened to fp32 in place while the block runs, and
    narrowed back after. Both ways are exact (every bf16 and fp16 value is an fp32 value), so the model computes
    its own weights in fp32 arithmetic: a conversion bug then shows at fp32's bar, not under half precision's
    rounding. Buffers kept in fp32 (rotary frequencies) are left as they are; one stored in half precision keeps
    its rounded value (the adaptive model keeps none: a rounded one is a bug this shows)."""
    params = [(p, p.dtype) for p in model.parameters() if p.dtype in HALF_DTYPES]
    buffers = [(module, name, buffer) for module in model.modules() for name, buffer in module._buffers.items()
               if buffer is not None and buffer.dtype in HALF_DTYPES]
    for p, _ in params:
        p.data = p.data.float()
    for module, name, buffer in buffers:
        module._buffers[name] = buffer.float()
    try:
        yield model
    finally:
        for p, dtype in params:
            p.data = p.data.to(dtype)
        for module, name, buffer in buffers:
            module._buffers[name] = buffer


def adaptive_logprobs(pair: ModelPair, ref: Reference, model=None, statistics: bool = True) -> dict[str, tuple]:
    """The adaptive model (or `model`) on every input of `ref` (statistics=False: the padded batch only): name ->
    (its log-probs, HF's, HF fp32's, real)."""
    model = model if model is not None else pair.adaptive
    real = ref.real
    out = {"padded": (_logprobs(model, ref.ids, ref.mask, position_ids=generate_positions(ref.mask)), ref.theirs,
                      ref.fp32, real),
           "hf_call": (_logprobs(model, ref.ids, ref.mask), *ref.plain, real)}
    for name, (ids, theirs, fp32) in (ref.statistics if statistics else {}).items():
        out[name] = (_logprobs(model, ids, None), theirs, fp32, torch.ones_like(ids, dtype=torch.bool))
    return out


@torch.no_grad()
def widened_max_diff(pair: ModelPair, ref: Reference) -> float:
    """Half precision: the adaptive model as loaded in the row's dtype, computed in fp32, against HF in fp32 on the
    same rounded weights (ref.widened), on the padded batch called both ways, as an fp32 row compares them: max
    |Δ log p| over the whole vocabulary and real positions."""
    with widened_to_fp32(pair.adaptive):
        calls = adaptive_logprobs(pair, ref, statistics=False)
    return max((calls[name][0] - hf).abs()[calls[name][3]].max().item() for name, hf in ref.widened.items())


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
    return (alt - theirs).abs()[mask.bool() if mask is not None else ...].max().item()
