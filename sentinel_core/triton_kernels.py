"""Triton kernels of the fused decode step (fused.py): one new token for one sequence.

Two kernels cover a layer:
- `linear_kernel`: y = W · norm(x) (+ bias), the norm (RMS or LayerNorm, statistics in fp32) in its prologue, and in
  its epilogue the activation, or SiLU(gate) · up for a gated MLP (rows [gate | up] of one matrix), or the residual
  add. Batch 1 makes it a matrix-vector product: the kernel streams W once, each program owning BLOCK_N rows.
- `decode_attention_kernel`: one program per query head: the head's query and the new key rotated (the decoder's
  swap-and-signed-sin form, halves or GPT-J's pairs, so the same arithmetic), the new key and value written into the static cache by the
  first query head of their group, softmax(q·K) V over the cached keys plus the new one in fp32 (online softmax),
  ALiBi, padding, the sliding window, and the head's gate. Each query head reads its KV head through `kv_of_head`,
  so the uneven groups pruning leaves need no gather.
Intermediate results are rounded to the activations' dtype where the eager decoder rounds them (a linear's output,
the activation, the residual sum, the rotated query), so the fused step rounds as the eager one does, up to the
order of the sums inside a dot product.

Every kernel is written once as a plain function and compiled by Triton for CUDA tensors, or run by Triton's
interpreter for CPU tensors (how the tests check them on a machine without a GPU).
"""

from __future__ import annotations

import functools
import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the fused path is optional: fused.py refuses by name without Triton
    triton = tl = None

# activation codes of linear_kernel's epilogue; names as transformers' ACT2FN (and the decoder's bloom_gelu)
ACTIVATIONS = {None: 0, "silu": 1, "swish": 1, "gelu_new": 2, "gelu_pytorch_tanh": 2, "gelu_fast": 2,
               "bloom_gelu": 5, "gelu": 3, "relu": 4}
# norm codes: none, RMS (Llama: x·rstd rounded, then × weight), RMS with (1 + weight) in fp32 (Gemma), LayerNorm
NORMS = {None: 0, "rmsnorm": 1, "rmsnorm_unit_offset": 2, "layernorm": 3}


def available() -> bool:
    return triton is not None


