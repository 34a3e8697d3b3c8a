"""The bench check: the adaptive model and the HF baseline timed side by side, same process, device
and dtype. Timed functions synchronize the GPU inside; warm-up runs are not counted. Every timed
number comes with its spread, and every adaptive/HF ratio with its spread over interleaved repeats
(names: matrix/bench_metrics.py)."""

from __future__ import annotations

import gc
import statistics
import time

import torch

from sentinel_core import load_adaptive_model, load_baseline_model

from .bench_metrics import IQR, RATIO, RATIO_HI, RATIO_LO, RATIOS, ROUNDS
from .checks import CheckFailed, synchronize, timed_load

PREFILL_TOKENS = 512
# Batch 8 × 512 tokens is where prefill stops being bound by kernel launches on a GPU: FLOPs (and so
# pruned heads) show there.
PREFILL_BATCHES = (1, 8)
DECODE_PROMPT = 16
DECODE_TOKENS = 128
BATCHES = (1, 8)
PRUNE_FRACTION = 0.5
# Interleaved adaptive/HF repeats per timed key: each gives one ratio, so a ratio has a spread. Prefill
# is timed `rounds` times per repeat (cheap), decode once.
REPEATS = 3


def time_runs(fn, device: str, rounds: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t)
    return times


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def spread(key: str, values: list[float]) -> dict:
    """A timed key's median with its IQR and round count (matrix/bench_metrics.py)."""
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return {key: statistics.median(values), key + IQR: q3 - q1, key + ROUNDS: len(values)}


def decode_rate(key: str, runs: list[float], tokens: int) -> dict:
    """Decode seconds per call -> tokens/s with its spread."""
    return spread(key, [tokens / t for t in runs])


def param_mb(model) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20


def weights_read_per_token_mb(model) -> float:
    """What one decode step must read: every weight except embedding tables, of which it reads one row
    (a tied input embedding is still read whole, as the LM head)."""
    tables = [model.pos_embed.weight] if hasattr(model, "pos_embed") else []
    if model.embed.weight is not model.lm_head.weight:
        tables.append(model.embed.weight)
    return param_mb(model) - sum(t.numel() * t.element_size() for t in tables) / 2**20


def peak_working_mb(fn, device: str) -> float:
    """Memory a call needs beyond what is already allocated (CUDA max allocated; RSS growth on CPU)."""
    from .checks import PeakRSS

    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    with PeakRSS() as mem:
        fn()
    return mem.growth_mb


class Side:
    """One model's timed calls (prefill latency, decode throughput at each batch size) and memory."""

    def __init__(self, model, device, vocab, max_positions, adaptive: bool, rounds: int):
        self.model, self.device, self.adaptive, self.rounds = model, device, adaptive, rounds
        g = torch.Generator().manual_seed(0)
        self.prefill_len = min(PREFILL_TOKENS, max_positions)
        self.new_tokens = min(DECODE_TOKENS, max_positions - DECODE_PROMPT)
        self.prefill_ids = {b: torch.randint(3, vocab, (b, self.prefill_len), generator=g).to(device)
                            for b in PREFILL_BATCHES}
        self.prompts = {b: torch.randint(3, vocab, (b, DECODE_PROMPT), generator=g).to(device) for b in BATCHES}

    @torch.no_grad()
    def prefill(self, batch: int = 1):
        return self.model(self.prefill_ids[batch])

    @torch.no_grad()
    def decode(self, batch: int, **kw):
        ids = self.prompts[batch]
        if self.adaptive:
            return self.model.generate(ids, max_new_tokens=self.new_tokens, eos_token_id=[], **kw)
        # use_cache spelled out: some configs default it off (MptConfig), and the adaptive side always caches.
        return self.model.generate(ids, max_new_tokens=self.new_tokens, min_new_tokens=self.new_tokens,
                                   do_sample=False, eos_token_id=None, pad_token_id=0, use_cache=True)

    def timed(self) -> dict:
        """Timed key -> (the call, seconds -> the key's unit, rounds per repeat)."""
        calls = {}
        for b in PREFILL_BATCHES:
            key = "prefill_ms" if b == 1 else f"prefill_b{b}_ms"
            calls[key] = (lambda b=b: self.prefill(b), lambda s: 1e3 * s, self.rounds)
        for b in BATCHES:
            key = "decode_tokens_per_s" if b == 1 else f"decode_b{b}_tokens_per_s"
            calls[key] = (lambda b=b: self.decode(b), lambda s, b=b: b * self.new_tokens / s, 1)
        return calls

    def peak_mem_mb(self) -> float:
        return param_mb(self.model) + peak_working_mb(lambda: self.decode(max(BATCHES)), self.device)


