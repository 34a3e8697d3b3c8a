"""On a GPU: the fused linear kernel's read bandwidth per block configuration, for the matrix-vector products of the
seed geometries' decode steps (bf16, batch 1), beside cuBLAS's (F.linear) on the same shape. Prints, per shape, the
fastest configuration and what it reaches; sentinel_core/triton_kernels.linear_blocks is set from it.

    python3 scripts/tune-linear.py
"""
import itertools
import sys

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench

sys.path.insert(0, ".")
from sentinel_core import triton_kernels as tk  # noqa: E402

SHAPES = {  # name: (rows N, columns K, gated)
    "tinyllama qkv": (2560, 2048, False), "tinyllama out": (2048, 2048, False), "tinyllama up": (5632, 2048, True),
    "tinyllama down": (2048, 5632, False), "llama7b qkv": (12288, 4096, False), "llama7b out": (4096, 4096, False),
    "llama7b up": (11008, 4096, True), "llama7b down": (4096, 11008, False), "gpt2-medium qkv": (3072, 1024, False),
    "gpt2-medium up": (4096, 1024, False), "gpt2-medium down": (1024, 4096, False), "lm head 32000": (32000, 2048, False),
}
# One row per program won every shape of the first sweep (BLOCK_N 1-8, BLOCK_K 256-1024, 4 or 8 warps): this one asks
# whether longer row reads (more bytes in flight per program) or 16 warps go further.
CONFIGS = list(itertools.product((1, 2), (256, 512, 1024, 2048), (4, 8, 16)))

print(torch.cuda.get_device_name(0), "triton", triton.__version__, flush=True)
for name, (n, k, gated) in SHAPES.items():
    w = torch.randn((2 * n if gated else n), k, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(k, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(n, device="cuda", dtype=torch.bfloat16)
    nbytes = w.numel() * 2
    cublas = do_bench(lambda: F.linear(x, w), warmup=10, rep=50)
    best = None
    for block_n, block_k, warps in CONFIGS:
        if block_k > triton.next_power_of_2(k):
            continue
        run = lambda: tk.launch(tk.linear_kernel, (triton.cdiv(n, block_n),), x, w, out, out, out, out, out, n, k, 0.0,  # noqa: E731
                                NORM=0, NORM_AFFINE=False, NORM_BIAS=False, HAS_BIAS=False, ACT=1 if gated else 0,
                                GATED=gated, HAS_RES=False, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps)
        try:
            ms = do_bench(run, warmup=10, rep=50)
        except Exception as exc:  # a configuration that does not compile (registers): skipped
            print("  skip", block_n, block_k, warps, type(exc).__name__, flush=True)
            continue
        if best is None or ms < best[0]:
            best = (ms, block_n, block_k, warps)
    ms, block_n, block_k, warps = best
    default = tk.linear_blocks(n, k, x.device)
    print(f"{name:18s} {n:6d}x{k:5d}{' gated' if gated else '      '}: best BLOCK_N={block_n:2d} BLOCK_K={block_k:4d} "
          f"warps={warps}: {ms * 1e3:7.1f} us = {nbytes / ms / 1e6:6.0f} GB/s; cuBLAS {cublas * 1e3:7.1f} us = "
          f"{nbytes / cublas / 1e6:6.0f} GB/s; default {default}", flush=True)
