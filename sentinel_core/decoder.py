"""The gated decoder: one transformer for every supported family, driven by a DecoderSpec.

Every attention head's context vector (softmax(QK^T)V for that head) is multiplied by
`gates[layer, head]` before the output projection. Gates at 1 give the Hugging Face model back
exactly; a gate at 0 is the same as removing the head.
"""

from __future__ import annotations

import functools
import math
from contextlib import nullcontext
from dataclasses import dataclass

import psutil
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers.activations import ACT2FN

from .errors import CheckpointError, InputError
from .inputs import check_gates, check_ids, check_mask, check_values
from .spec import DecoderSpec


DETERMINISTIC_SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


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
    """Llama's RMSNorm: statistics in fp32, weight applied in the input dtype.

    Gemma's (unit_offset) scales by 1 + weight and does it in fp32 before the cast, so the two
    round differently in half precision.
    """

    def __init__(self, dim: int, eps: float, unit_offset: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim) if unit_offset else torch.ones(dim))
        self.eps = eps
        self.unit_offset = unit_offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.rms_norm computes x * rsqrt(mean(x²) + eps) in fp32 whatever the input dtype and rounds once,
        # as HF's x.float() ... .to(dtype) does, in one kernel instead of five (tests/test_cuda checks it).
        if self.unit_offset:
            return (F.rms_norm(x.float(), x.shape[-1:], eps=self.eps) * (1.0 + self.weight.float())).to(x.dtype)
        return self.weight * F.rms_norm(x, x.shape[-1:], eps=self.eps)


def make_norm(spec: DecoderSpec, dim: int | None = None) -> nn.Module:
    dim = dim or spec.hidden_size
    if spec.norm == "rmsnorm":
        return RMSNorm(dim, spec.norm_eps, spec.norm_unit_offset)
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


@functools.cache
def rounded_to(value: float, dtype: torch.dtype) -> float:
    """`value` as the nearest `dtype` number: HF multiplies by the scale rounded to the activations' dtype.
    A Python float (computed once per dtype) keeps CUDA graphs and torch.compile free of host syncs."""
    return torch.tensor(value, dtype=dtype).item()


def dynamic_ntk_inv_freq(base: float, factor: float, after: int, dim: int, length: torch.Tensor) -> torch.Tensor:
    """`dynamic` rope's frequencies for a forward of `length` (a device tensor, so no host sync): the
    tensor operations of transformers' _compute_dynamic_ntk_parameters, in its order, so the same bits."""
    length = length.clamp_min(after)  # HF: torch.maximum(seq_len, max_position_embeddings)
    base = base * ((factor * length / after) - (factor - 1)) ** (dim / (dim - 2))
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64, device=length.device).to(torch.float) / dim))


class KeepsFp32Buffers:
    """A module whose fp32 buffers (rotary frequencies, ALiBi slopes) stay fp32 through `.to(dtype)`, `.half()`
    and `.bfloat16()`, moving device only. HF computes them in fp32 and its from_pretrained keeps them so in
    any dtype; rounded to bf16, TinyLlama's frequencies put the angle at position 124 0.17 rad off."""

    def _apply(self, fn, recurse=True):
        fp32 = {name: buf for name, buf in self.named_buffers() if buf.dtype == torch.float32 and not buf.is_meta}
        super()._apply(fn, recurse)
        for name, buf in list(self.named_buffers()):
            if name in fp32 and buf.dtype != torch.float32:
                owner, _, leaf = name.rpartition(".")
                self.get_submodule(owner)._buffers[leaf] = fp32[name].to(buf.device)
        return self


