"""The bench check's keys and their spread, named in one place: sentinel_matrix/bench.py writes them and the report
(sentinel_reports/render.py, sentinel_reports/diff.py) reads them. Free of torch, so the report imports it cheaply.

Timed paths, each a key prefix (K below is prefill_ms, prefill_b8_ms, decode_tokens_per_s or
decode_b8_tokens_per_s; decode-only paths have the decode keys alone):
  (none)                 the adaptive model, eager (dynamic KV cache)
  graph_                 the adaptive model's CUDA-graph decode (CUDA, native path; decode keys)
  compiled_              the adaptive model's torch.compile'd step inside the graph (CUDA with
                         --bench-compiled; decode keys)
  fused_                 the adaptive model's fused decode step (Triton kernels, sentinel_core/fused.py) inside
                         the graph (CUDA, half precision, batch 1; decode key); fused_unavailable says why not
  baseline_              HF eager attention (attn_implementation="eager"; records before the SDPA
                         baseline loaded HF's default, which `attn_baseline` names)
  baseline_sdpa_         HF with attn_implementation="sdpa" (HF's default where the class supports it)
  baseline_compiled_     HF `generate(..., cache_implementation="static")`, whose decode step transformers
                         compiles by itself on CUDA (on CPU only with --bench-compiled; decode keys)
  pruned_                the adaptive model with PRUNE_FRACTION of its heads removed (eager, graph_, fused_)
Every timed key K is recorded as
  K             the median over all its timed rounds, in K's unit
  K_iqr         p75 - p25 over those rounds (inclusive quartiles), in K's unit
  K_rounds      how many timed rounds (warm-up not counted)
All paths of a key are timed in interleaved repeats (adaptive, HF; HF, adaptive; ...), so slow drift
(clock, heat, other load) falls on all. Each ratio R of RATIOS and BEST_RATIOS is recorded as
  R_ratio           the median over the repeats of each repeat's ratio of medians
  R_ratio_lo, _hi   the lowest and the highest repeat's ratio; a spread covering 1.0 is noise
Records from before the repeats carry K alone; the report shows their ratio with no spread.
A BEST_RATIOS ratio compares the fastest adaptive path with the fastest HF path (each chosen by its
median over all repeats; `R_keys` names the two keys, [adaptive, HF]).
A baseline that could not run says why instead of its keys:
  baseline_sdpa_unavailable       HF's reason (the class has no SDPA attention, e.g. bloom)
  baseline_compiled_unavailable   CPU without --bench-compiled, no static cache, or the error of its compile
Around the timed keys: baseline_sdpa_load_s; baseline_compiled_first_call_s and _b8_s (the first
generate, which compiles); baseline_compiled_attn (the attention the compiled HF model runs).
The limit, measured in the same process:
  read_bandwidth_gb_s (+ _iqr, _rounds)  a read-only kernel (a sum over 2 GiB on CUDA, 256 MiB on CPU), 1e9 B/s
  read_bandwidth_peak_gb_s               its fastest round: what the device has shown it can read
  weights_read_per_token_mb              MiB a decode step reads (every weight but the embedding tables)
  limit_decode_tokens_per_s              read_bandwidth_peak / weights_read_per_token: batch-1 decode's ceiling
                                         (records before the peak was kept: the median bandwidth)
  decode_share_of_limit                  the fastest adaptive batch-1 decode over that ceiling
  baseline_decode_share_of_limit         the fastest HF batch-1 decode over that ceiling
"""

from __future__ import annotations

IQR, ROUNDS = "_iqr", "_rounds"
RATIO, RATIO_LO, RATIO_HI = "_ratio", "_ratio_lo", "_ratio_hi"
BEST_KEYS = "_keys"
SPREAD_SUFFIXES = (IQR, ROUNDS, RATIO_LO, RATIO_HI)

# ratio name -> (numerator, denominator): adaptive over HF, oriented so that > 1 means the adaptive model
# is faster (prefill latency: HF's over ours; decode throughput: ours over HF's).
RATIOS = {
    "prefill": ("baseline_prefill_ms", "prefill_ms"),
    "prefill_b8": ("baseline_prefill_b8_ms", "prefill_b8_ms"),
    "decode": ("decode_tokens_per_s", "baseline_decode_tokens_per_s"),
    "decode_b8": ("decode_b8_tokens_per_s", "baseline_decode_b8_tokens_per_s"),
}

ADAPTIVE_DECODE_PATHS = ("", "graph_", "compiled_", "fused_")
HF_PATHS = ("baseline_", "baseline_sdpa_", "baseline_compiled_")
HF_PATH_NAMES = {"baseline_": "eager", "baseline_sdpa_": "sdpa", "baseline_compiled_": "compiled"}
ADAPTIVE_PATH_NAMES = {"": "eager", "graph_": "graph", "compiled_": "compiled", "fused_": "fused"}

# ratio name -> (the adaptive keys, the HF keys, whether higher is faster): the fastest of each side that
# was timed, oriented as RATIOS (> 1: the adaptive model's best path is faster than HF's best).
BEST_RATIOS = {
    "prefill_vs_best": (("prefill_ms",), ("baseline_prefill_ms", "baseline_sdpa_prefill_ms"), False),
    "prefill_b8_vs_best": (("prefill_b8_ms",), ("baseline_prefill_b8_ms", "baseline_sdpa_prefill_b8_ms"), False),
    "decode_vs_best": (tuple(p + "decode_tokens_per_s" for p in ADAPTIVE_DECODE_PATHS),
                       tuple(p + "decode_tokens_per_s" for p in HF_PATHS), True),
    "decode_b8_vs_best": (tuple(p + "decode_b8_tokens_per_s" for p in ADAPTIVE_DECODE_PATHS),
                          tuple(p + "decode_b8_tokens_per_s" for p in HF_PATHS), True),
}


def best_key(metrics: dict, keys, higher: bool) -> str | None:
    """The fastest of `keys` that `metrics` holds a number for (None: none)."""
    present = [k for k in keys if isinstance(metrics.get(k), (int, float)) and metrics[k] > 0]
    if not present:
        return None
    return (max if higher else min)(present, key=lambda k: metrics[k])


def path_name(key: str) -> str:
    """A timed key's path in words: eager, graph, compiled (adaptive) or eager, sdpa, compiled (HF)."""
    for prefix in sorted(HF_PATHS, key=len, reverse=True):
        if key.startswith(prefix):
            return HF_PATH_NAMES[prefix]
    return next(name for prefix, name in sorted(ADAPTIVE_PATH_NAMES.items(), key=lambda kv: -len(kv[0]))
                if key.startswith(prefix))


def limit_tokens_per_s(read_bandwidth_gb_s: float, weights_read_per_token_mb: float) -> float:
    """Batch-1 decode's ceiling: bytes the device reads per second over bytes one decode step must read."""
    return read_bandwidth_gb_s * 1e9 / (weights_read_per_token_mb * 2**20)
