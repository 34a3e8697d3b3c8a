"""On a GPU: the fused linear kernel's read bandwidth per block configuration, for the matrix-vector products of the
seed geometries' decode steps (bf16, batch 1), beside cuBLAS's (F.linear) on the same shape. Prints, per shape, the
fastest configuration and what it reaches; sentinel_core/triton_kernels.linear_blocks is set from it.

    python3 scripts/tune-linear.py [RESULTS.json]
"""
import json
import sys

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench

sys.path.insert(0, ".")
from sentinel_core import triton_kernels as tk  # noqa: E402

SHAPES = {  # name: (rows N, columns K, gated, prologue norm, epilogue residual), as the fused step launches them
    "tinyllama qkv": (2560, 2048, False, True, False), "tinyllama out": (2048, 2048, False, False, True),
    "tinyllama up": (5632, 2048, True, True, False), "tinyllama down": (2048, 5632, False, False, True),
    "llama7b qkv": (12288, 4096, False, True, False), "llama7b out": (4096, 4096, False, False, True),
    "llama7b up": (11008, 4096, True, True, False), "llama7b down": (4096, 11008, False, False, True),
    "gpt2-medium qkv": (3072, 1024, False, True, False), "gpt2-medium out": (1024, 1024, False, False, True),
    "gpt2-medium up": (4096, 1024, False, True, False), "gpt2-medium down": (1024, 4096, False, False, True),
    "lm head 32000": (32000, 2048, False, True, False), "lm head 50257": (50257, 1024, False, True, False),
}
# One row per program won every shape of the first sweep (BLOCK_N 1-8, BLOCK_K 256-1024, 4 or 8 warps): this one asks
# whether longer row reads (more bytes in flight per program, x read once when a tile holds the whole row) or 16 warps
# go further.
CONFIGS = [(1, block_k, warps) for block_k in (256, 512, 1024, 2048, 4096) for warps in (4, 8, 16)]
CONFIGS += [(2, block_k, 8) for block_k in (512, 1024, 2048)]

print(torch.cuda.get_device_name(0), "triton", triton.__version__, flush=True)
results = {}
for name, (n, k, gated, norm, residual) in SHAPES.items():
    w = torch.randn((2 * n if gated else n), k, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(k, device="cuda", dtype=torch.bfloat16)
    norm_w = torch.randn(k, device="cuda", dtype=torch.bfloat16)
    res = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(n, device="cuda", dtype=torch.bfloat16)
    nbytes = w.numel() * 2
    cublas = do_bench(lambda: F.linear(x, w), warmup=10, rep=50)
    timed = []
    for block_n, block_k, warps in CONFIGS:
        if block_k > 2 * triton.next_power_of_2(k):
            continue
        run = lambda: tk.launch(tk.linear_kernel, (triton.cdiv(n, block_n),), x, w, out, res, out, norm_w, out,  # noqa: E731
                                n, k, 1e-5, NORM=1 if norm else 0, NORM_AFFINE=norm, NORM_BIAS=False, HAS_BIAS=False,
                                ACT=1 if gated else 0, GATED=gated, HAS_RES=residual, BLOCK_N=block_n,
                                BLOCK_K=block_k, ONE_TILE=k <= block_k, num_warps=warps)
        try:
            ms = do_bench(run, warmup=10, rep=50)
        except Exception as exc:  # a configuration that does not compile (registers): skipped
            print("  skip", block_n, block_k, warps, type(exc).__name__, flush=True)
            continue
        timed.append((ms, block_n, block_k, warps))
    timed.sort()
    default = tk.linear_blocks(n, k, x.device)
    default_ms = next((t[0] for t in timed if t[1:] == default), float("nan"))
    results[name] = dict(n=n, k=k, cublas_us=cublas * 1e3, default=default, default_us=default_ms * 1e3,
                         ranked=[dict(us=ms * 1e3, blocks=(bn, bk, wp)) for ms, bn, bk, wp in timed])
    top = "; ".join(f"{bn}/{bk}/{wp} {nbytes / ms / 1e6:.0f}" for ms, bn, bk, wp in timed[:4])
    print(f"{name:18s} {n:6d}x{k:5d}{' gated' if gated else '      '}: GB/s best {top}; default {default} "
          f"{nbytes / default_ms / 1e6:.0f}; cuBLAS {nbytes / cublas / 1e6:.0f}", flush=True)
if len(sys.argv) > 1:  # a JSON file of every shape's ranking
    with open(sys.argv[1], "w") as f:
        json.dump(results, f, indent=1)
