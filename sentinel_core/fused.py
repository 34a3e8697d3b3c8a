"""The fused decode step: one new token of one sequence through the gated decoder in a few Triton kernels per layer.

Eager decoding launches ~20 small kernels per layer (norms, rotary, cache writes, the GQA gather, residual adds,
SiLU · up) and a batch-1 step is bound by them, not by reading the weights. Here a layer is
    [norm → q|k|v]  [rotary, cache write, attention, gates]  [out + residual]  [norm → up, activation]  [down + residual]
(post-norm blocks add their two norms as torch ops); see triton_kernels.py, which also runs the final norm and the
LM head as one kernel. The embedding stays the decoder's own. Same gates, same pruning (uneven groups read their KV head through `kv_of_head`), same cache layout
(the prefill fills it with the eager forward). It rounds where the eager step rounds, but sums inside a dot product
in another order: half precision's verdicts grade it as they grade HF's own half precision (fp32 decoding stays on
HF's arithmetic, generate refuses fused=True there).
"""

from __future__ import annotations

import torch

from . import triton_kernels as kernels
from .decoder import CausalLMOutput, RMSNorm, StaticKVCache
from .errors import DeviceError, InputError, UnsupportedModelError


def unsupported_reason(model) -> str | None:
    """Why the fused step cannot run this model (None: it can)."""
    s = model.spec
    if not kernels.available():
        return "the fused decode path needs Triton (pip install triton)"
    reasons = {
        "qk_norm": "per-head query/key norms (Gemma 3)", "sandwich_norms": "sandwich norms (Gemma 3)",
        "residual_from_norm": "a residual taken after the norm (BLOOM's apply_residual_connection_post_layernorm)",
        "falcon_alibi": "Falcon-RW's ALiBi", "rotary_local_inv_freq": "a second rotary set for sliding layers",
    }
    for field, what in reasons.items():
        if getattr(s, field):
            return f"the fused decode path does not implement {what}"
    if s.activation not in kernels.ACTIVATIONS:
        return f"the fused decode path has no kernel for the activation {s.activation!r}"
    return None


def norm_arguments(norm) -> dict:
    """linear()'s keyword arguments for a decoder norm module computed in the kernel's prologue."""
    if isinstance(norm, RMSNorm):
        return dict(norm="rmsnorm_unit_offset" if norm.unit_offset else "rmsnorm", norm_weight=norm.weight,
                    eps=norm.eps)
    return dict(norm="layernorm", norm_weight=norm.weight, norm_bias=norm.bias, eps=norm.eps)


