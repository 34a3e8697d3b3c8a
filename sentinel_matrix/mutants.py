"""Conversion bugs, injected on purpose: the matrix's own checks are evidence only if they catch them.

Each mutant changes a loaded adaptive model in place the way a plausible converter bug would (a head's
slice permuted, a wrong eps, a rotary base off by 1 %, a statistic computed in half precision, ...) and
returns the function that undoes it, or the reason it does not apply to this model. The `mutation`
check (sentinel_matrix/checks.py) runs the quality and infer checks on every mutant and records which were
caught, and how far each moved the model from HF in fp32: a mutant past the fp32 bar is catchable in
every dtype (grading.mutation_bar); one that cannot act on the row's inputs is not applicable, by construction.

Native models get the whole catalogue; the generic wrapper runs HF's own modules, so only the mutants
that change weights or module attributes apply there.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F
from transformers.activations import ACT2FN

from sentinel_core.names import NATIVE

Undo = Callable[[], None]


def _always_applicable(model, *, longest: int, dtype: str) -> str | None:
    return None


@dataclass(frozen=True)
class Mutant:
    name: str
    description: str
    apply: Callable[[object], Undo | str]  # the undo function, or why the mutant does not apply to this model
    # Why the mutant cannot act on inputs of at most `longest` positions in a row of `dtype` (None: it can),
    # decided by construction before anything is measured: such a mutant is not applicable, never "noise".
    inapplicable: Callable[..., str | None] = _always_applicable


MUTANTS: dict[str, Mutant] = {}


def mutant(name: str, description: str, inapplicable=_always_applicable):
    def register(apply):
        MUTANTS[name] = Mutant(name, description, apply, inapplicable)
        return apply
    return register


def _restoring(*tensors: torch.Tensor) -> Undo:
    saved = [t.detach().clone() for t in tensors]

    @torch.no_grad()
    def undo():
        for tensor, value in zip(tensors, saved):
            tensor.copy_(value)
    return undo


def _setting(obj, name: str, value) -> Undo:
    """Set an attribute on an instance; undo restores the old instance attribute or removes the override."""
    # object.__setattr__: an instance attribute shadows an nn.Module's registered child of the same name
    # (a mutant may put a plain function where an activation module was), and deleting it reveals the child.
    had, old = name in vars(obj), vars(obj).get(name)
    object.__setattr__(obj, name, value)

    def undo():
        if had:
            object.__setattr__(obj, name, old)
        else:
            object.__delattr__(obj, name)
    return undo


def _undo_all(undos: list[Undo]) -> Undo:
    def undo():
        for u in reversed(undos):
            u()
    return undo


def _native(model) -> bool:
    return model.adaptive_path == NATIVE


def _norms(model) -> list:
    root = model if _native(model) else model.hf
    return [m for m in root.modules() if "norm" in type(m).__name__.lower()
            and any(hasattr(m, a) for a in ("eps", "variance_epsilon"))]


# Attention heads --------------------------------------------------------------------------------

def _head_slice(model, head: int) -> tuple[torch.Tensor, int]:
    """The first layer's output-projection weight and the dim whose slice [head·hd, (head+1)·hd) is head `head`'s."""
    if _native(model):
        return model.layers[0].attn.out.weight, 1
    projection = model._projections[0]
    return projection.weight, 0 if type(projection).__name__ == "Conv1D" else 1


@mutant("head_out_permuted", "one head's input columns of the output projection reversed")
@torch.no_grad()
def _head_out_permuted(model):
    weight, dim = _head_slice(model, head=0)
    hd = model.spec.head_dim
    undo = _restoring(weight)
    block = weight.narrow(dim, 0, hd)
    block.copy_(block.flip(dim))
    return undo


def _swap_qkv_heads(model, part: str):
    if not _native(model):
        return "the generic wrapper runs HF's own attention"
    attn = model.layers[0].attn
    nh, nkv, hd = attn.num_heads, attn.num_kv_heads, attn.head_dim
    count, offset = {"q": (nh, 0), "k": (nkv, nh), "v": (nkv, nh + nkv)}[part]
    if count < 2:
        return f"one {part} head only"
    tensors = [t for t in (attn.qkv.weight, attn.qkv.bias) if t is not None]
    undo = _restoring(*tensors)
    with torch.no_grad():
        for t in tensors:
            a, b = t[offset * hd:(offset + 1) * hd].clone(), t[(offset + 1) * hd:(offset + 2) * hd].clone()
            t[offset * hd:(offset + 1) * hd], t[(offset + 1) * hd:(offset + 2) * hd] = b, a
    return undo


for _part in "qkv":
    mutant(f"{_part}_heads_swapped", f"the first two {'query' if _part == 'q' else 'KV'} heads' {_part} rows swapped")(
        lambda model, part=_part: _swap_qkv_heads(model, part))


# Norms ------------------------------------------------------------------------------------------

def _scale_eps(model, factor: float):
    norms = _norms(model)
    if not norms:
        return "no norm with an eps"
    undos = []
    for norm in norms:
        name = "eps" if hasattr(norm, "eps") else "variance_epsilon"
        undos.append(_setting(norm, name, getattr(norm, name) * factor))
    return _undo_all(undos)


mutant("norm_eps_x100", "every norm's eps × 100")(lambda model: _scale_eps(model, 100.0))
mutant("norm_eps_div100", "every norm's eps ÷ 100")(lambda model: _scale_eps(model, 0.01))


def _half_statistics_forward(norm):
    """The norm with its mean and variance computed in bf16 (HF computes them in fp32)."""
    def forward(x):
        h = x.to(torch.bfloat16)
        eps = norm.eps
        if isinstance(norm, torch.nn.LayerNorm):
            h = h - h.mean(-1, keepdim=True)
        normed = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
        if isinstance(norm, torch.nn.LayerNorm):
            if norm.weight is None:
                return normed
            return normed * norm.weight + (norm.bias if norm.bias is not None else 0)
        scale = (1.0 + norm.weight.float()) if norm.unit_offset else norm.weight.float()
        return (normed.float() * scale).to(x.dtype)
    return forward


@mutant("norm_stats_half", "every norm's statistics computed in bf16")
def _norm_stats_half(model):
    if not _native(model):
        return "the generic wrapper runs HF's own norms"
    return _undo_all([_setting(norm, "forward", _half_statistics_forward(norm)) for norm in _norms(model)])


# Positions --------------------------------------------------------------------------------------

def _rotary(model) -> str | None:
    if not _native(model):
        return "the generic wrapper runs HF's own positions"
    return None if model.spec.positions == "rotary" else f"no rotary positions ({model.spec.positions})"


def _rope_base(model, factor: float):
    if (why := _rotary(model)) is not None:
        return why
    # inv_freq[i] = base^(-2i/d): a base × factor multiplies it by factor^(-2i/d)
    # Gemma 3's sliding layers have their own (local base) frequencies: a converter could get either base wrong.
    buffers = [model.inv_freq] + [getattr(model, name) for name in ("long_inv_freq", "local_inv_freq")
                                  if hasattr(model, name)]
    undo = _restoring(*buffers)
    with torch.no_grad():
        for b in buffers:
            b.mul_(factor ** (-torch.arange(len(b), device=b.device, dtype=torch.float32) * 2 / model.spec.rotary_dim))
    return undo


mutant("rope_base_plus_1pct", "rotary base × 1.01")(lambda model: _rope_base(model, 1.01))
mutant("rope_base_minus_1pct", "rotary base × 0.99")(lambda model: _rope_base(model, 0.99))


@mutant("rope_angles_half", "rotary angles rounded to bf16")
def _rope_angles_half(model):
    if (why := _rotary(model)) is not None:
        return why
    angles = model.rope_angles
    # **kw: local=True asks for Gemma 3's sliding-layer angles, mutated alike.
    return _setting(model, "rope_angles", lambda position_ids, **kw: angles(position_ids, **kw).bfloat16().float())


def _relative_positions(model, *, longest: int, dtype: str) -> str | None:
    """Rotary scores depend on distances only, unless the frequencies depend on the length (dynamic, LongRoPE)."""
    if not _native(model) or model.spec.positions != "rotary":
        return None
    if model.spec.rotary_dynamic_factor or model.spec.rotary_long_inv_freq:
        return None
    return "rotary scores depend on distances only: a shift of every position moves none"


@mutant("positions_shifted", "every position one further (learned table rows or rotary angles)",
        inapplicable=_relative_positions)
def _positions_shifted(model):
    if not _native(model):
        return "the generic wrapper runs HF's own positions"
    if model.spec.positions == "rotary":
        angles = model.rope_angles
        return _setting(model, "rope_angles", lambda position_ids, **kw: angles(position_ids + 1, **kw))
    if model.spec.positions == "learned":
        table = model.pos_embed.weight
        undo = _restoring(table)
        with torch.no_grad():
            table[:-1] = table[1:].clone()
        return undo
    return "ALiBi depends on distances only"


@mutant("alibi_slopes_swapped", "the first two heads' ALiBi slopes swapped")
def _alibi_slopes_swapped(model):
    if not _native(model) or model.spec.positions != "alibi":
        return "no ALiBi"
    undo = _restoring(model.alibi_slopes)
    model.alibi_slopes[[0, 1]] = model.alibi_slopes[[1, 0]].clone()
    return undo


def _window_beyond(model, *, longest: int, dtype: str) -> str | None:
    window = getattr(model.spec, "sliding_window", None) if _native(model) else None
    if window and longest <= window:
        return f"no input is longer than the window ({longest} <= {window} positions)"
    return None


@mutant("sliding_window_off_by_one", "the sliding window one key wider", inapplicable=_window_beyond)
def _sliding_window_off_by_one(model):
    if not _native(model) or not model.spec.sliding_window or not any(model.spec.sliding_layers):
        return "no sliding window"
    return _setting(model, "spec", replace(model.spec, sliding_window=model.spec.sliding_window + 1))


# MLP and biases ---------------------------------------------------------------------------------

def _leaky_relu(x):
    return F.leaky_relu(x, 0.01)


# A function and the one a converter might mistake it for.
ACTIVATION_TWINS = {"gelu": "gelu_new", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu_fast": "gelu",
                    "bloom_gelu": "gelu", "silu": "gelu", "swish": "gelu", "relu": _leaky_relu}


@mutant("activation_twin", "the MLP activation swapped for its near twin (gelu ↔ gelu_new, silu → gelu, ...)")
def _activation_twin(model):
    if not _native(model):
        return "the generic wrapper runs HF's own MLP"
    twin = ACTIVATION_TWINS.get(model.spec.activation)
    if twin is None:
        return f"no twin listed for {model.spec.activation}"
    act = ACT2FN[twin] if isinstance(twin, str) else twin
    return _undo_all([_setting(layer.mlp, "act", act) for layer in model.layers])


@mutant("bias_dropped", "the first layer's first bias zeroed")
def _bias_dropped(model):
    if _native(model):
        layer = model.layers[0]
        candidates = [layer.attn.qkv, layer.attn.out, layer.mlp.up, layer.mlp.down, model.lm_head]
    else:
        candidates = [model._projections[0]]
    bias = next((m.bias for m in candidates if getattr(m, "bias", None) is not None), None)
    if bias is None:
        return "no bias"
    undo = _restoring(bias)
    with torch.no_grad():
        bias.zero_()
    return undo


@mutant("positions_ignore_mask", "positions derived from the mask count the padding (a call without position_ids)")
def _positions_ignore_mask(model):
    if not _native(model) or not model.spec.positions_from_mask:
        return "positions do not come from the mask"
    forward = model.forward

    def wrong(input_ids, attention_mask=None, position_ids=None, past_key_values=None, **kw):
        if position_ids is None and attention_mask is not None:
            past = past_key_values.seen() if past_key_values is not None else 0
            position_ids = (past + torch.arange(input_ids.shape[1], device=input_ids.device)).expand_as(input_ids)
        return forward(input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       past_key_values=past_key_values, **kw)
    return _setting(model, "forward", wrong)


# Half precision where HF keeps fp32 -------------------------------------------------------------

def _bf16_row(model, *, longest: int, dtype: str) -> str | None:
    return "the row's weights and residual stream are bf16 in HF too" if dtype == "bfloat16" else None


@mutant("weights_through_bf16", "every weight rounded through bf16 on conversion", inapplicable=_bf16_row)
def _weights_through_bf16(model):
    params = [p for p in model.parameters() if p.is_floating_point()]
    undo = _restoring(*params)
    with torch.no_grad():
        for p in params:
            p.copy_(p.to(torch.bfloat16).to(p.dtype))
    return undo


@mutant("residual_half", "the residual stream rounded to bf16 after every block", inapplicable=_bf16_row)
def _residual_half(model):
    if not _native(model):
        return "the generic wrapper runs HF's own blocks"

    def rounded(block):
        forward = block.forward
        return lambda *args, **kw: forward(*args, **kw).to(torch.bfloat16).to(block.attn.out.weight.dtype)
    return _undo_all([_setting(block, "forward", rounded(block)) for block in model.layers])


def _half_softmax_attention(q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    """Attention whose softmax is normalised in bf16: exp rounded, the sum rounded, the division in bf16
    (HF normalises in fp32 and rounds the probabilities once)."""
    if enable_gqa and k.shape[1] != q.shape[1]:
        k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
    scores = (q.float() @ k.float().transpose(-2, -1)) * scale
    if is_causal:
        T, S = scores.shape[-2:]
        scores = scores.masked_fill(torch.ones(T, S, dtype=torch.bool, device=q.device).triu(S - T + 1), float("-inf"))
    if attn_mask is not None:
        scores = scores + attn_mask.float()
    e = (scores - scores.amax(-1, keepdim=True)).exp().to(torch.bfloat16)
    probs = e / e.sum(-1, keepdim=True).to(torch.bfloat16)
    return probs.to(v.dtype) @ v


@mutant("softmax_half", "attention's softmax normalised in bf16")
def _softmax_half(model):
    if not _native(model):
        return "the generic wrapper runs HF's own attention"
    from types import SimpleNamespace

    import sentinel_core.decoder as decoder

    def patched(attn):
        forward = attn.forward

        def run(*args, **kw):
            saved = decoder.F
            decoder.F = SimpleNamespace(**{**vars(F), "scaled_dot_product_attention": _half_softmax_attention})
            try:
                return forward(*args, **kw)
            finally:
                decoder.F = saved
        return run
    return _undo_all([_setting(layer.attn, "forward", patched(layer.attn)) for layer in model.layers])
