"""The profile check: where a batch-1 decode step's time goes, on CUDA, per decode path of the adaptive model (its
CUDA graph, and the fused Triton step where it runs), unpruned and with half of every layer's heads removed.

Per step: the kernels launched and their summed time; the GPU's busy time, when at least one kernel runs (kernels on
one stream do overlap: under programmatic dependent launch, the fused step's and cuBLAS's on Hopper, a kernel starts
before the last one ends and waits inside its own span, so the sum can exceed the step), and its share of the step on
the GPU's own timeline; the wall time; the share of the device's batch-1 limit (its read bandwidth over the bytes a
step reads); and the kernels that take the most time. A step is a generate of N + 2 tokens less a generate of 2 (the
prefill, the first token and the first decode step, where the graph is captured, cancel). What every generate call
pays besides its steps is recorded too: its prefill (a generate of 1 token), and its first decode step's warm-up and
capture (a generate of 2, less one of 1, less a step). A measurement, never a verdict; `sentinel profile MODEL`
prints the same.
"""

from __future__ import annotations

import gc
import re
import statistics

import torch

from sentinel_core import load_adaptive_model

from ..evidence import TRACER
from ..timing import percentile, time_runs
from .bench import DECODE_PROMPT, PRUNE_FRACTION, fused_side, prune_half, read_bandwidth, weights_read_per_token_mb

# Each call's own setup (prefill, warm-up, capture) varies by milliseconds from call to call; the wall time of a step is
# a difference of two calls' medians, so that noise is divided by the steps.
PROFILE_STEPS = 128
TIMED_RUNS = 5
TOP_KERNELS = 8
PATHS = {"graph_": {"cuda_graph": True}, "fused_": {"fused": True}}  # key prefix -> generate's arguments


def short_kernel_name(name: str) -> str:
    """A kernel's name without namespaces' "(anonymous namespace)", template arguments and its parameter list (cuBLAS
    and torch names run to hundreds of characters). Templates go first: they can hold parentheses ("{lambda(int)#1}"),
    and what is left of the first one after them opens the parameter list."""
    name = name.replace("(anonymous namespace)::", "")
    while "<" in name:
        stripped = re.sub(r"<[^<>]*>", "", name)
        if stripped == name:
            break
        name = stripped
    return " ".join(name.split("(", 1)[0].split())[:80]


def kernel_summary(events) -> tuple[dict[str, tuple[float, int]], float, list[float]]:
    """Of a profile's CUDA events (kernels, memcpy, memset): name -> (summed µs, launches); the µs in which at least one
    ran (the union of their spans); and every launch's start µs, in order."""
    out: dict[str, tuple[float, int]] = {}
    spans = []
    for event in events:
        if event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        us, count = out.get(event.name, (0.0, 0))
        out[event.name] = (us + event.device_time, count + 1)
        spans.append((event.time_range.start, event.time_range.end))
    busy, reached = 0.0, None  # reached: the end of the busy time counted so far
    for start, end in sorted(spans):
        if reached is None or start >= reached:
            busy, reached = busy + end - start, end
        elif end > reached:
            busy, reached = busy + end - reached, end
    return out, busy, sorted(start for start, _ in spans)


def step_period(starts: list[float], per_step: int) -> float | None:
    """A decode step's length on the GPU's own timeline, µs: the median, over launches, of the time from a kernel's
    start to the start of the kernel a step (per_step launches) later. Nearly every such pair lies in the
    replayed steps, so the call's prefill, warm-up and capture, whose host-bound gaps differ from call to call, do not
    move it (a difference of two calls' first-to-last spans would carry that noise into the step)."""
    if per_step < 1:
        return None
    gaps = [starts[j + per_step] - starts[j] for j in range(len(starts) - per_step)]
    return statistics.median(gaps) if gaps else None


