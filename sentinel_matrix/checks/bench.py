"""The bench check: the adaptive model and every HF baseline a user would pick (eager, SDPA, static cache +
torch.compile) timed side by side, same process, device and dtype, and the device's read bandwidth, which
bounds batch-1 decode. Timed functions synchronize the GPU inside; warm-up runs are not counted. Every
timed number comes with its spread, and every adaptive/HF ratio with its spread over interleaved repeats
(names: sentinel_matrix/bench_metrics.py)."""

from __future__ import annotations

import gc
import time

import torch

from sentinel_core import load_adaptive_model, load_baseline_model
from sentinel_core.names import NATIVE

from ..bench_metrics import (ADAPTIVE_DECODE_PATHS, BEST_KEYS, BEST_RATIOS, HF_PATHS, IQR, RATIO, RATIO_HI, RATIO_LO,
                            RATIOS, ROUNDS, best_key, limit_tokens_per_s)
from ..evidence import TRACER
from ..timing import peak_working_mb, percentile, spread, synchronize, time_runs, timed_load
from .pair import CheckFailed

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
# The read-bandwidth kernel's buffer: far beyond any cache (an H200's L2 is 50 MB), so a sum over it reads
# device memory; smaller on a CPU, where a few hundred MiB already leave the caches.
READ_BUFFER_MIB = {"cuda": 2048, "cpu": 256}
COMPILED_HF_CPU_SKIP = ("not run: HF's compiled decode runs on CUDA, or on CPU with --bench-compiled "
                        "(compiling takes minutes)")


def param_mb(model) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20


def hf_weights_read_per_token_mb(model) -> float:
    """weights_read_per_token_mb of an HF model: every embedding table is read a row at a time, except one
    that is also the output projection (a tied LM head, read whole)."""
    head = model.get_output_embeddings()
    head_weight = head.weight if head is not None else None
    tables = {id(m.weight): m.weight for m in model.modules()
              if isinstance(m, torch.nn.Embedding) and m.weight is not head_weight}
    return param_mb(model) - sum(t.numel() * t.element_size() for t in tables.values()) / 2**20


def weights_read_per_token_mb(model) -> float:
    """What one decode step must read: every weight except embedding tables, of which it reads one row
    (a tied input embedding is still read whole, as the LM head)."""
    tables = [model.pos_embed.weight] if hasattr(model, "pos_embed") else []
    if model.embed.weight is not model.lm_head.weight:
        tables.append(model.embed.weight)
    return param_mb(model) - sum(t.numel() * t.element_size() for t in tables) / 2**20


class Side:
    """One model's timed calls (prefill latency, decode throughput at each batch size) and memory."""

    def __init__(self, model, device, vocab, max_positions, adaptive: bool, rounds: int, decode_kw: dict | None = None,
                 decode_only: bool = False, batches: tuple[int, ...] = BATCHES):
        self.model, self.device, self.adaptive, self.rounds = model, device, adaptive, rounds
        self.batches = batches  # the decode batch sizes this path takes (fused: one sequence)
        # decode_kw: the path's generate arguments (cuda_graph=True, cache_implementation="static", ...);
        # decode_only: a path that only decoding takes (graph, compiled), so it times no prefill.
        self.decode_kw, self.decode_only = decode_kw or {}, decode_only
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
        kw = {**self.decode_kw, **kw}
        if self.adaptive:
            return self.model.generate(ids, max_new_tokens=self.new_tokens, eos_token_id=[], **kw)
        # use_cache spelled out: some configs default it off (MptConfig), and the adaptive side always caches.
        return self.model.generate(ids, max_new_tokens=self.new_tokens, min_new_tokens=self.new_tokens,
                                   do_sample=False, eos_token_id=None, pad_token_id=0, use_cache=True, **kw)

    def timed(self) -> dict:
        """Timed key -> (the call, seconds -> the key's unit, rounds per repeat)."""
        calls = {}
        for b in () if self.decode_only else PREFILL_BATCHES:
            key = "prefill_ms" if b == 1 else f"prefill_b{b}_ms"
            calls[key] = (lambda b=b: self.prefill(b), lambda s: 1e3 * s, self.rounds)
        for b in self.batches:
            key = "decode_tokens_per_s" if b == 1 else f"decode_b{b}_tokens_per_s"
            calls[key] = (lambda b=b: self.decode(b), lambda s, b=b: b * self.new_tokens / s, 1)
        return calls

    def peak_mem_mb(self) -> float:
        return param_mb(self.model) + peak_working_mb(lambda: self.decode(max(BATCHES)), self.device)