def measure(sides: dict[str, Side], repeats: int = REPEATS) -> dict:
    """Every timed key of every side (metric prefix -> Side), the sides interleaved: each repeat times
    the key on every side in turn, in alternating order. Each key's median, IQR and rounds; each ratio
    of RATIOS whose two keys were timed, with its spread over the repeats."""
    calls = {prefix: side.timed() for prefix, side in sides.items()}
    order = list(sides.items())
    per_repeat: dict[str, list[list[float]]] = {}
    for key in next(iter(calls.values())):
        for repeat in range(repeats):
            for prefix, side in order if repeat % 2 == 0 else order[::-1]:
                call, unit, rounds = calls[prefix][key]
                runs = time_runs(call, side.device, rounds=rounds, warmup=1 if repeat == 0 else 0)
                per_repeat.setdefault(prefix + key, []).append([unit(t) for t in runs])
    out = {}
    for name, repeats_values in per_repeat.items():
        pooled = [v for values in repeats_values for v in values]
        out.update(spread(name, pooled))
        if name.endswith("_ms"):
            out[name.removesuffix("_ms") + "_p90_ms"] = percentile(pooled, 0.9)
    for ratio, (num, den) in RATIOS.items():
        if num in per_repeat and den in per_repeat:
            ratios = [statistics.median(a) / statistics.median(b) for a, b in zip(per_repeat[num], per_repeat[den])]
            out.update({ratio + RATIO: statistics.median(ratios), ratio + RATIO_LO: min(ratios),
                        ratio + RATIO_HI: max(ratios)})
    return out


def time_compiled(ours: Side, batch: int, eager_tokens: torch.Tensor, rounds: int) -> dict:
    """The torch.compile'd decode step in a CUDA graph: compile time, tokens/s, and how many of its tokens
    equal eager's (fused kernels round differently, so in half precision greedy paths can part)."""
    suffix = "" if batch == 1 else f"_b{batch}"
    start = time.perf_counter()
    tokens = ours.decode(batch, compiled=True)
    synchronize(ours.device)
    compile_s = time.perf_counter() - start
    runs = time_runs(lambda: ours.decode(batch, compiled=True), ours.device, rounds=rounds)
    new = slice(DECODE_PROMPT, None)
    return {**decode_rate(f"compiled_decode{suffix}_tokens_per_s", runs, batch * ours.new_tokens),
            f"compiled_first_call{suffix}_s": compile_s,
            f"compiled_vs_eager_agreement{suffix}": (tokens[:, new] == eager_tokens[:, new]).float().mean().item()}


def prune_half(model) -> dict[int, list[int]]:
    """The first half of every layer's heads: in GQA whole groups go, so KV heads halve too."""
    heads = {layer: list(range(int(model.num_heads * PRUNE_FRACTION))) for layer in range(model.num_layers)}
    model.prune_heads(heads)
    return heads


