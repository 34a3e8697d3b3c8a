"""On a GPU: where a fused decode step's idle time lies. The kernels of generate(N) (catalog entries at full depth,
synthetic bf16, the fused path) on the profiler's timeline, in start order: the gaps between one kernel's end and the
next one's start, summed per kernel that comes after the gap (short names), and the gap's share of the step. A
gap before the first kernel of a step that is long says the host (generate's loop) is late; gaps spread over every
kernel say launch latency inside the graph.

    python3 scripts/step-gaps.py MODEL [MODEL ...]
"""
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, ".")
from sentinel_core import load_adaptive_model  # noqa: E402
from sentinel_matrix.catalog import load_catalog  # noqa: E402
from sentinel_matrix.checks.bench import DECODE_PROMPT  # noqa: E402
from sentinel_matrix.checks.profile import short_kernel_name  # noqa: E402
from sentinel_matrix.sources import synthetic_checkpoint  # noqa: E402

STEPS = 32
print(torch.cuda.get_device_name(0), flush=True)
entries = {e.id: e for e in load_catalog()}
for model_id in sys.argv[1:]:
    model = load_adaptive_model(synthetic_checkpoint(entries[model_id], full_depth=True), device="cuda",
                                dtype="bfloat16")
    prompt = torch.randint(3, model.spec.vocab_size, (1, DECODE_PROMPT), generator=torch.Generator().manual_seed(0))
    prompt = prompt.cuda()
    for kw in ({"fused": True}, {"cuda_graph": True}):
        model.generate(prompt, max_new_tokens=STEPS, eos_token_id=[], **kw)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
            model.generate(prompt, max_new_tokens=STEPS, eos_token_id=[], **kw)
            torch.cuda.synchronize()
        kernels = sorted((e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
                         key=lambda e: e.time_range.start)
        # the second half of the call: replayed steps only (the prefill, the warm-up and the capture come first)
        kernels = kernels[len(kernels) // 2:]
        span = kernels[-1].time_range.end - kernels[0].time_range.start
        busy = sum(e.time_range.end - e.time_range.start for e in kernels)
        gaps: dict[str, list[float]] = {}
        for before, after in zip(kernels, kernels[1:]):
            gap = after.time_range.start - before.time_range.end
            entry = gaps.setdefault(short_kernel_name(after.name)[:60], [0.0, 0, 0.0])
            entry[0] += gap
            entry[1] += 1
            entry[2] = max(entry[2], gap)
        print(f"{model_id} {kw}: {len(kernels)} kernels over {span / 1e3:.2f} ms, busy {busy / span:.0%}; "
              f"idle {(span - busy) / 1e3:.2f} ms", flush=True)
        for name, (total, n, most) in sorted(gaps.items(), key=lambda kv: -kv[1][0])[:10]:
            print(f"   {total / 1e3:7.3f} ms idle before {n:5d}× {name} (mean {total / n:6.2f} µs, max {most:7.1f})",
                  flush=True)
        runs = sorted(e.time_range.end - e.time_range.start for e in kernels if e.name.startswith("linear_kernel"))
        if runs:
            print(f"   linear_kernel µs: median {runs[len(runs) // 2]:.1f}, p10 {runs[len(runs) // 10]:.1f}, "
                  f"p90 {runs[9 * len(runs) // 10]:.1f}", flush=True)
    del model
    torch.cuda.empty_cache()