def measure(sides: dict[str, Side], repeats: int | None = None) -> dict:
    """Every timed key of every side (metric prefix -> Side), the sides interleaved: each repeat times
    the key on every side that has it in turn, in alternating order. Each key's median, IQR and rounds;
    each ratio of RATIOS whose two keys were timed, and each of BEST_RATIOS with keys on both sides, with
    its spread over the repeats."""
    repeats = repeats or REPEATS
    calls = {prefix: side.timed() for prefix, side in sides.items()}
    per_repeat: dict[str, list[list[float]]] = {}
    for key in dict.fromkeys(k for timed in calls.values() for k in timed):
        order = [(prefix, side) for prefix, side in sides.items() if key in calls[prefix]]
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
            out[name.removesuffix("_ms") + "_p90_ms"] = percentile(pooled, 90)
    for ratio, (num, den) in RATIOS.items():
        if num in per_repeat and den in per_repeat:
            ratios = [percentile(a, 50) / percentile(b, 50) for a, b in zip(per_repeat[num], per_repeat[den])]
            out.update(ratio_spread(ratio, ratios))
    for ratio, (ours, theirs, higher) in BEST_RATIOS.items():
        num, den = best_key(out, [k for k in ours if k in per_repeat], higher), \
            best_key(out, [k for k in theirs if k in per_repeat], higher)
        if num and den:
            if not higher:
                num, den = den, num  # latency: HF's over ours
            ratios = [percentile(a, 50) / percentile(b, 50) for a, b in zip(per_repeat[num], per_repeat[den])]
            out.update(ratio_spread(ratio, ratios))
            out[ratio + BEST_KEYS] = [num, den] if higher else [den, num]
    return out


def ratio_spread(ratio: str, ratios: list[float]) -> dict:
    return {ratio + RATIO: percentile(ratios, 50), ratio + RATIO_LO: min(ratios), ratio + RATIO_HI: max(ratios)}