def run_bench(folder, device: str, dtype: str, benchmark=None, compiled: bool = False) -> dict:
    rounds = 3 if device == "cuda" else 2
    hf, hf_s, _ = timed_load(lambda: load_baseline_model(folder, device=device, dtype=dtype), device)
    adaptive, ad_s, _ = timed_load(lambda: load_adaptive_model(folder, device=device, dtype=dtype), device)
    spec = adaptive.spec
    max_positions = spec.max_positions or getattr(hf.config, "max_position_embeddings", 2048) or 2048
    ours = Side(adaptive, device, spec.vocab_size, max_positions, True, rounds)
    theirs = Side(hf, device, spec.vocab_size, max_positions, False, rounds)
    metrics = {"load_s": ad_s, "baseline_load_s": hf_s, "prefill_tokens": ours.prefill_len,
               "prefill_batch_sizes": list(PREFILL_BATCHES),
               "decode_prompt_tokens": DECODE_PROMPT, "decode_new_tokens": ours.new_tokens,
               "batch_sizes": list(BATCHES), "attn_baseline": getattr(hf.config, "_attn_implementation", None)}
    metrics.update(measure({"": ours, "baseline_": theirs}))
    metrics.update(baseline_peak_mem_mb=theirs.peak_mem_mb(), peak_mem_mb=ours.peak_mem_mb())
    if benchmark is not None:  # pytest-benchmark's own statistics for the headline number
        benchmark.pedantic(lambda: ours.decode(1), rounds=rounds, warmup_rounds=1)
        stats = benchmark.stats.stats
        metrics.update({"benchmark_decode_median_s": stats.median, "benchmark_decode_median_s" + IQR: stats.iqr,
                        "benchmark_decode_median_s" + ROUNDS: stats.rounds})

    metrics["adaptive_path"] = adaptive.adaptive_path
    if adaptive.adaptive_path != "native":
        # The generic wrapper decodes with HF: no CUDA graph of its own, and no physical pruning.
        metrics["pruning"] = "not applicable: the generic gated wrapper cannot remove heads (gates only)"
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}

    if device == "cuda":
        for b in BATCHES:
            graphed = ours.decode(b, cuda_graph=True)
            # The graph replays the static-cache step: it must give exactly that step's tokens.
            if not torch.equal(graphed, ours.decode(b, static_cache=True)):
                raise CheckFailed(f"CUDA-graph decode (batch {b}) gave other tokens than eager static-cache decode")
            dynamic = ours.decode(b)[:, DECODE_PROMPT:]
            agreement = (graphed[:, DECODE_PROMPT:] == dynamic).float().mean().item()
            metrics["graph_vs_dynamic_agreement" + ("" if b == 1 else f"_b{b}")] = agreement
            runs = time_runs(lambda b=b: ours.decode(b, cuda_graph=True), device, rounds=rounds)
            key = "graph_decode_tokens_per_s" if b == 1 else f"graph_decode_b{b}_tokens_per_s"
            metrics.update(decode_rate(key, runs, b * ours.new_tokens))
            if compiled:
                metrics.update(time_compiled(ours, b, graphed, rounds))
        metrics["weights_mb"] = param_mb(adaptive)
        metrics["weights_read_per_token_mb"] = weights_read_per_token_mb(adaptive)

    del hf, theirs
    gc.collect()
    prune_half(adaptive)
    pruned = measure({"pruned_": ours})
    metrics.update(pruned)
    metrics["pruned_fraction"] = PRUNE_FRACTION
    metrics["pruning_curve"] = [[0.0, metrics["decode_b8_tokens_per_s"]],
                                [PRUNE_FRACTION, pruned["pruned_decode_b8_tokens_per_s"]]]
    for key in ("decode_tokens_per_s", "decode_b8_tokens_per_s"):
        metrics[f"pruned_{key.removesuffix('_tokens_per_s')}_speedup"] = pruned[f"pruned_{key}"] / metrics[key]
    for key in ("prefill", "prefill_b8"):
        metrics[f"pruned_{key}_speedup"] = metrics[f"{key}_ms"] / pruned[f"pruned_{key}_ms"]
    if device == "cuda":  # without launch overhead, where fewer weights to read can show
        for b in BATCHES:
            runs = time_runs(lambda b=b: ours.decode(b, cuda_graph=True), device, rounds=rounds)
            suffix = "" if b == 1 else f"_b{b}"
            key = f"pruned_graph_decode{suffix}_tokens_per_s"
            metrics.update(decode_rate(key, runs, b * ours.new_tokens))
            unpruned = metrics[f"graph_decode{suffix}_tokens_per_s"]
            metrics[f"pruned_graph_decode{suffix}_speedup"] = metrics[key] / unpruned
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}