def kernel_times(run) -> tuple[dict[str, tuple[float, int]], float, list[float]]:
    """kernel_summary of what `run()` issues on the GPU."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    return kernel_summary(prof.events())


@torch.no_grad()
def profile_path(model, prompt, kw: dict, limit_tok_s: float | None, prefix: str) -> dict:
    """A step: a generate of N + 2 tokens less one of 2, over N. Both run the prefill (the first token) and the first
    decode step, where each generate call captures its CUDA graph after two eager warm-up steps: that capture (and
    its kernels) cancels with the rest, leaving N replayed steps. A generate of 1 token captures nothing."""
    generate = lambda n: model.generate(prompt, max_new_tokens=n, eos_token_id=[], **kw)  # noqa: E731
    generate(PROFILE_STEPS + 2)  # warm: the kernels compiled
    with TRACER.paused():
        long = time_runs(lambda: generate(PROFILE_STEPS + 2), "cuda", rounds=TIMED_RUNS, warmup=0)
        short = time_runs(lambda: generate(2), "cuda", rounds=TIMED_RUNS, warmup=0)
        first = time_runs(lambda: generate(1), "cuda", rounds=TIMED_RUNS, warmup=0)
        (many, busy_many, starts), (one, busy_one, _) = \
            kernel_times(lambda: generate(PROFILE_STEPS + 2)), kernel_times(lambda: generate(2))
    wall_ms = 1e3 * (percentile(long, 50) - percentile(short, 50)) / PROFILE_STEPS
    prefill_ms = 1e3 * percentile(first, 50)
    capture_ms = 1e3 * (percentile(short, 50) - percentile(first, 50)) - wall_ms
    busy_ms = (busy_many - busy_one) / PROFILE_STEPS / 1e3
    per_step = {name: ((us - one.get(name, (0.0, 0))[0]) / PROFILE_STEPS, (n - one.get(name, (0.0, 0))[1]) / PROFILE_STEPS)
                for name, (us, n) in many.items()}
    per_step = {name: v for name, v in per_step.items() if v[1] > 0}
    kernel_ms = sum(us for us, _ in per_step.values()) / 1e3
    launches_per_step = (len(starts) - sum(n for _, n in one.values())) / PROFILE_STEPS
    # The busy time's share is of the step on the profiled timeline: the wall time above is timed without the
    # profiler, which stretches a step. A step launching a varying number of kernels has no period: no share.
    period_us = step_period(starts, round(launches_per_step)) if launches_per_step.is_integer() else None
    by_short: dict[str, list[float]] = {}
    for name, (us, n) in per_step.items():
        entry = by_short.setdefault(short_kernel_name(name), [0.0, 0.0])
        entry[0], entry[1] = entry[0] + us, entry[1] + n
    top = sorted(by_short.items(), key=lambda kv: -kv[1][0])[:TOP_KERNELS]
    out = {f"{prefix}kernels_per_step": sum(n for _, n in per_step.values()),
           f"{prefix}kernel_ms_per_step": kernel_ms, f"{prefix}busy_ms_per_step": busy_ms,
           f"{prefix}gpu_step_ms": None if period_us is None else period_us / 1e3,
           f"{prefix}busy_share": busy_ms / (period_us / 1e3) if period_us else None,
           f"{prefix}wall_ms_per_step": wall_ms, f"{prefix}call_prefill_ms": prefill_ms,
           f"{prefix}call_capture_ms": capture_ms,
           f"{prefix}top_kernels": {name: [round(us, 2), round(n, 2)] for name, (us, n) in top}}
    if limit_tok_s:
        out[f"{prefix}share_of_limit"] = (1e3 / wall_ms) / limit_tok_s
    return out


def run_profile(folder, device: str, dtype: str) -> dict:
    """One profile record (CUDA only: the matrix row skips elsewhere, saying so)."""
    model = load_adaptive_model(folder, device=device, dtype=dtype)
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(3, model.spec.vocab_size, (1, DECODE_PROMPT), generator=g).to(device)
    bandwidth = read_bandwidth(device)
    read_mb = weights_read_per_token_mb(model)
    limit = bandwidth["read_bandwidth_peak_gb_s"] * 1e9 / (read_mb * 2**20)
    metrics = {"profile_steps": PROFILE_STEPS, "weights_read_per_token_mb": read_mb,
               "read_bandwidth_peak_gb_s": bandwidth["read_bandwidth_peak_gb_s"], "limit_decode_tokens_per_s": limit}
    fused, reason = fused_side(model, device, dtype, DECODE_PROMPT + PROFILE_STEPS + 2, 1)
    paths = dict(PATHS)
    if fused is None:
        metrics["fused_unavailable"] = reason
        paths.pop("fused_")
    for prefix, kw in paths.items():
        metrics.update(profile_path(model, prompt, kw, limit, prefix))
    prune_half(model)
    pruned_limit = bandwidth["read_bandwidth_peak_gb_s"] * 1e9 / (weights_read_per_token_mb(model) * 2**20)
    metrics["pruned_fraction"] = PRUNE_FRACTION
    for prefix, kw in paths.items():
        metrics.update(profile_path(model, prompt, kw, pruned_limit, "pruned_" + prefix))
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}


def costliest_first(top_kernels: dict) -> list[tuple[str, list[float]]]:
    """A record's top kernels, costliest first (a record's keys come back from JSON in name order)."""
    return sorted(top_kernels.items(), key=lambda kv: -kv[1][0])


def profile_lines(metrics: dict) -> list[str]:
    """The record as a reader's lines (`sentinel profile`)."""
    lines = [f"limit {metrics['limit_decode_tokens_per_s']:.0f} tok/s ({metrics['weights_read_per_token_mb']:.0f} MiB "
             f"a step at {metrics['read_bandwidth_peak_gb_s']:.0f} GB/s)"]
    if "fused_unavailable" in metrics:
        lines.append(f"fused: not run ({metrics['fused_unavailable']})")
    for prefix in ("graph_", "fused_", "pruned_graph_", "pruned_fused_"):
        if f"{prefix}wall_ms_per_step" not in metrics:
            continue
        m = lambda k: metrics[prefix + k]  # noqa: E731
        share, busy, gpu_step = (metrics.get(prefix + k) for k in ("share_of_limit", "busy_ms_per_step", "gpu_step_ms"))
        # A record from before the busy time was the kernels' union has only their sum (its busy_share was the sum's);
        # one from before gpu_step_ms took the share of a noisier step (at times above 100%): neither is shown.
        lines.append(f"{prefix.rstrip('_').replace('_', ' ')}: {m('wall_ms_per_step'):.3f} ms a step "
                     f"({1e3 / m('wall_ms_per_step'):.0f} tok/s{f', {share:.0%} of the limit' if share else ''}), "
                     f"{m('kernels_per_step'):.0f} kernels summing {m('kernel_ms_per_step'):.3f} ms"
                     + ("" if busy is None else f", GPU busy {busy:.3f} ms"
                        + (f" of a {gpu_step:.3f} ms step on the profiled timeline ({m('busy_share'):.0%})"
                           if gpu_step else "")))
        if prefix + "call_capture_ms" in metrics:
            steps = m("call_capture_ms") / m("wall_ms_per_step")
            lines.append(f"    per generate call: the prefill {m('call_prefill_ms'):.1f} ms, then the first step's warm-up "
                         f"and capture {m('call_capture_ms'):.1f} ms (as long as {steps:.0f} steps)")
        lines += [f"    {us:8.1f} µs  {n:5.1f}×  {name}" for name, (us, n) in costliest_first(m("top_kernels"))]
    return lines