class FusedDecodeStep:
    """Called as the decoder is, for a batch of one with a StaticKVCache: `step(ids [1, 1], attention_mask=[1,
    max_len], position_ids=[1, 1], past_key_values=cache, ...)` -> CausalLMOutput with logits [1, 1, vocab]."""

    def __init__(self, model):
        reason = unsupported_reason(model)
        if reason:
            raise UnsupportedModelError(reason + ": leave fused off")
        self.model, self.spec = model, model.spec
        param = model.embed.weight
        self.device, self.dtype = param.device, param.dtype
        if self.device.type != "cuda" and not kernels.interpreted():
            raise DeviceError("fused=True runs Triton kernels on a CUDA device: model.to('cuda'), or leave fused off")
        self.layers = []
        for layer in model.layers:  # what each layer's kernels read, fixed for this call (generate builds a step)
            attn = layer.attn
            kv = attn.kv_of_head.tolist()
            writes = [int(i == kv.index(j)) for i, j in enumerate(kv)]  # the first query head of each KV head
            self.layers.append(dict(writes_kv=torch.tensor(writes, device=self.device, dtype=torch.int32),
                                    kv_of_head=attn.kv_of_head.to(torch.int32),
                                    head_ids=attn.head_ids.to(torch.int32)))
        widest_qkv = max(layer.attn.qkv.weight.shape[0] for layer in model.layers)
        widest_ctx = max(layer.attn.num_heads * layer.attn.head_dim for layer in model.layers)
        make = lambda n: torch.empty(n, device=self.device, dtype=self.dtype)  # noqa: E731
        self.qkv, self.ctx = make(widest_qkv), make(widest_ctx)
        self.mid = make(self.spec.intermediate_size)
        self.alibi = model.alibi_slopes if self.spec.positions == "alibi" else None
        # The final norm in the LM head's prologue, where the head is a plain linear after it (no projection out, no
        # soft cap): one launch instead of two; else the decoder's own head.
        s = self.spec
        self.fused_head = s.final_norm and s.final_logit_softcap is None and not hasattr(model, "project_out")

    def __call__(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, logits_to_keep=1,
                 unit_gates=None, **_):
        s, model, cache = self.spec, self.model, past_key_values
        if not isinstance(cache, StaticKVCache) or input_ids.shape != (1, 1) or attention_mask is None \
                or position_ids is None:
            raise InputError("the fused step decodes one token of one sequence into a static cache, with its mask "
                             "and position: generate(fused=True) calls it so")
        x = model.embed_tokens(input_ids, position_ids)  # [1, 1, hidden]
        cos = sin = None
        if s.positions == "rotary":
            cos, sin = (t.reshape(-1) for t in model.rope(position_ids, self.dtype))
        mask = attention_mask[0]
        key_positions = None
        if self.alibi is not None:  # BLOOM: a key's position counts the real tokens before it
            keys = mask.long()
            key_positions = ((keys.cumsum(-1) - 1) * keys).float()
        x = x.reshape(-1).contiguous()
        h = torch.empty_like(x)
        for i, (layer, fixed) in enumerate(zip(model.layers, self.layers)):
            attn, mlp = layer.attn, layer.mlp
            nh, nkv, hd = attn.num_heads, attn.num_kv_heads, attn.head_dim
            qkv, ctx = self.qkv[: attn.qkv.weight.shape[0]], self.ctx[: nh * hd]
            attn_norm = norm_arguments(layer.attn_norm) if s.pre_norm or s.parallel_residual else {}
            kernels.linear(x, attn.qkv.weight, qkv, bias=attn.qkv.bias, **attn_norm)
            kernels.decode_attention(
                qkv, cache.keys[i][0], cache.values[i][0], ctx, cos=cos, sin=sin, slot=cache.pos, mask=mask,
                gates=None if unit_gates else model.gates[i], alibi_slopes=self.alibi, key_positions=key_positions,
                n_heads=nh, n_kv_heads=nkv, head_dim=hd, rotary_dim=s.rotary_dim if cos is not None else 0,
                scale=attn.scale, interleaved=s.rotary_interleaved, window=s.sliding_window if attn.windowed else None,
                **fixed)
            up = dict(bias=mlp.up.bias, activation=s.activation, gated=mlp.gated)  # gated: act(gate) · up
            if s.parallel_residual:  # x + attn(norm1(x)) + mlp(norm2(x)), summed as h = x + attn; h + mlp
                kernels.linear(ctx, attn.out.weight, h, bias=attn.out.bias, residual=x)
                mlp_norm = layer.attn_norm if s.shared_norm else layer.mlp_norm
                kernels.linear(x, mlp.up.weight, self.mid, **up, **norm_arguments(mlp_norm))
                kernels.linear(self.mid, mlp.down.weight, x, bias=mlp.down.bias, residual=h)
            elif s.pre_norm:
                kernels.linear(ctx, attn.out.weight, x, bias=attn.out.bias, residual=x)
                kernels.linear(x, mlp.up.weight, self.mid, **up, **norm_arguments(layer.mlp_norm))
                kernels.linear(self.mid, mlp.down.weight, x, bias=mlp.down.bias, residual=x)
            else:  # post-norm: x = norm1(x + attn(x)); x = norm2(x + mlp(x))
                kernels.linear(ctx, attn.out.weight, h, bias=attn.out.bias, residual=x)
                x = layer.attn_norm(h)
                kernels.linear(x, mlp.up.weight, self.mid, **up)
                kernels.linear(self.mid, mlp.down.weight, h, bias=mlp.down.bias, residual=x)
                x = layer.mlp_norm(h)
        cache.advance(1)
        if not self.fused_head:
            return CausalLMOutput(logits=model.head(x.view(1, 1, -1), logits_to_keep), past_key_values=cache)
        logits = torch.empty(s.vocab_size, device=self.device, dtype=self.dtype)  # each step's own, as the decoder's
        kernels.linear(x, model.lm_head.weight, logits, bias=model.lm_head.bias, **norm_arguments(model.final_norm))
        return CausalLMOutput(logits=logits.view(1, 1, -1), past_key_values=cache)