def linear_kernel(x_ptr, w_ptr, bias_ptr, res_ptr, out_ptr, norm_w_ptr, norm_b_ptr,
                  N, K, eps,
                  NORM: tl.constexpr, NORM_AFFINE: tl.constexpr, NORM_BIAS: tl.constexpr,
                  HAS_BIAS: tl.constexpr, ACT: tl.constexpr, GATED: tl.constexpr, HAS_RES: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ONE_TILE: tl.constexpr = False,
                  PDL: tl.constexpr = False):
    # x [K], W [N (× 2 when GATED), K] row-major, out [N]; ONE_TILE: K <= BLOCK_K
    if PDL:  # programmatic dependent launch: wait for the previous kernel's writes (x), let the next one launch
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    dtype = out_ptr.dtype.element_ty
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    mean = 0.0
    rstd = 1.0
    if ONE_TILE:  # x is read once, for its statistics and its product: a program's reads wait on one trip to L2
        x_tile = tl.load(x_ptr + tl.arange(0, BLOCK_K), mask=tl.arange(0, BLOCK_K) < K, other=0.0).to(tl.float32)
    if NORM != 0:  # statistics of x in fp32, over the whole row (every program reads x: it is small, in L2)
        if ONE_TILE:
            s1 = x_tile
            s2 = x_tile * x_tile
        else:
            s1 = tl.zeros([BLOCK_K], dtype=tl.float32)
            s2 = tl.zeros([BLOCK_K], dtype=tl.float32)
            for k0 in range(0, K, BLOCK_K):
                cols = k0 + tl.arange(0, BLOCK_K)
                xv = tl.load(x_ptr + cols, mask=cols < K, other=0.0).to(tl.float32)
                s1 += xv
                s2 += xv * xv
        if NORM == 3:
            mean = tl.sum(s1, 0) / K
            var = tl.maximum(tl.sum(s2, 0) / K - mean * mean, 0.0)
            rstd = 1.0 / tl.sqrt(var + eps)
        else:
            rstd = 1.0 / tl.sqrt(tl.sum(s2, 0) / K + eps)
    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    acc_up = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        col_ok = cols < K
        if ONE_TILE:
            xv = x_tile
        else:
            xv = tl.load(x_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        if NORM == 1:  # Llama: (x · rstd) in the dtype, then the weight's product in the dtype
            xv = (xv * rstd).to(dtype).to(tl.float32)
            if NORM_AFFINE:
                xv = (xv * tl.load(norm_w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)).to(dtype).to(tl.float32)
        elif NORM == 2:  # Gemma: x · rstd · (1 + weight) in fp32, rounded once
            xv = (xv * rstd * (1.0 + tl.load(norm_w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)))
            xv = xv.to(dtype).to(tl.float32)
        elif NORM == 3:  # LayerNorm: fp32 throughout, rounded once
            xv = (xv - mean) * rstd
            if NORM_AFFINE:
                xv = xv * tl.load(norm_w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
            if NORM_BIAS:
                xv = xv + tl.load(norm_b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
            xv = xv.to(dtype).to(tl.float32)
        tile = rows[:, None] * K + cols[None, :]
        tile_ok = row_ok[:, None] & col_ok[None, :]
        acc += tl.load(w_ptr + tile, mask=tile_ok, other=0.0).to(tl.float32) * xv[None, :]
        if GATED:
            acc_up += tl.load(w_ptr + N * K + tile, mask=tile_ok, other=0.0).to(tl.float32) * xv[None, :]
    y = tl.sum(acc, 1)
    if HAS_BIAS:
        y += tl.load(bias_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    y = y.to(dtype).to(tl.float32)
    if ACT == 1:  # SiLU, x · sigmoid(x)
        y = (y / (1.0 + tl.exp(-y))).to(dtype).to(tl.float32)
    elif ACT == 2:  # tanh GELU; tanh(u) = 1 - 2 / (exp(2u) + 1)
        u = 0.7978845608028654 * (y + 0.044715 * y * y * y)
        y = (0.5 * y * (2.0 - 2.0 / (tl.exp(2.0 * u) + 1.0))).to(dtype).to(tl.float32)
    elif ACT == 5:  # BLOOM's tanh GELU, its truncated constant
        u = 0.79788456 * (y + 0.044715 * y * y * y)
        y = (0.5 * y * (2.0 - 2.0 / (tl.exp(2.0 * u) + 1.0))).to(dtype).to(tl.float32)
    elif ACT == 3:  # erf GELU
        y = (0.5 * y * (1.0 + tl.erf(y * 0.7071067811865476))).to(dtype).to(tl.float32)
    elif ACT == 4:
        y = tl.maximum(y, 0.0)
    if GATED:  # rows [gate | up]: act(gate) · up
        up = tl.sum(acc_up, 1)
        if HAS_BIAS:
            up += tl.load(bias_ptr + N + rows, mask=row_ok, other=0.0).to(tl.float32)
        y = (y * up.to(dtype).to(tl.float32)).to(dtype).to(tl.float32)
    if HAS_RES:
        y += tl.load(res_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + rows, y.to(dtype), mask=row_ok)


def decode_attention_kernel(qkv_ptr, k_cache_ptr, v_cache_ptr, out_ptr, cos_ptr, sin_ptr, slot_ptr, mask_ptr,
                            gates_ptr, head_ids_ptr, kv_of_head_ptr, writes_kv_ptr, alibi_ptr, key_pos_ptr,
                            n_heads, n_kv_heads, max_len, scale, window,
                            HEAD_DIM: tl.constexpr, HEAD_DIM_P2: tl.constexpr, ROT_HALF: tl.constexpr,
                            INTERLEAVED: tl.constexpr,
                            USE_GATES: tl.constexpr, ALIBI: tl.constexpr, WINDOW: tl.constexpr,
                            BLOCK_T: tl.constexpr, PDL: tl.constexpr = False):
    # qkv [(n_heads + 2 n_kv_heads) · HEAD_DIM] (queries, keys, values), caches [n_kv_heads, max_len, HEAD_DIM],
    # cos / signed sin [2 ROT_HALF], out [n_heads · HEAD_DIM]
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    dtype = out_ptr.dtype.element_ty
    h = tl.program_id(0)
    kv = tl.load(kv_of_head_ptr + h)
    slot = tl.load(slot_ptr)
    d = tl.arange(0, HEAD_DIM_P2)
    d_ok = d < HEAD_DIM
    q = tl.load(qkv_ptr + h * HEAD_DIM + d, mask=d_ok, other=0.0).to(tl.float32)
    k_off = (n_heads + kv) * HEAD_DIM
    v_off = (n_heads + n_kv_heads + kv) * HEAD_DIM
    k_new = tl.load(qkv_ptr + k_off + d, mask=d_ok, other=0.0).to(tl.float32)
    v_new = tl.load(qkv_ptr + v_off + d, mask=d_ok, other=0.0)
    if ROT_HALF > 0:  # x · cos + swap(x) · signed_sin over the first 2 ROT_HALF dims, each product rounded
        rot = d < 2 * ROT_HALF
        if INTERLEAVED:  # GPT-J: pairs (0, 1), (2, 3), ...
            partner = d + 1 - 2 * (d % 2)
        else:  # the two halves
            partner = tl.where(d < ROT_HALF, d + ROT_HALF, d - ROT_HALF)
        cos = tl.load(cos_ptr + d, mask=rot, other=1.0).to(tl.float32)
        sin = tl.load(sin_ptr + d, mask=rot, other=0.0).to(tl.float32)
        q_swap = tl.load(qkv_ptr + h * HEAD_DIM + partner, mask=rot, other=0.0).to(tl.float32)
        k_swap = tl.load(qkv_ptr + k_off + partner, mask=rot, other=0.0).to(tl.float32)
        q_rot = ((q * cos).to(dtype).to(tl.float32) + (q_swap * sin).to(dtype).to(tl.float32)).to(dtype)
        k_rot = ((k_new * cos).to(dtype).to(tl.float32) + (k_swap * sin).to(dtype).to(tl.float32)).to(dtype)
        q = tl.where(rot, q_rot.to(tl.float32), q)
        k_new = tl.where(rot, k_rot.to(tl.float32), k_new)
    cache_row = kv * max_len * HEAD_DIM
    # one query head per KV head writes the new key and value (the flag read as a vector: a scalar mask is not
    # something Triton's interpreter can store with)
    writes = d_ok & (tl.load(writes_kv_ptr + h + d * 0) != 0)
    tl.store(k_cache_ptr + cache_row + slot * HEAD_DIM + d, k_new.to(dtype), mask=writes)
    tl.store(v_cache_ptr + cache_row + slot * HEAD_DIM + d, v_new, mask=writes)
    slope = 0.0
    if ALIBI:
        slope = tl.load(alibi_ptr + tl.load(head_ids_ptr + h)).to(tl.float32)
    # the new token attends to itself (its slot's mask is set before the step)
    s_new = tl.sum(q * k_new, 0) * scale
    if ALIBI:
        s_new += (slope * tl.load(key_pos_ptr + slot)).to(dtype).to(tl.float32)
    m = s_new
    l = s_new * 0.0 + 1.0
    acc = v_new.to(tl.float32)
    # the cached keys: slots before this one (masked loads past them read no memory)
    for t0 in range(0, max_len, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        seen = t < slot
        keep = seen & (tl.load(mask_ptr + t, mask=seen, other=0) != 0)
        if WINDOW:
            keep = keep & (t > slot - window)
        kt = tl.load(k_cache_ptr + cache_row + t[:, None] * HEAD_DIM + d[None, :],
                     mask=keep[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
        s = tl.sum(kt * q[None, :], 1) * scale
        if ALIBI:
            s += (slope * tl.load(key_pos_ptr + t, mask=keep, other=0.0)).to(dtype).to(tl.float32)
        s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 0))
        p = tl.exp(s - m_new)
        alpha = tl.exp(m - m_new)
        vt = tl.load(v_cache_ptr + cache_row + t[:, None] * HEAD_DIM + d[None, :],
                     mask=keep[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
        acc = acc * alpha + tl.sum(p[:, None] * vt, 0)
        l = l * alpha + tl.sum(p, 0)
        m = m_new
    y = (acc / l).to(dtype).to(tl.float32)
    if USE_GATES:  # the gate rounded to the dtype, as the eager decoder multiplies it
        gate = tl.load(gates_ptr + tl.load(head_ids_ptr + h)).to(dtype).to(tl.float32)
        y = (y * gate).to(dtype).to(tl.float32)
    tl.store(out_ptr + h * HEAD_DIM + d, y.to(dtype), mask=d_ok)


def interpreted() -> bool:
    """Whether Triton runs its kernels in its interpreter (CPU tensors): TRITON_INTERPRET=1, read by Triton when it
    is first imported (transformers imports it): the test suite sets it on machines without a GPU (conftest.py)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def _kernel(fn):
    return triton.jit(fn)


def launch(fn, grid, *args, num_warps: int = 4, **constexprs):
    """Run a kernel: compiled for CUDA tensors, or by Triton's interpreter (CPU tensors, on a machine without a GPU)."""
    device = next(a for a in args if isinstance(a, torch.Tensor)).device
    if (device.type == "cuda") == interpreted():
        raise RuntimeError(f"Triton runs {'interpreted' if interpreted() else 'compiled'} in this process, so its "
                           f"kernels need {'CPU' if interpreted() else 'CUDA'} tensors, not {device.type} ones")
    if device.type == "cuda":
        constexprs["num_warps"] = num_warps
        if pdl(device):
            constexprs.update(PDL=True, launch_pdl=True)
    _kernel(fn)[grid](*args, **constexprs)


# On: TinyLlama's fused step took 1.681 ms against 1.726 off (median of 3 interleaved runs each, H100, same greedy
# tokens; scripts/pdl-ab.py).
PROGRAMMATIC_DEPENDENT_LAUNCH = True


@functools.cache
def _hopper_or_later(index: int) -> bool:
    return torch.cuda.get_device_capability(index) >= (9, 0)


def pdl(device: torch.device) -> bool:
    """Whether kernels launch with programmatic dependent launch (Hopper and later): a kernel's programs start while
    the previous kernel's last ones finish, and wait (griddepcontrol) before reading what it wrote, hiding the gap
    between two launches."""
    return PROGRAMMATIC_DEPENDENT_LAUNCH and _hopper_or_later(device.index or 0)


def next_power_of_2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


@functools.cache
def linear_blocks(n: int, k: int, device: torch.device) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_K, num_warps) for an n × k matrix-vector product. On CUDA, as measured on an H100 (Triton 3.6,
    bf16, scripts/tune-linear.py): one row per program was the fastest on every shape of the seed geometries (the
    grid then covers the SMs many times over and each program streams one contiguous row); wide rows read 1024
    columns a step with 8 warps, narrow ones 256 with 4 (e.g. TinyLlama's q|k|v 2560 × 2048: 1026 GB/s against
    cuBLAS's 987 on the same shape; Llama-2-7B's gate|up 2 · 11008 × 4096: 2495 GB/s against 2263). On the
    interpreter, small blocks (it runs each op in numpy)."""
    if device.type != "cuda":
        return 16, 64, 1
    if k >= 4096 or (k >= 2048 and n <= 4096):
        return 1, 1024, 8
    if k >= 2048:
        return 1, 512, 4
    return 1, 256, 4


def linear(x, weight, out, *, bias=None, residual=None, norm: str | None = None, norm_weight=None,
           norm_bias=None, eps: float = 0.0, activation: str | None = None, gated: bool = False) -> None:
    """out[N] = epilogue(weight[N or 2N, K] · norm(x[K]) + bias); see linear_kernel."""
    n, k = out.shape[-1], x.shape[-1]
    block_n, block_k, warps = linear_blocks(n, k, x.device)
    dummy = out
    launch(linear_kernel, (triton.cdiv(n, block_n),), x, weight, dummy if bias is None else bias,
           dummy if residual is None else residual, out, dummy if norm_weight is None else norm_weight,
           dummy if norm_bias is None else norm_bias, n, k, float(eps),
           NORM=NORMS[norm], NORM_AFFINE=norm_weight is not None, NORM_BIAS=norm_bias is not None,
           HAS_BIAS=bias is not None, ACT=ACTIVATIONS[activation], GATED=gated, HAS_RES=residual is not None,
           BLOCK_N=block_n, BLOCK_K=block_k, ONE_TILE=k <= block_k, num_warps=warps)


def decode_attention(qkv, k_cache, v_cache, out, *, cos, sin, slot, mask, gates, head_ids, kv_of_head, writes_kv,
                     n_heads: int, n_kv_heads: int, head_dim: int, rotary_dim: int, scale: float,
                     interleaved: bool = False, window: int | None = None, alibi_slopes=None,
                     key_positions=None) -> None:
    """out[n_heads · head_dim] = each head's gated attention output for one new token; see decode_attention_kernel.
    k_cache / v_cache: one sequence's [n_kv_heads, max_len, head_dim]; slot: a 1-element device tensor."""
    max_len = k_cache.shape[-2]
    dummy = qkv
    launch(decode_attention_kernel, (n_heads,), qkv, k_cache, v_cache, out,
           dummy if cos is None else cos, dummy if sin is None else sin, slot, mask,
           dummy if gates is None else gates, head_ids, kv_of_head, writes_kv,
           dummy if alibi_slopes is None else alibi_slopes, dummy if key_positions is None else key_positions,
           n_heads, n_kv_heads, max_len, float(scale), int(window or 0),
           HEAD_DIM=head_dim, HEAD_DIM_P2=next_power_of_2(head_dim), ROT_HALF=rotary_dim // 2, INTERLEAVED=interleaved,
           USE_GATES=gates is not None, ALIBI=alibi_slopes is not None, WINDOW=window is not None,
           BLOCK_T=64 if qkv.is_cuda else 16)
