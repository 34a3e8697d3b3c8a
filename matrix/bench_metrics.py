"""The bench check's spread metrics, named in one place: matrix/bench.py writes them and the report
(reports/render.py, reports/diff.py) reads them. Free of torch, so the report imports it cheaply.

Every timed key K (prefill_ms, prefill_b8_ms, decode_tokens_per_s, decode_b8_tokens_per_s, graph_…,
compiled_…, each side's: `baseline_` for HF, `pruned_` for the pruned adaptive model) is recorded as
  K             the median over all its timed rounds, in K's unit
  K_iqr         p75 - p25 over those rounds (inclusive quartiles), in K's unit
  K_rounds      how many timed rounds (warm-up not counted)
The adaptive and HF sides are timed in interleaved repeats (adaptive, HF; HF, adaptive; ...), so slow
drift (clock, heat, other load) falls on both. Each ratio R of RATIOS is recorded as
  R_ratio           the median over the repeats of each repeat's ratio of medians
  R_ratio_lo, _hi   the lowest and the highest repeat's ratio; a spread covering 1.0 is noise
Records from before the repeats carry K alone; the report shows their ratio with no spread.
"""

from __future__ import annotations

IQR, ROUNDS = "_iqr", "_rounds"
RATIO, RATIO_LO, RATIO_HI = "_ratio", "_ratio_lo", "_ratio_hi"
SPREAD_SUFFIXES = (IQR, ROUNDS, RATIO_LO, RATIO_HI)

# ratio name -> (numerator, denominator): adaptive over HF, oriented so that > 1 means the adaptive model
# is faster (prefill latency: HF's over ours; decode throughput: ours over HF's).
RATIOS = {
    "prefill": ("baseline_prefill_ms", "prefill_ms"),
    "prefill_b8": ("baseline_prefill_b8_ms", "prefill_b8_ms"),
    "decode": ("decode_tokens_per_s", "baseline_decode_tokens_per_s"),
    "decode_b8": ("decode_b8_tokens_per_s", "baseline_decode_b8_tokens_per_s"),
}
