"""The gated decoder: one transformer for every supported family, driven by a DecoderSpec.

Every attention head's context vector (softmax(QK^T)V for that head) is multiplied by
`gates[layer, head]` before the output projection. Gates at 1 give the Hugging Face model back
exactly; a gate at 0 is the same as removing the head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from .spec import DecoderSpec


def bloom_gelu(x: torch.Tensor) -> torch.Tensor:
    # BLOOM's own tanh-GELU; its truncated constant differs from gelu_new in the last bits.
    return x * 0.5 * (1.0 + torch.tanh(0.79788456 * x * (1 + 0.044715 * x * x)))


def activation(name: str):
    if name == "bloom_gelu":
        return bloom_gelu
    if name not in ACT2FN:
        raise ValueError(f"unknown activation {name!r}")
    return ACT2FN[name]


class RMSNorm(nn.Module):
    """Llama's RMSNorm: statistics in fp32, weight applied in the input dtype."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def make_norm(spec: DecoderSpec, dim: int | None = None) -> nn.Module:
    dim = dim or spec.hidden_size
    if spec.norm == "rmsnorm":
        return RMSNorm(dim, spec.norm_eps)
    return nn.LayerNorm(dim, eps=spec.norm_eps, elementwise_affine=spec.norm_affine,
                        bias=spec.norm_bias and spec.norm_affine)


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """ALiBi slopes as BLOOM computes them (fp32 powers), extra interleaved slopes for non-powers of two."""
    closest = 2 ** math.floor(math.log2(num_heads))
    base = torch.tensor(2 ** (-(2 ** -(math.log2(closest) - 3))), dtype=torch.float32)
    slopes = torch.pow(base, torch.arange(1, 1 + closest, dtype=torch.int32))
    if closest != num_heads:
        extra_base = torch.tensor(2 ** (-(2 ** -(math.log2(2 * closest) - 3))), dtype=torch.float32)
        extra = min(closest, num_heads - closest)
        slopes = torch.cat([slopes, torch.pow(extra_base, torch.arange(1, 1 + 2 * extra, 2, dtype=torch.int32))])
    return slopes


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class KVCache:
    """Per-layer keys and values, [batch, kv_heads, seen, head_dim], grown by concatenation."""

    def __init__(self, num_layers: int):
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers

    def __len__(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def reorder(self, index: torch.Tensor) -> None:
        self.keys = [None if k is None else k.index_select(0, index) for k in self.keys]
        self.values = [None if v is None else v.index_select(0, index) for v in self.values]


@dataclass
class CausalLMOutput:
    logits: torch.Tensor
    past_key_values: KVCache | None = None


class GatedAttention(nn.Module):
    """Multi-head (or grouped-query) attention with one gate per query head.

    `qkv` holds the query heads, then the KV heads' keys, then their values, each block in head
    order. After pruning, `head_ids` says which of the original heads a layer still has and
    `kv_of_head` which of its remaining KV heads each query head reads.
    """

    def __init__(self, spec: DecoderSpec, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.head_dim = spec.head_dim
        self.num_heads = spec.num_heads
        self.num_kv_heads = spec.num_kv_heads
        self.scale = spec.scale / (layer_idx + 1 if spec.scale_by_inverse_layer_idx else 1)
        self.rotary_dim = spec.rotary_dim
        qkv_out = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
        self.qkv = nn.Linear(spec.hidden_size, qkv_out, bias=spec.qkv_bias)
        self.out = nn.Linear(self.num_heads * self.head_dim, spec.hidden_size, bias=spec.out_bias)

    def init_buffers(self, spec: DecoderSpec, device) -> None:
        group = spec.num_heads // spec.num_kv_heads
        self.register_buffer("head_ids", torch.arange(spec.num_heads, device=device), persistent=False)
        self.register_buffer("kv_of_head", self.head_ids // group, persistent=False)
        if spec.positions == "alibi":
            self.register_buffer("alibi_slopes", alibi_slopes(spec.num_heads).to(device), persistent=False)

    def forward(self, x, gates, rope, attn_bias, alibi_pos, cache: KVCache | None):
        B, T, _ = x.shape
        hd, nh, nkv = self.head_dim, self.num_heads, self.num_kv_heads
        q, k, v = self.qkv(x).split([nh * hd, nkv * hd, nkv * hd], dim=-1)
        q = q.view(B, T, nh, hd).transpose(1, 2)
        k = k.view(B, T, nkv, hd).transpose(1, 2)
        v = v.view(B, T, nkv, hd).transpose(1, 2)
        if rope is not None:
            cos, sin = rope
            q, k = apply_rotary(q, cos, sin, self.rotary_dim), apply_rotary(k, cos, sin, self.rotary_dim)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)
        if nkv != nh:
            k, v = k.index_select(1, self.kv_of_head), v.index_select(1, self.kv_of_head)
        if alibi_pos is not None:
            alibi = (self.alibi_slopes.view(1, -1, 1, 1) * alibi_pos).to(attn_bias.dtype)
            attn_bias = attn_bias + alibi.index_select(1, self.head_ids)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, scale=self.scale)
        y = y * gates.index_select(0, self.head_ids).to(y.dtype).view(1, -1, 1, 1)
        return self.out(y.transpose(1, 2).reshape(B, T, nh * hd))

    @torch.no_grad()
    def prune(self, heads: set[int]) -> None:
        """Remove the given original head ids; a KV head goes only when every query head reading it goes."""
        hd = self.head_dim
        keep = [i for i, h in enumerate(self.head_ids.tolist()) if h not in heads]
        kv_keep = sorted({self.kv_of_head[i].item() for i in keep})
        q_rows = [i * hd + d for i in keep for d in range(hd)]
        kv_rows = [j * hd + d for j in kv_keep for d in range(hd)]
        nq = self.num_heads * hd
        nkv = self.num_kv_heads * hd
        rows = q_rows + [nq + r for r in kv_rows] + [nq + nkv + r for r in kv_rows]
        rows_t = torch.tensor(rows, device=self.qkv.weight.device)
        cols_t = torch.tensor(q_rows, device=self.out.weight.device)
        self.qkv = _take_linear(self.qkv, rows_t, dim=0)
        self.out = _take_linear(self.out, cols_t, dim=1)
        new_kv_index = {old: new for new, old in enumerate(kv_keep)}
        self.kv_of_head = torch.tensor([new_kv_index[self.kv_of_head[i].item()] for i in keep],
                                       device=self.head_ids.device)
        self.head_ids = self.head_ids[keep]
        self.num_heads, self.num_kv_heads = len(keep), len(kv_keep)


def _take_linear(layer: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    w = layer.weight.index_select(dim, index)
    new = nn.Linear(w.shape[1], w.shape[0], bias=layer.bias is not None, device=w.device, dtype=w.dtype)
    new.weight.copy_(w)
    if layer.bias is not None:
        new.bias.copy_(layer.bias if dim == 1 else layer.bias.index_select(0, index))
    new.requires_grad_(layer.weight.requires_grad)
    return new


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotary_dim: int) -> torch.Tensor:
    if rotary_dim == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    return torch.cat([x_rot * cos + rotate_half(x_rot) * sin, x_pass], dim=-1)


class MLP(nn.Module):
    def __init__(self, spec: DecoderSpec):
        super().__init__()
        self.gated = spec.mlp == "gated"
        width = spec.intermediate_size * (2 if self.gated else 1)
        self.up = nn.Linear(spec.hidden_size, width, bias=spec.mlp_bias)  # gated: [gate | up]
        self.down = nn.Linear(spec.intermediate_size, spec.hidden_size, bias=spec.mlp_bias)
        self.act = activation(spec.activation)

    def forward(self, x):
        if self.gated:
            gate, up = self.up(x).chunk(2, dim=-1)
            return self.down(self.act(gate) * up)
        return self.down(self.act(self.up(x)))


class Block(nn.Module):
    def __init__(self, spec: DecoderSpec, layer_idx: int):
        super().__init__()
        self.spec = spec
        self.attn_norm = make_norm(spec)
        self.attn = GatedAttention(spec, layer_idx)
        self.mlp_norm = make_norm(spec)
        self.mlp = MLP(spec)

    def forward(self, x, gates, rope, attn_bias, alibi_pos, cache):
        s = self.spec
        attend = lambda h: self.attn(h, gates, rope, attn_bias, alibi_pos, cache)  # noqa: E731
        if s.parallel_residual:  # GPT-NeoX adds in this order: mlp + attn + x
            return self.mlp(self.mlp_norm(x)) + attend(self.attn_norm(x)) + x
        h_in = self.attn_norm(x) if s.pre_norm else x
        h = attend(h_in) + (h_in if s.residual_from_norm else x)
        if not s.pre_norm:
            h = self.attn_norm(h)
        m_in = self.mlp_norm(h) if s.pre_norm else h
        out = self.mlp(m_in) + (m_in if s.residual_from_norm else h)
        if not s.pre_norm:
            out = self.mlp_norm(out)
        return out


class GatedDecoder(nn.Module):
    """Embeddings, blocks and LM head; parameters in Sentinel's canonical layout."""

    def __init__(self, spec: DecoderSpec):
        super().__init__()
        self.spec = spec
        self.embed = nn.Embedding(spec.vocab_size, spec.embed_dim)
        if spec.embed_dim != spec.hidden_size:
            self.project_in = nn.Linear(spec.embed_dim, spec.hidden_size, bias=False)
            self.project_out = nn.Linear(spec.hidden_size, spec.embed_dim, bias=False)
        if spec.positions == "learned":
            self.pos_embed = nn.Embedding(spec.max_positions + spec.learned_position_offset, spec.hidden_size)
        if spec.embed_norm:
            self.embed_norm = make_norm(spec)
        self.layers = nn.ModuleList(Block(spec, i) for i in range(spec.num_layers))
        if spec.final_norm:
            self.final_norm = make_norm(spec)
        self.lm_head = nn.Linear(spec.embed_dim, spec.vocab_size, bias=False)
        self.gates = nn.Parameter(torch.ones(spec.num_layers, spec.num_heads))

    def tie_weights(self) -> None:
        if self.spec.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    def init_buffers(self, device) -> None:
        """Non-persistent buffers: built here, never loaded from a checkpoint."""
        s = self.spec
        if s.positions == "rotary":
            self.register_buffer("inv_freq", torch.tensor(s.rotary_inv_freq, dtype=torch.float32, device=device),
                                 persistent=False)
        for layer in self.layers:
            layer.attn.init_buffers(s, device)

    def rope(self, position_ids: torch.Tensor, dtype):
        # As transformers does it: fp32 angles, cos/sin scaled, then cast to the activations' dtype.
        freqs = position_ids[..., None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos() * self.spec.rotary_scaling, emb.sin() * self.spec.rotary_scaling
        return cos.to(dtype)[:, None], sin.to(dtype)[:, None]

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None,
                use_cache=False, logits_to_keep: int = 0) -> CausalLMOutput:
        s = self.spec
        B, T = input_ids.shape
        cache = past_key_values if past_key_values is not None else (KVCache(s.num_layers) if use_cache else None)
        past = len(cache) if cache is not None else 0
        device = input_ids.device
        if attention_mask is None:
            attention_mask = torch.ones(B, past + T, dtype=torch.long, device=device)
        mask = attention_mask.long()

        if position_ids is None:
            if s.positions_from_mask:
                position_ids = (mask.cumsum(-1) * mask - 1)[:, past:]
            else:
                position_ids = torch.arange(past, past + T, device=device).expand(B, T)

        x = self.embed(input_ids)
        dtype = x.dtype
        if hasattr(self, "project_in"):
            x = self.project_in(x)
        if s.positions == "learned":
            x = x + self.pos_embed(position_ids + s.learned_position_offset)
        if s.embed_norm:
            x = self.embed_norm(x)

        # Additive bias [B, 1, T, S]: a query sees itself, earlier positions and no padding.
        # finfo.min rather than -inf keeps fully padded rows finite, as transformers does.
        key_pos = torch.arange(past + T, device=device)
        query_pos = torch.arange(past, past + T, device=device)
        allowed = (key_pos[None, :] <= query_pos[:, None])[None] & mask[:, None, :].bool()
        attn_bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
        attn_bias = attn_bias.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]

        rope = self.rope(position_ids, dtype) if s.positions == "rotary" else None
        alibi_pos = ((mask.cumsum(-1) - 1) * mask)[:, None, None, :].float() if s.positions == "alibi" else None

        for layer, gates in zip(self.layers, self.gates):
            x = layer(x, gates, rope, attn_bias, alibi_pos, cache)
        if s.final_norm:
            x = self.final_norm(x)
        if hasattr(self, "project_out"):
            x = self.project_out(x)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        return CausalLMOutput(logits=self.lm_head(x), past_key_values=cache)
