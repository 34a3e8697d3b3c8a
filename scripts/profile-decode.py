"""Where a batch-1 decode step's time goes, on CUDA in bf16: the adaptive model's eager static-cache and
CUDA-graph paths, each timed (median of 3 runs of 128 tokens) and profiled (CUDA kernel time per token,
kernels per token, the share of the step the GPU is busy, the top kernels), against the limit that the
device's read bandwidth sets; then the graph path's speed with a fraction of every layer's heads removed.
A diagnosis printed for a reader, not a matrix record (those are `--checks bench`).

    PYTHONPATH=. python3 scripts/profile-decode.py MODEL_ID [FRACTIONS]   # e.g. meta-llama/Llama-2-7b-hf 0.3,0.5
"""
import sys, time, json, torch
from torch.profiler import profile, ProfilerActivity
from sentinel_matrix.catalog import load_catalog
from sentinel_matrix.sources import synthetic_checkpoint
from sentinel_matrix.checks.bench import weights_read_per_token_mb, read_bandwidth
from sentinel_core import load_adaptive_model

model_id = sys.argv[1]
fractions = [float(f) for f in sys.argv[2].split(",")] if len(sys.argv) > 2 else []
entry = next(e for e in load_catalog() if e.id == model_id)
t = time.time(); folder = synthetic_checkpoint(entry, full_depth=True); print("checkpoint", round(time.time() - t, 1), "s", flush=True)
m = load_adaptive_model(folder, device="cuda", dtype="bfloat16")
bw = read_bandwidth("cuda")["read_bandwidth_gb_s"]
g = torch.Generator().manual_seed(0)
ids = torch.randint(3, m.spec.vocab_size, (1, 16), generator=g).cuda()
N = 128

def tok_s(**kw):
    m.generate(ids, max_new_tokens=N, eos_token_id=[], **kw); torch.cuda.synchronize()
    best = []
    for _ in range(3):
        t = time.perf_counter(); m.generate(ids, max_new_tokens=N, eos_token_id=[], **kw); torch.cuda.synchronize()
        best.append(N / (time.perf_counter() - t))
    return sorted(best)[1]

def kernels(**kw):
    m.generate(ids, max_new_tokens=8, eos_token_id=[], **kw); torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as p:
        m.generate(ids, max_new_tokens=N, eos_token_id=[], **kw); torch.cuda.synchronize()
    ev = [e for e in p.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(e.device_time for e in ev) / 1e3  # ms
    names = {}
    for e in ev:
        n, c = names.get(e.name, (0.0, 0))
        names[e.name] = (n + e.device_time / 1e3, c + 1)
    return total, len(ev), sorted(names.items(), key=lambda kv: -kv[1][0])[:12]

mb = weights_read_per_token_mb(m)
limit = bw * 1e9 / (mb * 2**20)
print(f"{model_id}: weights read per token {mb:.0f} MiB, bandwidth {bw:.0f} GB/s, limit {limit:.0f} tok/s")
for label, kw in (("eager static", {"static_cache": True}), ("graph", {"cuda_graph": True})):
    speed = tok_s(**kw)
    total, count, top = kernels(**kw)
    print(f"{label}: {speed:.1f} tok/s = {1e3/speed:.3f} ms/token; kernel time {total/N:.3f} ms/token "
          f"({count/N:.0f} kernels/token, busy {100*total/N/(1e3/speed):.0f}%); share of limit {100*speed/limit:.1f}%")
    for name, (ms, c) in top:
        print(f"   {ms/N*1e3:8.1f} us/token  {c/N:6.1f}/token  {name[:110]}")
    sys.stdout.flush()
for f in fractions:
    m2 = load_adaptive_model(folder, device="cuda", dtype="bfloat16")
    n = int(round(m2.num_heads * f))
    m2.prune_heads({l: list(range(n)) for l in range(m2.num_layers)})
    mb2 = weights_read_per_token_mb(m2)
    m, keep = m2, m
    s = tok_s(cuda_graph=True)
    print(f"pruned {f:.0%} ({n}/{m2.num_heads} heads per layer): weights/token {mb2:.0f} MiB ({100*(1-mb2/mb):.1f}% fewer), "
          f"graph {s:.1f} tok/s", flush=True)
    m = keep; del m2; torch.cuda.empty_cache()