def read_bandwidth(device: str, mib: int | None = None, rounds: int | None = None) -> dict:
    """The device's read bandwidth in 1e9 B/s, with its spread: a sum over a buffer far beyond the caches
    (a read-only kernel; its one-number result writes nothing worth counting), several sums per round on
    CUDA so the synchronisation is a small part of a round."""
    mib = mib or READ_BUFFER_MIB[device]
    buffer = torch.ones(mib * 2**20 // 4, dtype=torch.float32, device=device)
    sums = 8 if device == "cuda" else 1
    rounds = rounds or (10 if device == "cuda" else 5)
    runs = time_runs(lambda: [buffer.sum() for _ in range(sums)], device, rounds=rounds, warmup=2)
    rates = [sums * mib * 2**20 / t / 1e9 for t in runs]
    # The fastest round is what the device has shown it can read: a ceiling is set by it, not by the median.
    return {**spread("read_bandwidth_gb_s", rates), "read_bandwidth_peak_gb_s": max(rates)}


def limit_metrics(metrics: dict) -> dict:
    """The ceiling of batch-1 decode on this device (its read bandwidth over the bytes one step reads) and
    the share of it that the fastest adaptive path and the fastest HF path reach."""
    bandwidth = metrics.get("read_bandwidth_peak_gb_s") or metrics.get("read_bandwidth_gb_s")
    if not bandwidth or not metrics.get("weights_read_per_token_mb"):
        return {}
    limit = limit_tokens_per_s(bandwidth, metrics["weights_read_per_token_mb"])
    out = {"limit_decode_tokens_per_s": limit}
    for name, paths in (("decode_share_of_limit", ADAPTIVE_DECODE_PATHS), ("baseline_decode_share_of_limit", HF_PATHS)):
        key = best_key(metrics, [p + "decode_tokens_per_s" for p in paths], higher=True)
        if key:
            out[name] = metrics[key] / limit
    return out


def first_call_s(side: Side, batch: int):
    """(tokens, seconds) of a path's first generate: for a compiled path, its compile time."""
    synchronize(side.device)
    start = time.perf_counter()
    tokens = side.decode(batch)
    synchronize(side.device)
    return tokens, time.perf_counter() - start


def no_sdpa_reason(folder) -> str | None:
    """Why the checkpoint's HF class has no SDPA attention (bloom, gpt_neo, mpt in transformers 5.x), read from
    the class before loading; None where it has one, or where the class cannot be told (the load then says)."""
    try:
        import transformers
        from transformers import AutoConfig, AutoModelForCausalLM

        cls = AutoModelForCausalLM._model_mapping[type(AutoConfig.from_pretrained(folder))]
    except Exception:  # a GGUF file, a config transformers cannot read: the load itself answers
        return None
    if getattr(cls, "_supports_sdpa", True) is False:
        return f"{cls.__name__} has no SDPA attention in transformers {transformers.__version__}"
    return None


def load_sdpa(folder, device, dtype):
    """(HF with SDPA attention, seconds, None) or (None, None, the reason it has none)."""
    reason = no_sdpa_reason(folder)
    if reason:
        return None, None, reason
    try:
        model, seconds, _ = timed_load(
            lambda: load_baseline_model(folder, device=device, dtype=dtype, attn_implementation="sdpa"), device)
    except Exception as exc:  # the loader words transformers' refusal as a checkpoint error
        if "scaled_dot_product_attention" not in str(exc):
            raise
        return None, None, " ".join(str(exc).split())[:300]
    return model, seconds, None


def compiled_hf_kwargs(hf, device, compiled_option: bool):
    """(the generate arguments of HF's static-cache compiled decode, None) or (None, why it is not timed).
    transformers compiles the decode step of `generate(cache_implementation="static")` by itself on CUDA; on
    CPU it is asked to (a CompileConfig for all devices), only with --bench-compiled."""
    if device != "cuda" and not compiled_option:
        return None, COMPILED_HF_CPU_SKIP
    if not type(hf)._supports_default_dynamic_cache():
        return None, f"{type(hf).__name__} takes no Cache instances, so no static cache to compile around"
    kw = {"cache_implementation": "static"}
    if device != "cuda":
        from transformers import CompileConfig

        config = CompileConfig(mode="default")
        config._compile_all_devices = True  # transformers' own switch for devices it does not compile on
        kw["compile_config"] = config
    return kw, None


def first_compiled(side: Side, batch: int, eager_tokens: torch.Tensor) -> dict:
    """The torch.compile'd decode step in a CUDA graph, first call: compile time, and how many of its tokens
    equal eager's (fused kernels round differently, so in half precision greedy paths can part). Its
    tokens/s are timed with the other paths (measure)."""
    suffix = "" if batch == 1 else f"_b{batch}"
    tokens, compile_s = first_call_s(side, batch)
    new = slice(DECODE_PROMPT, None)
    return {f"compiled_first_call{suffix}_s": compile_s,
            f"compiled_vs_eager_agreement{suffix}": (tokens[:, new] == eager_tokens[:, new]).float().mean().item()}


def fused_side(adaptive, device: str, dtype: str, max_positions: int, rounds: int) -> tuple[Side | None, str | None]:
    """(the fused decode path's Side, None) or (None, why it does not run: fp32, or a model it does not cover)."""
    if dtype == "float32":
        return None, "fp32 decodes on HF's arithmetic: the fused path is half precision's"
    from sentinel_core.fused import unsupported_reason

    reason = unsupported_reason(adaptive)
    if reason:
        return None, reason
    return Side(adaptive, device, adaptive.spec.vocab_size, max_positions, True, rounds, {"fused": True},
                decode_only=True, batches=(1,)), None


def prune_half(model) -> dict[int, list[int]]:
    """The first half of every layer's heads: in GQA whole groups go, so KV heads halve too."""
    heads = {layer: list(range(int(model.num_heads * PRUNE_FRACTION))) for layer in range(model.num_layers)}
    model.prune_heads(heads)
    return heads


ENCODER_DECODER_BENCH: dict = {}  # "run": the encoder-decoder's bench (seq2seq_bench.py registers it on import)


def run_bench(folder, device: str, dtype: str, benchmark=None, compiled: bool = False) -> dict:
    """One bench record. `compiled` (--bench-compiled): on CUDA also the adaptive model's compiled step; on
    CPU the HF compiled baseline, which CUDA always times. An encoder-decoder's: seq2seq_bench.py."""
    from sentinel_core.loader import load_config

    if getattr(load_config(str(folder)), "is_encoder_decoder", False):
        return ENCODER_DECODER_BENCH["run"](folder, device, dtype, benchmark, compiled)
    rounds = 3 if device == "cuda" else 2
    hf, hf_s, _ = timed_load(
        lambda: load_baseline_model(folder, device=device, dtype=dtype, attn_implementation="eager"), device)
    hf_sdpa, sdpa_s, sdpa_reason = load_sdpa(folder, device, dtype)
    adaptive, ad_s, _ = timed_load(lambda: load_adaptive_model(folder, device=device, dtype=dtype), device)
    spec = adaptive.spec
    max_positions = spec.max_positions or getattr(hf.config, "max_position_embeddings", 2048) or 2048
    ours = Side(adaptive, device, spec.vocab_size, max_positions, True, rounds)
    theirs = Side(hf, device, spec.vocab_size, max_positions, False, rounds)
    sides = {"": ours, "baseline_": theirs}
    metrics = {"load_s": ad_s, "baseline_load_s": hf_s, "prefill_tokens": ours.prefill_len,
               "prefill_batch_sizes": list(PREFILL_BATCHES),
               "decode_prompt_tokens": DECODE_PROMPT, "decode_new_tokens": ours.new_tokens,
               "batch_sizes": list(BATCHES), "attn_baseline": getattr(hf.config, "_attn_implementation", None)}
    if hf_sdpa is not None:
        sides["baseline_sdpa_"] = Side(hf_sdpa, device, spec.vocab_size, max_positions, False, rounds)
        metrics["baseline_sdpa_load_s"] = sdpa_s
    else:
        metrics["baseline_sdpa_unavailable"] = sdpa_reason
    native = adaptive.adaptive_path == NATIVE
    metrics["adaptive_path"] = adaptive.adaptive_path
    metrics["weights_mb"] = param_mb(adaptive) if native else param_mb(hf)
    metrics["weights_read_per_token_mb"] = weights_read_per_token_mb(adaptive) if native else hf_weights_read_per_token_mb(hf)

    if device == "cuda" and native:
        graph = Side(adaptive, device, spec.vocab_size, max_positions, True, rounds, {"cuda_graph": True}, decode_only=True)
        compiled_side = Side(adaptive, device, spec.vocab_size, max_positions, True, rounds, {"compiled": True},
                             decode_only=True)
        for b in BATCHES:
            graphed = graph.decode(b)
            # The graph replays the static-cache step: it must give exactly that step's tokens.
            if not torch.equal(graphed, ours.decode(b, static_cache=True)):
                raise CheckFailed(f"CUDA-graph decode (batch {b}) gave other tokens than eager static-cache decode")
            dynamic = ours.decode(b)[:, DECODE_PROMPT:]
            agreement = (graphed[:, DECODE_PROMPT:] == dynamic).float().mean().item()
            metrics["graph_vs_dynamic_agreement" + ("" if b == 1 else f"_b{b}")] = agreement
            if compiled:
                metrics.update(first_compiled(compiled_side, b, graphed))
        sides["graph_"] = graph
        if compiled:
            sides["compiled_"] = compiled_side
        fused, reason = fused_side(adaptive, device, dtype, max_positions, rounds)
        if fused is None:
            metrics["fused_unavailable"] = reason
        else:
            tokens = fused.decode(1)
            new = slice(DECODE_PROMPT, None)
            metrics["fused_vs_graph_agreement"] = (tokens[:, new] == graph.decode(1)[:, new]).float().mean().item()
            sides["fused_"] = fused
    elif device == "cpu" and dtype == "float32":
        # No graph on a CPU: the timed paths must still be right. In fp32 every decode path gives the same greedy
        # tokens: the static cache's, the dynamic cache's and HF eager's.
        for b in BATCHES:
            dynamic = ours.decode(b)
            suffix = "" if b == 1 else f"_b{b}"
            for name, tokens in (("static", ours.decode(b, static_cache=True)), ("hf", theirs.decode(b))):
                agreement = (tokens[:, DECODE_PROMPT:] == dynamic[:, DECODE_PROMPT:]).float().mean().item()
                metrics[f"{name}_vs_dynamic_agreement{suffix}"] = agreement
                if agreement < 1.0:
                    raise CheckFailed(f"{'static-cache' if name == 'static' else 'HF eager'} decode (batch {b}) gave "
                                      f"other greedy tokens than the adaptive dynamic-cache decode ({agreement:.0%} "
                                      f"agree) in fp32", metrics)

    # HF's compiled baseline runs the model a user gets by default: SDPA where the class has it.
    default_hf = hf_sdpa if hf_sdpa is not None else hf
    compiled_kw, reason = compiled_hf_kwargs(default_hf, device, compiled)
    hf_compiled = None if compiled_kw is None else Side(default_hf, device, spec.vocab_size, max_positions, False,
                                                        rounds, compiled_kw, decode_only=True)
    if hf_compiled is not None:
        try:
            for b in BATCHES:
                _, seconds = first_call_s(hf_compiled, b)
                metrics["baseline_compiled_first_call" + ("" if b == 1 else f"_b{b}") + "_s"] = seconds
        except Exception as exc:  # HF's compile failing is a finding about HF, not a failed bench row
            hf_compiled, reason = None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            metrics = {k: v for k, v in metrics.items() if not k.startswith("baseline_compiled_first_call")}
    if hf_compiled is not None:
        sides["baseline_compiled_"] = hf_compiled
        metrics["baseline_compiled_attn"] = getattr(default_hf.config, "_attn_implementation", None)
    else:
        metrics["baseline_compiled_unavailable"] = reason

    metrics.update(measure(sides))
    metrics.update(baseline_peak_mem_mb=theirs.peak_mem_mb(), peak_mem_mb=ours.peak_mem_mb())
    if benchmark is not None:  # pytest-benchmark's own statistics for the headline number
        with TRACER.paused():  # ours.decode(1) ran traced in measure()
            benchmark.pedantic(lambda: ours.decode(1), rounds=rounds, warmup_rounds=1)
        stats = benchmark.stats.stats
        metrics.update({"benchmark_decode_median_s": stats.median, "benchmark_decode_median_s" + IQR: stats.iqr,
                        "benchmark_decode_median_s" + ROUNDS: stats.rounds})

    sides_timed = set(sides)
    del hf, hf_sdpa, default_hf, theirs, hf_compiled, sides
    if compiled_kw is not None or "compiled_" in sides_timed:
        torch._dynamo.reset()  # compiled code and its graphs hold the models (and their memory pools)
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    metrics.update(read_bandwidth(device))
    metrics.update(limit_metrics(metrics))

    if not native:
        # The generic wrapper decodes with HF: no CUDA graph of its own, and no physical pruning.
        metrics["pruning"] = "not applicable: the generic gated wrapper cannot remove heads (gates only)"
        return rounded(metrics)

    prune_half(adaptive)
    pruned_sides = {"pruned_": ours}
    if device == "cuda":  # without launch overhead, where fewer weights to read can show
        pruned_sides["pruned_graph_"] = Side(adaptive, device, spec.vocab_size, max_positions, True, rounds,
                                             {"cuda_graph": True}, decode_only=True)
        if "fused_decode_tokens_per_s" in metrics:
            pruned_sides["pruned_fused_"] = fused_side(adaptive, device, dtype, max_positions, rounds)[0]
    pruned = measure(pruned_sides)
    metrics.update(pruned)
    metrics["pruned_fraction"] = PRUNE_FRACTION
    metrics["pruning_curve"] = [[0.0, metrics["decode_b8_tokens_per_s"]],
                                [PRUNE_FRACTION, pruned["pruned_decode_b8_tokens_per_s"]]]
    for key in ("decode_tokens_per_s", "decode_b8_tokens_per_s"):
        metrics[f"pruned_{key.removesuffix('_tokens_per_s')}_speedup"] = pruned[f"pruned_{key}"] / metrics[key]
    for key in ("prefill", "prefill_b8"):
        metrics[f"pruned_{key}_speedup"] = metrics[f"{key}_ms"] / pruned[f"pruned_{key}_ms"]
    if device == "cuda":
        for b in BATCHES:
            suffix = "" if b == 1 else f"_b{b}"
            metrics[f"pruned_graph_decode{suffix}_speedup"] = (metrics[f"pruned_graph_decode{suffix}_tokens_per_s"]
                                                               / metrics[f"graph_decode{suffix}_tokens_per_s"])
        if "pruned_fused_decode_tokens_per_s" in metrics:
            metrics["pruned_fused_decode_speedup"] = (metrics["pruned_fused_decode_tokens_per_s"]
                                                      / metrics["fused_decode_tokens_per_s"])
    return rounded(metrics)


def rounded(metrics: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}
