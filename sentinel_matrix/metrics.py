"""Every metric a record may hold, defined once: its JSON kind, unit, which direction is better, how far it may move
between two runs before `python -m sentinel_reports diff` lists it, and how it prints. The checks write these keys;
records validation (sentinel_reports/load.py), the report, the diff and the command line read them here. Torch-free.

Bench keys (timed paths × prefill/decode × spread suffixes, ratios) follow the patterns of sentinel_matrix/bench_metrics.py
and are resolved from them by `metric(key)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .bench_metrics import BEST_KEYS, BEST_RATIOS, SPREAD_SUFFIXES

NUMBER, TEXT, OBJECT, LIST, FLAG, NULL = (int, float), (str,), (dict,), (list,), (bool,), (type(None),)
POINTS = "points"  # [[x, y], ...]
CURVES = "curves"  # {name: [[x, y], ...]}
ROWS = "rows"  # [[number, ...], ...], every row as long as the first

HIGHER, LOWER = "higher", "lower"  # which way is better; "" where neither is
DIFF_RELATIVE = 0.10  # a number moves when it changes by more than this fraction of its old value, unless its own
                      # `diff_absolute` says otherwise (tiny parity numbers jump by large factors far inside tolerance)


@dataclass(frozen=True)
class Metric:
    key: str
    kind: tuple | str = NUMBER + NULL
    unit: str = ""
    better: str = ""  # HIGHER, LOWER or ""
    diff_absolute: float | None = None  # moved past this absolute change (None: DIFF_RELATIVE of the old value)
    diff_ignored: bool = False  # describes a measurement (a spread, a sample text): never a change on its own
    hf_side: str = ""  # what it measures of HF alone (its eager vs SDPA, its padding, ...): a change of HF, not ours
    fmt: str | Callable = "{:.3g}"

    def format(self, value) -> str:
        if value is None:
            return "—"
        if callable(self.fmt):
            return self.fmt(value)
        try:
            return self.fmt.format(value)
        except (TypeError, ValueError):
            return str(value)


def _mutation_score(score) -> str:
    if not isinstance(score, dict):
        return str(score)
    return f"caught {score.get('caught', 0)}/{score.get('catchable', score.get('above_noise', 0))}"


def _prunable(fractions) -> str:
    return "prunable " + ", ".join(f"{method} {fraction:.0%}" for method, fraction in fractions.items())


def _per_kind(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{kind} {v:.2g}" for kind, v in value.items())
    return f"{value:.2g}"


def _table(*metrics: Metric) -> dict[str, Metric]:
    return {m.key: m for m in metrics}


def _text(*keys: str) -> list[Metric]:
    return [Metric(k, TEXT + NULL, fmt="{}") for k in keys]


def _flag(*keys: str) -> list[Metric]:
    return [Metric(k, FLAG + NULL, fmt="{}") for k in keys]


def _obj(*keys: str) -> list[Metric]:
    return [Metric(k, OBJECT, diff_ignored=True, fmt="{}") for k in keys]


def _list(*keys: str) -> list[Metric]:
    return [Metric(k, LIST, diff_ignored=True, fmt="{}") for k in keys]


def _logprob(*keys: str) -> list[Metric]:
    return [Metric(k, unit="nats", better=LOWER, diff_absolute=1e-4, fmt="{:.1e}") for k in keys]


METRICS = _table(
    # What produced the row
    *_text("adaptive_path", "attn_baseline", "grade", "ppl_text", "pruning", "fp32_reference",
           "baseline_sdpa_unavailable", "baseline_compiled_unavailable", "baseline_compiled_attn", "throughput_method"),
    Metric("sample_output", TEXT + NULL, diff_ignored=True, fmt="{}"),
    # load
    Metric("load_s", unit="s", better=LOWER, fmt="{:.2f} s"), Metric("baseline_load_s", unit="s", fmt="{:.2f} s"),
    Metric("load_ratio", better=LOWER, fmt="{:.2f}"),
    Metric("peak_mem_mb", unit="MiB", better=LOWER, diff_absolute=16.0, fmt="{:.0f} MiB"),
    Metric("baseline_peak_mem_mb", unit="MiB", diff_absolute=16.0, fmt="{:.0f} MiB"),
    Metric("params_hf", fmt="{:,}"), Metric("params_adaptive", fmt="{:,}"), Metric("gates", fmt="{}"),
    # a number; an encoder-decoder's is one per kind of attention
    Metric("first_and_last_layer_gate_effect", NUMBER + OBJECT + NULL, unit="nats", fmt=_per_kind),
    *_obj("placement", "baseline_placement", "gates_by_kind", "zero_gate_vs_hf_zeroed", "pruned_heads", "pruned_heads_per_kind"),
    Metric("baseline_padded_vs_alone_beyond_resolution_by_path", OBJECT, diff_ignored=True, fmt="{}",
           hf_side="HF's own padding effect, per cache path"),
    *_text("padding_side", "source_padding", "prefill", "graph_unavailable", "fused_unavailable"),
    Metric("pruned_vs_gated_max_diff_fp64", unit="nats", better=LOWER, diff_absolute=1e-9, fmt="{:.1e}"),
    # infer
    *_logprob("padded_vs_alone_max_diff", "cache_vs_full_max_diff", "hf_call_cache_vs_full_max_diff",
              "padded_vs_alone_beyond_resolution", "cache_vs_full_beyond_resolution",
              "hf_call_cache_vs_full_beyond_resolution"),
    Metric("baseline_padded_vs_alone_beyond_resolution", unit="nats", diff_absolute=1e-4, fmt="{:.1e}",
           hf_side="HF's own padding effect"),
    Metric("baseline_cache_vs_full_max_diff", unit="nats", diff_absolute=1e-4, fmt="{:.1e}",
           hf_side="HF's cached decoding vs its full forward"),
    Metric("greedy_cache_agreement", better=HIGHER, diff_absolute=0.01, fmt="{:.0%}"),
    # quality
    Metric("baseline_attention_paths_diff", unit="nats", diff_absolute=1e-4, fmt="{:.1e}", hf_side="HF eager vs SDPA"),
    Metric("baseline_error_vs_fp32_top32", unit="nats", diff_absolute=1e-4, fmt="{:.1e}",
           hf_side="HF's half-precision error to its fp32"),
    *_logprob("max_logprob_diff", "max_logprob_diff_top32", "hf_call_max_logprob_diff",
              "adaptive_error_vs_fp32_top32", "error_beyond_baseline_rounding_top32",
              "widened_max_logprob_diff", "widened_attention_paths_diff"),
    Metric("kl", unit="nats", better=LOWER, diff_absolute=1e-5, fmt="{:.1e}"),
    Metric("kl_vs_fp32", unit="nats", better=LOWER, fmt="{:.1e}"),
    Metric("baseline_kl_vs_fp32", unit="nats", fmt="{:.1e}", hf_side="HF's half-precision KL to its fp32"),
    Metric("kl_ratio", better=LOWER, fmt="{:.2f}×"), Metric("error_ratio", better=LOWER, fmt="{:.2f}×"),
    Metric("rounding_excess", better=LOWER, fmt="{:.2f}×"), Metric("rounding_excess_q99", better=LOWER, fmt="{:.2f}×"),
    Metric("top1_agreement", better=HIGHER, diff_absolute=0.01, fmt="{:.1%}"),
    Metric("greedy_agreement", better=HIGHER, diff_absolute=0.01, fmt="{:.0%}"),
    Metric("first_greedy_divergence", diff_ignored=True, fmt="{}"),
    Metric("ppl", better=LOWER, fmt="{:.2f}"), Metric("baseline_ppl", fmt="{:.2f}", hf_side="HF's perplexity"),
    Metric("ppl_ratio", better=LOWER, diff_absolute=1e-4, fmt="{:.6f}"), Metric("ppl_tokens", fmt="{}"),
    *_flag("greedy_identical", "rank_check", "above_noise", "catchable", "caught"),
    *_obj("half_precision"),
    Metric("reference_stats", OBJECT, diff_ignored=True, fmt="{}", hf_side="HF's fp32 next-token distribution"),
    # mutation
    *_obj("mutants"), Metric("mutation_score", OBJECT, diff_ignored=True, fmt=_mutation_score), Metric("bar", unit="nats", fmt="{:.1e}"), Metric("noise", unit="nats", fmt="{:.1e}"),
    # prune
    Metric("ppl_by_fraction", CURVES, diff_ignored=True), Metric("prunable_fraction", OBJECT, diff_ignored=True, fmt=_prunable), Metric("prunable_within", fmt="{:.0%}"),
    *_logprob("pruned_vs_gated_max_diff"), Metric("pruned_vs_gated_limit", unit="nats", fmt="{:.0e}"),
    Metric("calibration_tokens", fmt="{}"), Metric("heldout_tokens", fmt="{}"), Metric("heads", fmt="{}"),
    *_list("hf_cache_evicted", "batch_sizes", "prefill_batch_sizes", "throughput_columns", "random_seeds",
           *(name + BEST_KEYS for name in BEST_RATIOS)),
    Metric("ppl_random_spread", ROWS, diff_ignored=True), Metric("throughput_by_fraction", ROWS, diff_ignored=True),
    Metric("pruning_curve", POINTS, diff_ignored=True),
    *(Metric(prefix + "top_kernels", OBJECT, diff_ignored=True)  # the profile check's {name: [µs, launches]} per step
      for prefix in ("graph_", "fused_", "pruned_graph_", "pruned_fused_")),
)


def metric(key: str) -> Metric:
    """The key's definition; a bench key not listed by name takes its pattern's (sentinel_matrix/bench_metrics.py), and any
    other key is a plain number."""
    if key in METRICS:
        return METRICS[key]
    if key.endswith(SPREAD_SUFFIXES):
        return Metric(key, diff_ignored=True)
    if key.endswith("_ms"):
        return Metric(key, unit="ms", better=LOWER, fmt="{:.1f} ms")
    if key.endswith("_tokens_per_s"):
        return Metric(key, unit="tok/s", better=HIGHER, fmt="{:.0f} tok/s")
    if key.endswith("_gb_s"):
        return Metric(key, unit="GB/s", better=HIGHER, fmt="{:.0f} GB/s")
    if key.endswith(("_ratio", "_share_of_limit")):
        return Metric(key, better=HIGHER, fmt="{:.2f}")  # oriented so that > 1 means the adaptive model is faster
    return Metric(key)


def kind(key: str):
    return metric(key).kind


def hf_side_quantities(metrics: dict) -> dict[str, float]:
    """What a record measured of HF alone, as numbers: label -> value (a quantity kept as an object, such as HF's
    fp32 distribution statistics, gives one number per field). A change between two releases here is HF's."""
    out = {}
    for key, value in metrics.items():
        label = metric(key).hf_side
        if not label:
            continue
        if isinstance(value, dict):
            out.update({f"{label}: {field}": v for field, v in value.items() if isinstance(v, (int, float))})
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[label] = value
    return out


def hf_side_moved(label: str, old: float, new: float) -> bool:
    """Past the threshold of the metric the label names (a field of an object: DIFF_RELATIVE of its old value)."""
    key = next((k for k, m in METRICS.items() if m.hf_side and m.hf_side == label), None)
    if key is not None and METRICS[key].diff_absolute is not None:
        return abs(new - old) > METRICS[key].diff_absolute
    return abs(new - old) > DIFF_RELATIVE * max(abs(old), 1e-12)