def swap_halves(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [x2, x1] in one kernel: HF's rotate_half, [-x2, x1], with the sign moved into sin (rope())."""
    return x.roll(x.shape[-1] // 2, dims=-1)


def swap_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (x1, x0, x3, x2, ...) in one kernel: GPT-J's rotate_every_two without its sign."""
    return x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)


class KVCache:
    """Per-layer keys and values, [batch, kv_heads, seen, head_dim], grown by concatenation."""

    def __init__(self, num_layers: int):
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers

    def __len__(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def seen(self) -> int:
        return len(self)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def advance(self, steps: int) -> None:
        """Nothing to do: the length is the tensors' own."""


def free_memory(device: torch.device) -> int:
    """Bytes that can still be allocated on `device` (CUDA: the driver's free memory; CPU: the OS's available)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


class StaticKVCache:
    """Preallocated keys and values, [batch, kv_heads, max_len, head_dim] per layer.

    The write position is a device tensor, so a decode step has fixed shapes, needs no host sync
    and can be captured in a CUDA graph. Attention reads the whole buffer; the mask hides the
    slots not written yet.
    """

    def __init__(self, model, batch: int, max_len: int):
        device, dtype = model.embed.weight.device, model.embed.weight.dtype
        shape = lambda attn: (batch, attn.num_kv_heads, max_len, attn.head_dim)  # noqa: E731
        need = 2 * sum(math.prod(shape(layer.attn)) for layer in model.layers) * dtype.itemsize
        free = free_memory(device)
        if need > free:  # refused before allocating: an allocator failure half way is no message
            raise InputError(f"a static KV cache of {max_len} positions for {batch} rows needs {need / 2**30:.1f} GiB "
                             f"but {device} has {free / 2**30:.1f} GiB free: pass a smaller max_new_tokens, or "
                             f"static_cache=False")
        self.keys = [torch.zeros(shape(layer.attn), device=device, dtype=dtype) for layer in model.layers]
        self.values = [torch.zeros(shape(layer.attn), device=device, dtype=dtype) for layer in model.layers]
        self.pos = torch.zeros((), dtype=torch.long, device=device)
        self.max_len = max_len
        self.slots: torch.Tensor | None = None  # where this forward writes (pos + arange(T)): set once per forward

    def seen(self) -> torch.Tensor:
        return self.pos

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        slots = self.slots
        if slots is None or slots.shape[0] != k.shape[2]:  # called outside the decoder's forward
            slots = self.pos + torch.arange(k.shape[2], device=k.device)
        self.keys[layer].index_copy_(2, slots, k)
        self.values[layer].index_copy_(2, slots, v)
        return self.keys[layer], self.values[layer]

    def advance(self, steps: int) -> None:
        self.pos += steps
        self.slots = None


@dataclass
class CausalLMOutput:
    logits: torch.Tensor
    past_key_values: KVCache | StaticKVCache | None = None
    loss: torch.Tensor | None = None  # with labels: HF's causal LM loss


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """HF's ForCausalLMLoss: position t predicts labels[t + 1], in fp32, labels of -100 ignored, the mean over the rest."""
    if not isinstance(labels, torch.Tensor) or labels.shape != logits.shape[:2]:
        raise InputError(f"labels must be a tensor of the ids' shape {tuple(logits.shape[:2])} (labels=input_ids, "
                         f"with -100 where no loss is wanted)")
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                           labels[:, 1:].to(logits.device).reshape(-1), ignore_index=-100)


@dataclass
class AttentionMask:
    """How a forward's queries may attend: an additive bias, or SDPA's own causal mask, or nothing
    (one new token over an unpadded cache). ALiBi's per-head distances are added once per forward."""

    bias: torch.Tensor | None  # [B, 1, T, S], or [B, heads, T, S] with ALiBi (per_head)
    causal: bool
    per_head: bool = False
    window_bias: torch.Tensor | None = None  # the same with a sliding window, for windowed layers
    window_causal: bool = False

    def for_layer(self, windowed: bool) -> tuple[torch.Tensor | None, bool]:
        return (self.window_bias, self.window_causal) if windowed else (self.bias, self.causal)


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
        self.rotary_interleaved = spec.rotary_interleaved
        self.windowed = bool(spec.sliding_layers and spec.sliding_layers[layer_idx])
        self.qk_norm = spec.qk_norm
        self.hf_separate = spec.hf_separate_qkv
        if spec.qk_norm:  # one weight over head_dim, shared by every head: nothing for pruning to slice
            self.q_norm = make_norm(spec, spec.head_dim)
            self.k_norm = make_norm(spec, spec.head_dim)
        qkv_out = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
        self.qkv = nn.Linear(spec.hidden_size, qkv_out, bias=spec.qkv_bias)
        self.out = nn.Linear(self.num_heads * self.head_dim, spec.hidden_size, bias=spec.out_bias)

    def init_buffers(self, spec: DecoderSpec, device) -> None:
        group = spec.num_heads // spec.num_kv_heads
        # Persistent: a pruned model's state_dict says which heads each layer kept.
        self.register_buffer("head_ids", torch.arange(spec.num_heads, device=device))
        self.register_buffer("kv_of_head", self.head_ids // group)
        self._uniform_groups = True

    def pruning_state(self) -> tuple:
        """What prune replaces (it never writes into the old tensors): enough to undo it."""
        return (self.qkv, self.out, self.head_ids, self.kv_of_head, self.num_heads, self.num_kv_heads,
                self._uniform_groups)

    def restore_pruning_state(self, state: tuple) -> None:
        (self.qkv, self.out, self.head_ids, self.kv_of_head, self.num_heads, self.num_kv_heads,
         self._uniform_groups) = state

    def forward(self, x, gates, rope, mask: AttentionMask, cache):
        B, T, _ = x.shape
        hd, nh, nkv = self.head_dim, self.num_heads, self.num_kv_heads
        qkv = split_linear(self.qkv, x, [nh * hd, nkv * hd, nkv * hd]) if self.hf_separate and hf_shapes(x) \
            else self.qkv(x)
        qk, v = qkv.view(B, T, nh + 2 * nkv, hd).split([nh + nkv, nkv], dim=2)
        if self.qk_norm:  # Gemma 3 normalises each head's query and key before rotating them
            q, k = qk.split([nh, nkv], dim=2)
            qk = torch.cat([self.q_norm(q), self.k_norm(k)], dim=2)
        if rope is not None:  # queries and keys rotated in one pass: the same arithmetic, half the kernels
            cos, sin = rope
            qk = apply_rotary(qk, cos, sin, self.rotary_dim, self.rotary_interleaved)
        q, k = qk.transpose(1, 2).split([nh, nkv], dim=1)
        v = v.transpose(1, 2)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)
        bias, causal = mask.for_layer(self.windowed)
        # GQA: SDPA reads shared KV heads itself (enable_gqa) on the mask-free flash path; with a bias
        # mask it would fall back to kernels that are not deterministic run to run in bf16, so there
        # (and for the uneven groups pruning leaves) each query head gets its KV row explicitly.
        # Indexing, not index_select: on CUDA, index_select of 16 or fewer indices takes a kernel that loops over them
        # on a few blocks (indexSelectSmallIndex); with half of TinyLlama's 32 heads pruned, its two calls a layer
        # made the pruned decode step slower than the unpruned one (the profile check's kernels, H100).
        grouped = nkv != nh
        if grouped and (bias is not None or not self.uniform_groups):
            k, v = k[:, self.kv_of_head], v[:, self.kv_of_head]
            grouped = False
        if mask.per_head and self.num_heads != bias.shape[1]:  # ALiBi bias of a pruned layer: its heads' rows
            bias = bias[:, self.head_ids]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=causal and bias is None,
                                           scale=self.scale, enable_gqa=grouped)
        y = y.transpose(1, 2)  # [B, T, heads, head_dim]
        if gates is not None:  # None: every gate (of the heads this layer has) is 1
            layer_gates = gates if self.num_heads == gates.shape[0] else gates[self.head_ids]
            y = y * layer_gates.to(y.dtype).view(1, 1, -1, 1)
        # A row-major input keeps cuBLAS on its fast kernels (a strided one was seen to halve decode speed).
        return self.out(y.reshape(B, T, nh * hd).contiguous())

    def _groups_are_uniform(self) -> bool:
        if self.num_heads % self.num_kv_heads:
            return False
        group = self.num_heads // self.num_kv_heads
        return self.kv_of_head.tolist() == [i // group for i in range(self.num_heads)]

    @property
    def uniform_groups(self) -> bool:
        """Query heads read KV heads in equal consecutive groups (always so until pruning makes them uneven)."""
        return self._uniform_groups

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
        self._uniform_groups = self._groups_are_uniform()



def _take_linear(layer: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    w = layer.weight.index_select(dim, index)
    new = nn.Linear(w.shape[1], w.shape[0], bias=layer.bias is not None, device=w.device, dtype=w.dtype)
    new.weight.copy_(w)
    if layer.bias is not None:
        new.bias.copy_(layer.bias if dim == 1 else layer.bias.index_select(0, index))
    new.requires_grad_(layer.weight.requires_grad)
    return new


def hf_shapes(x: torch.Tensor) -> bool:
    """Whether to multiply in HF's matrix shapes: fp32 on CUDA, the dtype the adaptive model is held to HF's
    own numbers in. cuBLAS picks its kernel (tiles, split-K) by shape, so a fused q|k|v matrix rounds its
    rows differently from HF's three: on gemma-2b (H200, TF32 off) that alone moved log-probs 1.6e-4 from
    HF eager, against 0.9e-4 between HF's own eager and SDPA paths. CPU kernels give each row the same
    result fused or not, and half precision is graded against HF's own rounding, so both stay fused."""
    return x.is_cuda and x.dtype == torch.float32


def split_linear(layer: nn.Linear, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """`layer(x)` computed as one linear per block of rows (HF's separate projections), concatenated."""
    biases = layer.bias.split(sizes) if layer.bias is not None else [None] * len(sizes)
    return torch.cat([F.linear(x, w, b) for w, b in zip(layer.weight.split(sizes), biases)], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor, rotary_dim: int,
                 interleaved: bool = False) -> torch.Tensor:
    """HF's x * cos + rotate(x) * sin, bit for bit: rotate's negation is exact, so it rides on `signed_sin`
    (rope()) and the rotation itself is one swap kernel."""
    swap = swap_pairs if interleaved else swap_halves
    if rotary_dim == x.shape[-1]:
        return x * cos + swap(x) * signed_sin
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    return torch.cat([x_rot * cos + swap(x_rot) * signed_sin, x_pass], dim=-1)


class MLP(nn.Module):
    def __init__(self, spec: DecoderSpec):
        super().__init__()
        self.gated = spec.mlp == "gated"
        width = spec.intermediate_size * (2 if self.gated else 1)
        self.up = nn.Linear(spec.hidden_size, width, bias=spec.mlp_bias)  # gated: [gate | up]
        self.down = nn.Linear(spec.intermediate_size, spec.hidden_size, bias=spec.mlp_bias)
        self.act = activation(spec.activation)
        self.hf_separate = spec.hf_separate_gate_up

    def forward(self, x):
        if self.gated:
            width = self.up.weight.shape[0] // 2
            gate_up = split_linear(self.up, x, [width, width]) if self.hf_separate and hf_shapes(x) else self.up(x)
            gate, up = gate_up.chunk(2, dim=-1)
            return self.down(self.act(gate) * up)
        return self.down(self.act(self.up(x)))


class Block(nn.Module):
    def __init__(self, spec: DecoderSpec, layer_idx: int):
        super().__init__()
        self.spec = spec
        self.attn_norm = make_norm(spec)
        self.attn = GatedAttention(spec, layer_idx)
        if not spec.shared_norm:
            self.mlp_norm = make_norm(spec)
        self.mlp = MLP(spec)
        if spec.sandwich_norms:
            self.attn_post_norm = make_norm(spec)
            self.mlp_post_norm = make_norm(spec)

    def forward(self, x, gates, rope, mask: AttentionMask, cache):
        s = self.spec
        attend = lambda h: self.attn(h, gates, rope, mask, cache)  # noqa: E731
        if s.parallel_residual:  # one norm shared (StableLM, Phi, GPT-J, Falcon-7B) or two (GPT-NeoX)
            h_attn = self.attn_norm(x)
            a = attend(h_attn)
            m = self.mlp(h_attn if s.shared_norm else self.mlp_norm(x))
            if s.parallel_sum == "x+attn+mlp":
                return x + a + m
            if s.parallel_sum == "attn+mlp+x":
                return a + m + x
            return m + a + x
        h_in = self.attn_norm(x) if s.pre_norm else x
        a = attend(h_in)
        if s.sandwich_norms:  # Gemma 3: each sublayer's output is normalised before it joins the residual
            a = self.attn_post_norm(a)
        h = a + (h_in if s.residual_from_norm else x)
        if not s.pre_norm:
            h = self.attn_norm(h)
        m_in = self.mlp_norm(h) if s.pre_norm else h
        m = self.mlp(m_in)
        if s.sandwich_norms:
            m = self.mlp_post_norm(m)
        out = m + (m_in if s.residual_from_norm else h)
        if not s.pre_norm:
            out = self.mlp_norm(out)
        return out


class GatedDecoder(KeepsFp32Buffers, nn.Module):
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
        self.lm_head = nn.Linear(spec.embed_dim, spec.vocab_size, bias=spec.lm_head_bias)
        self.gates = nn.Parameter(torch.ones(spec.num_layers, spec.num_heads), requires_grad=False)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """A pruned model's state dict prunes this model the same way first (its `head_ids` say which heads
        each layer kept). Every shape is checked before any value is copied: a state dict that does not
        fit raises CheckpointError and leaves the model as it was."""
        undo = []
        try:
            for i, layer in enumerate(self.layers):
                saved = state_dict.get(f"layers.{i}.attn.head_ids")
                if saved is None:
                    continue
                saved_ids = saved.tolist() if saved.dim() == 1 and not saved.is_floating_point() else None
                if saved_ids is None or saved_ids != sorted(set(saved_ids)) or not saved_ids or not all(
                        0 <= h < self.spec.num_heads for h in saved_ids):
                    raise CheckpointError(f"layer {i}: the state dict's head_ids {saved.tolist()} are not distinct, "
                                          f"increasing ids of this model's {self.spec.num_heads} heads: the "
                                          f"checkpoint is damaged; re-save it")
                current, kept = set(layer.attn.head_ids.tolist()), set(saved_ids)
                if kept - current:
                    raise CheckpointError(f"layer {i}: the state dict keeps heads {sorted(kept - current)} that this "
                                          f"model has already pruned: load it into a freshly loaded model")
                if current - kept:
                    undo.append((layer.attn, layer.attn.pruning_state()))
                    with torch.no_grad():
                        layer.attn.prune(current - kept)
                saved_kv = state_dict.get(f"layers.{i}.attn.kv_of_head")
                if saved_kv is not None and saved_kv.tolist() != layer.attn.kv_of_head.tolist():
                    # Pruning decides which KV head each kept query head reads; another map is not this model.
                    raise CheckpointError(f"layer {i}: the state dict's kv_of_head {saved_kv.tolist()} is not the "
                                          f"{layer.attn.kv_of_head.tolist()} its head_ids give: the checkpoint is "
                                          f"damaged; re-save it")
            expected = {name: tuple(value.shape) for name, value in self.state_dict().items()}
            wrong = [f"{name} {tuple(value.shape)} (expected {expected[name]})"
                     for name, value in state_dict.items() if name in expected and tuple(value.shape) != expected[name]]
            if wrong:
                raise CheckpointError(f"the state dict does not fit this model, nothing was loaded: {'; '.join(wrong)}")
        except CheckpointError:
            for attn, state in reversed(undo):
                attn.restore_pruning_state(state)
            raise
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def tie_weights(self) -> None:
        if self.spec.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    def init_buffers(self, device) -> None:
        """Non-persistent buffers: built here, never loaded from a checkpoint."""
        s = self.spec
        if s.positions == "rotary":
            self.register_buffer("inv_freq", torch.tensor(s.rotary_inv_freq, dtype=torch.float32, device=device),
                                 persistent=False)
            if s.rotary_long_inv_freq:
                self.register_buffer("long_inv_freq", torch.tensor(s.rotary_long_inv_freq, dtype=torch.float32,
                                                                   device=device), persistent=False)
        if s.rotary_local_inv_freq:
            self.register_buffer("local_inv_freq", torch.tensor(s.rotary_local_inv_freq, dtype=torch.float32,
                                                                device=device), persistent=False)
        if s.positions == "alibi":
            self.register_buffer("alibi_slopes", alibi_slopes(s.num_heads).to(device), persistent=False)
        for layer in self.layers:
            layer.attn.init_buffers(s, device)

    def rope_angles(self, position_ids: torch.Tensor, local: bool = False) -> torch.Tensor:
        """[B, T, rotary_dim / 2] angles in fp32, as transformers computes them. local: the sliding layers'
        own frequencies (Gemma 3), which no scaling type touches."""
        if local:
            return position_ids[..., None].float() * self.local_inv_freq
        inv_freq = self.inv_freq
        if self.spec.rotary_long_inv_freq:  # LongRoPE, as HF picks: on the device, so no host sync
            inv_freq = torch.where(position_ids.max() + 1 > self.spec.rotary_long_after, self.long_inv_freq, inv_freq)
        if self.spec.rotary_dynamic_factor:
            # Dynamic NTK: past the trained length HF recomputes the frequencies from this forward's length.
            # Keys already cached keep the rotation they got, as in HF's cached decoding.
            s, length = self.spec, position_ids.max() + 1
            dynamic = dynamic_ntk_inv_freq(s.rotary_base, s.rotary_dynamic_factor, s.rotary_dynamic_after,
                                           s.rotary_dim, length)
            inv_freq = torch.where(length > s.rotary_dynamic_after, dynamic, inv_freq)
        return position_ids[..., None].float() * inv_freq

    def rope(self, position_ids: torch.Tensor, dtype, local: bool = False):
        # As transformers does it: fp32 angles, cos/sin scaled, then cast to the activations' dtype.
        freqs = self.rope_angles(position_ids, local=True) if local else self.rope_angles(position_ids)
        emb = freqs.repeat_interleave(2, dim=-1) if self.spec.rotary_interleaved else torch.cat((freqs, freqs), dim=-1)
        scaling = 1.0 if local else self.spec.rotary_scaling
        cos, sin = emb.cos() * scaling, emb.sin() * scaling
        # rotate_half's (and rotate_every_two's) minus, on sin instead (apply_rotary): the first half's (the even
        # entries') sin is negated. Negation is exact, so the product is HF's bit for bit.
        sign = torch.ones(sin.shape[-1], device=sin.device, dtype=sin.dtype)
        (sign.view(-1, 2)[:, 0] if self.spec.rotary_interleaved else sign[: sign.shape[0] // 2]).fill_(-1)
        return cos.to(dtype)[:, :, None], (sin * sign).to(dtype)[:, :, None]  # [B, T, 1, rotary_dim]

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None,
                use_cache=False, logits_to_keep: int = 0, unit_gates: bool | None = None,
                labels=None) -> CausalLMOutput:
        """attention_mask covers past and new tokens ([B, S]; for a StaticKVCache, [B, max_len]). labels (usually
        input_ids, -100 where no loss is wanted) add HF's causal LM loss.

        unit_gates None (a caller's forward) checks the ids' and gates' values first (one host sync);
        generate checks them once per call and passes True (every gate is 1: nothing is multiplied) or False.
        """
        s = self.spec
        check_ids(input_ids, self.input_device)
        check_gates(self.gates, s.num_layers, s.num_heads, self.input_device)
        B, T = input_ids.shape
        cache = past_key_values if past_key_values is not None else (KVCache(s.num_layers) if use_cache else None)
        past = cache.seen() if cache is not None else 0
        static = isinstance(cache, StaticKVCache)
        check_mask(attention_mask, input_ids, cache.max_len if static else past + T)
        # No row of the position table is left. A static cache's length is a device tensor (read it and a captured
        # step would sync): generate checks its room once instead (AdaptiveCausalLM._check_room).
        if s.positions == "learned" and not static and past + T > s.max_positions:
            raise InputError(f"{past + T} tokens (cached ones included) but this model learned {s.max_positions} "
                             f"positions: keep inputs to {s.max_positions} tokens")
        if unit_gates is None:
            check_values(input_ids, self.embed.num_embeddings, self.gates, self.kept_heads())
            unit_gates = False
        device = input_ids.device
        query_pos = past + torch.arange(T, device=device)
        if static:
            cache.slots = query_pos  # the slots every layer writes this forward

        if position_ids is None:
            if s.positions_from_mask and attention_mask is not None:
                positions = attention_mask.long().cumsum(-1) * attention_mask.long() - 1
                position_ids = positions.index_select(1, query_pos)
            else:
                position_ids = query_pos.expand(B, T)

        x = self.embed_tokens(input_ids, position_ids)
        dtype = x.dtype

        mask = self.attention_mask(attention_mask, B, T, past, query_pos,
                                   cache.max_len if static else None, dtype, device)
        rope = self.rope(position_ids, dtype) if s.positions == "rotary" else None
        # Gemma 3's sliding layers rotate with their own frequencies: both sets made once per forward.
        local_rope = self.rope(position_ids, dtype, local=True) if s.rotary_local_inv_freq else rope
        # cuDNN's attention was seen to differ run to run in bf16 (H200, torch 2.11); decoding must be
        # reproducible (a CUDA-graph replay has to give eager's tokens), so it is left out on CUDA.
        # In fp32 (see hf_shapes) attention is SDPA's math backend: HF eager's matmul, softmax, matmul.
        backends = [SDPBackend.MATH] if hf_shapes(x) else DETERMINISTIC_SDPA_BACKENDS
        with sdpa_kernel(backends) if x.is_cuda else nullcontext():
            # Gates known to be 1 (generate checks once per call) skip the multiply: x * 1 is exact,
            # and it saves two kernels per layer in launch-bound decoding.
            for layer, gates in zip(self.layers, [None] * s.num_layers if unit_gates else self.gates):
                x = layer(x, gates, local_rope if layer.attn.windowed else rope, mask, cache)
        if cache is not None:
            cache.advance(T)
        logits = self.head(x, logits_to_keep)
        loss = None if labels is None else causal_lm_loss(logits, labels)
        return CausalLMOutput(logits=logits, past_key_values=cache, loss=loss)

    def embed_tokens(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """[B, T] ids -> [B, T, hidden] inputs of the first block (scaled, projected, positions added, normalised)."""
        s = self.spec
        x = self.embed(input_ids)
        if s.embed_scale != 1.0:
            x = x * rounded_to(s.embed_scale, x.dtype)
        if hasattr(self, "project_in"):
            x = self.project_in(x)
        if s.positions == "learned":
            x = x + self.pos_embed(position_ids + s.learned_position_offset)
        if s.embed_norm:
            x = self.embed_norm(x)
        return x

    def head(self, x: torch.Tensor, logits_to_keep: int = 0) -> torch.Tensor:
        """The last block's [B, T, hidden] output -> logits of the last `logits_to_keep` positions (0: all)."""
        s = self.spec
        if s.final_norm:
            x = self.final_norm(x)
        if hasattr(self, "project_out"):
            x = self.project_out(x)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        logits = self.lm_head(x)
        if s.final_logit_softcap is not None:  # HF's order: divide, tanh, multiply
            logits = torch.tanh(logits / s.final_logit_softcap) * s.final_logit_softcap
        return logits

    @property
    def input_device(self) -> torch.device:
        """Where input ids go: the embedding's device, or, placed across devices (placement.py), the device the
        embedding runs on (an offloaded embedding's weight is on the meta device between forwards)."""
        hook = getattr(self.embed, "_hf_hook", None)
        if getattr(hook, "execution_device", None) is not None:
            return torch.device(hook.execution_device)
        return self.embed.weight.device

    def kept_heads(self) -> torch.Tensor:
        """[layers, heads] bool: False where prune_heads removed the head."""
        kept = torch.zeros(self.spec.num_layers, self.spec.num_heads, dtype=torch.bool, device=self.gates.device)
        for row, layer in zip(kept, self.layers):
            row[layer.attn.head_ids] = True
        return kept

    def check_call(self, input_ids, attention_mask=None) -> bool:
        """generate's boundary: ids, mask and gates checked once per call (one host sync). Returns whether
        every gate of every head still present is 1 (a pruned head's 0 gate does not count), so the decode
        steps can skip the multiply."""
        check_ids(input_ids, self.input_device)
        check_mask(attention_mask, input_ids, input_ids.shape[1])
        check_gates(self.gates, self.spec.num_layers, self.spec.num_heads, self.input_device)
        return check_values(input_ids, self.embed.num_embeddings, self.gates, self.kept_heads())

    def attention_mask(self, attention_mask, B, T, past, query_pos, static_len, dtype, device) -> AttentionMask:
        """Without padding, SDPA's own causal mask (or none for one new token) keeps the fast kernels;
        otherwise an additive bias: a query sees itself, earlier positions (within the sliding window,
        for windowed layers) and no padding. finfo.min rather than -inf keeps fully padded rows finite,
        as transformers does."""
        s = self.spec
        alibi = s.positions == "alibi"
        window = s.sliding_window if any(s.sliding_layers) else None
        if attention_mask is None and static_len is None and not alibi:
            single_new_token = T == 1
            first_chunk = isinstance(past, int) and past == 0
            window_binds = window is not None and past + T > window
            if (single_new_token or first_chunk) and not window_binds:
                fast = AttentionMask(bias=None, causal=not single_new_token)
                fast.window_causal = fast.causal
                return fast
        S = static_len if static_len is not None else past + T
        if attention_mask is None:
            attention_mask = torch.ones(B, S, dtype=torch.long, device=device)
        keys = attention_mask.long()
        key_pos = torch.arange(S, device=device)
        causal = key_pos[None, :] <= query_pos[:, None]
        padding = keys[:, None, :].bool()

        def additive(allowed: torch.Tensor) -> torch.Tensor:
            bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
            return bias.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]

        allowed = causal[None] & padding
        bias = additive(allowed)
        if alibi and s.falcon_alibi:
            # Falcon-RW, as HF's SDPA path (and the original Falcon-RW code): bf16 slopes times key positions
            # in bf16, divided by sqrt(head_dim) because SDPA scales q·k alone; masked keys get finfo.min.
            key_positions = ((keys.cumsum(-1) - 1) * keys)[:, None, None, :]
            falcon = (self.alibi_slopes.bfloat16().view(1, -1, 1, 1) * key_positions).to(dtype)
            bias = (falcon / math.sqrt(s.head_dim)).masked_fill(~allowed[:, None], torch.finfo(dtype).min)
        elif alibi:  # BLOOM: slope[h] * key position (from the mask), computed in fp32, added in the dtype
            key_positions = ((keys.cumsum(-1) - 1) * keys)[:, None, None, :].float()
            bias = bias + (self.alibi_slopes.view(1, -1, 1, 1) * key_positions).to(dtype)
        window_bias = None
        if window is not None:  # HF: key allowed when key > query - window
            in_window = key_pos[None, :] > query_pos[:, None] - window
            window_bias = additive((causal & in_window)[None] & padding)
        return AttentionMask(bias=bias, causal=False, per_head=alibi, window_bias=window_bias)
