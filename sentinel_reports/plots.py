"""The HTML report's figures, drawn with matplotlib as inline SVG (text kept as text, no scripts, no network).

Every figure has labelled axes with units; values that span decades use log scales; error plots draw the
bar a row is graded against; real geometries and tiny test models never share an axis; pruning curves get
one panel per model.
"""

from __future__ import annotations

import io
import math
import re

import markupsafe
import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sentinel_matrix import bench_metrics, grading  # noqa: E402
from sentinel_core.names import FAILED, PASSED, short_dtype  # noqa: E402

from . import status as rules  # noqa: E402
from . import render  # noqa: E402

ADAPTIVE, HF = "#3b6fb6", "#e0873a"
plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.titlesize": 10, "figure.dpi": 72,
                     "svg.hashsalt": "sentinel"})  # same records, same SVG


def _svg(fig) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buffer.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)  # RDF boilerplate
    return markupsafe.Markup(text[text.index("<svg"):])  # inline: no XML prologue or doctype; matplotlib escaped its text


def _where(r: dict) -> str:
    return f"{r['device']} {short_dtype(r['dtype'])}"


# Matplotlib's default font has no hourglass glyph: the figures spell out what the page's ⏳ means.
STALE_LABEL = "(stale) "


def _stale(r: dict) -> str:
    return "" if rules.is_current(r) else STALE_LABEL


def _short(name: str, n: int = 40) -> str:
    """A model id that fits n characters: the organisation goes first, then the end of the name."""
    if len(name) <= n:
        return name
    name = name.split("/", 1)[-1]
    return name if len(name) <= n else name[:n - 1] + "…"


def _log_ticks(axis) -> None:
    """A log axis with readable ticks, plain numbers: 1-2-5 per decade over a range of under two decades (one
    decade alone would show a single tick), powers of ten over a wider one."""
    low, high = sorted(axis.get_view_interval())
    narrow = low > 0 and math.log10(high / low) < 2
    axis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0) if narrow else (1.0,),
                                                        numticks=8))
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def decode_figure(title: str, rows: list[dict]) -> str:
    """Batch-1 decode tokens/s, adaptive beside HF (log scale), and their ratio with its spread over repeats."""
    # `baseline_` is HF eager; older records timed HF's default attention there (their attn_baseline says which).
    labels = [f"{_stale(r)}{_short(r['model'])} ({r['weights']}, {_where(r)})"
              + (f" [HF {a}]" if (a := r["metrics"].get("attn_baseline")) and a != "eager" else "") for r in rows]
    ours = [r["metrics"]["decode_tokens_per_s"] for r in rows]
    theirs = [r["metrics"].get("baseline_decode_tokens_per_s") or math.nan for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 1.5 + 0.32 * len(rows)), sharey=True,
                                      gridspec_kw={"width_ratios": [3, 2]})
    y = range(len(rows))
    left.barh([i - 0.2 for i in y], ours, height=0.4, color=ADAPTIVE, label="adaptive")
    left.barh([i + 0.2 for i in y], theirs, height=0.4, color=HF, label="Hugging Face (eager)")
    left.set_xscale("log")
    _log_ticks(left.xaxis)
    left.tick_params(axis="x", labelrotation=45)
    left.set_xlabel("decode tokens/s, batch 1\n(log scale; higher is faster)")
    left.set_yticks(list(y), labels)
    left.invert_yaxis()
    fig.suptitle(title)
    # above the axes, never over a bar
    left.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, fontsize=8, frameon=False)
    ratio = [r["metrics"].get("decode" + bench_metrics.RATIO) or (o / t if t == t and t else math.nan)
             for r, o, t in zip(rows, ours, theirs)]
    lo = [r["metrics"].get("decode" + bench_metrics.RATIO_LO, q) for r, q in zip(rows, ratio)]
    hi = [r["metrics"].get("decode" + bench_metrics.RATIO_HI, q) for r, q in zip(rows, ratio)]
    noise = [low <= 1.0 <= high for low, high in zip(lo, hi)]
    right.barh(list(y), ratio, height=0.5, color=["#bbbbbb" if n else ADAPTIVE for n in noise])
    right.errorbar(ratio, list(y), xerr=[[q - low for q, low in zip(ratio, lo)], [high - q for q, high in zip(ratio, hi)]],
                   fmt="none", ecolor="#222", capsize=2, linewidth=1)
    right.axvline(1.0, color="#888", linestyle="--", linewidth=1)
    right.set_xlabel("adaptive / HF decode speed (×)\ngrey: the spread over repeats covers 1.0 (noise)")
    fig.tight_layout()
    return _svg(fig)


def quality_figure(device: str, dtype: str, rows: list[dict]) -> str:
    """fp32: max |Δ log p| against HF (log scale) with its bar; half precision: the adaptive model's mean KL to
    HF fp32 as a multiple of HF's own (its worst input), with the Good bar."""
    rows = sorted(rows, key=lambda r: (r["model"].startswith("tiny/"), r["model"]))
    half = dtype != "float32"
    key = "kl_ratio" if half else "max_logprob_diff"
    rows = [r for r in rows if isinstance(r["metrics"].get(key), (int, float))]
    if not rows:
        return ""
    values = [max(r["metrics"][key], 1e-9) for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.22 * len(rows)))
    colors = ["#b64a3b" if r["outcome"] == FAILED else ADAPTIVE for r in rows]
    ax.barh(range(len(rows)), values, color=colors, height=0.6)
    bar = grading.KL_RATIO_GOOD if half else grading.tolerance(dtype).max_logprob_diff
    ax.axvline(bar, color="#b64a3b", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(rows)), [f"{_short(r['model'])} ({r['weights']})" for r in rows])
    ax.invert_yaxis()
    if half:
        ax.set_xlabel(f"mean KL to HF fp32, as a multiple of HF's own {dtype} KL (worst input)")
    else:
        ax.set_xscale("log")
        _log_ticks(ax.xaxis)
        ax.set_xlabel("max |Δ log p| against HF eager, whole vocabulary (nats, log scale)")
    # the bar named in the title, not in a legend that would cover bars
    ax.set_title(f"Quality against Hugging Face, {device} {short_dtype(dtype)} (red: failed)\n"
                 f"dashed: the Good bar {bar:g}" + ("" if half else " (or HF's own eager↔SDPA distance, if larger)"),
                 fontsize=9)
    fig.tight_layout()
    return _svg(fig)


def _fractions(ax, xs) -> None:
    """Every fraction measured gets its tick, and the end points' markers are not clipped by the axes."""
    xs = sorted(set(xs))
    ax.set_xticks(xs, [f"{x:.0%}" for x in xs], fontsize=7)
    ax.set_xlim(min(xs) - 0.03, max(xs) + 0.03)


def _panels(rows: list[dict], width: float, height: float):
    """A figure of one panel per row, three to a line: (figure, [(axes, row), ...])."""
    cols = min(3, len(rows))
    lines = math.ceil(len(rows) / cols)
    fig, axes = plt.subplots(lines, cols, figsize=(width * cols, height * lines), squeeze=False)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    return fig, list(zip(axes.flat, rows))


def _panel_title(ax, r: dict) -> None:
    ax.set_title(f"{_stale(r)}{_short(r['model'], 30)}\n{r['weights']}, {_where(r)}", fontsize=8)


def _finish(fig, title: str) -> str:
    fig.suptitle(title)
    fig.tight_layout()
    return _svg(fig)


def pruning_figure(rows: list[dict]) -> str:
    """Decode tokens/s against the fraction of heads pruned: one panel per model and device."""
    fig, panels = _panels(rows, 3.4, 2.6)
    for ax, r in panels:
        points = sorted(tuple(p) for p in r["metrics"]["pruning_curve"])
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=ADAPTIVE, clip_on=False)
        _panel_title(ax, r)
        _fractions(ax, [p[0] for p in points])
        ax.set_xlabel("fraction of heads pruned")
        ax.set_ylabel("decode tokens/s")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    return _finish(fig, "Pruning curves (one panel per model)")


METHOD_STYLE = {"gradient": ("#3b6fb6", "o"), "ablation": ("#2a9d5c", "s"), "magnitude": ("#8e5bb5", "^"),
                "random": ("#888888", "x")}


def head_pruning_figure(rows: list[dict]) -> str:
    """Held-out perplexity against the fraction of heads removed, one line per importance method, random with
    its seeds' range shaded: one panel per model (Michel et al. 2019, Figure 3)."""
    fig, panels = _panels(rows, 3.6, 2.9)
    for ax, r in panels:
        m = r["metrics"]
        for method, curve in m["ppl_by_fraction"].items():
            color, marker = METHOD_STYLE.get(method, ("black", "."))
            ax.plot([p[0] for p in curve], [p[1] for p in curve], marker=marker, color=color, label=method, ms=4)
        if m.get("ppl_random_spread"):
            band = m["ppl_random_spread"]
            ax.fill_between([b[0] for b in band], [b[1] for b in band], [b[2] for b in band],
                            color=METHOD_STYLE["random"][0], alpha=0.2, lw=0)
        base = next(iter(m["ppl_by_fraction"].values()))[0][1]
        ax.axhline(base * (1 + m.get("prunable_within", grading.PRUNABLE_PPL_WITHIN)), color="black", lw=0.8,
                   ls=":", label=f"+{m.get('prunable_within', grading.PRUNABLE_PPL_WITHIN):.0%} ppl")
        ax.set_yscale("log")
        _log_ticks(ax.yaxis)
        _panel_title(ax, r)
        _fractions(ax, [p[0] for curve in m["ppl_by_fraction"].values() for p in curve])
        ax.set_xlabel("fraction of heads removed")
        ax.set_ylabel("held-out perplexity (log)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _finish(fig, "Perplexity as heads are removed, by importance method (one panel per model)")


def plots(records: list[dict]) -> list[str]:
    """The figures. Quality: current records only. Benchmarks: stale ones too, their labels marked (stale), in a
    figure with at least one current row (a measurement by other code is still the best number there is until
    its row runs again, but a figure of stale rows alone is left out)."""
    bench = sorted((r for r in records if r["check"] == "bench" and r["outcome"] == PASSED
                    and r["metrics"].get("decode_tokens_per_s")), key=lambda r: (r["device"], r["model"]))
    charts = []
    real = [r for r in bench if not r["model"].startswith("tiny/")]
    tiny = [r for r in bench if r["model"].startswith("tiny/")]
    # a figure whose every row is stale says nothing the code still stands behind: left out
    if any(rules.is_current(r) for r in real):
        charts.append(decode_figure("Decode throughput, full-depth geometries", real))
    if any(rules.is_current(r) for r in tiny):
        charts.append(decode_figure("Decode throughput, tiny test models (latency-bound: noise)", tiny))
    quality = [r for r in records if r["check"] == "quality" and r["outcome"] in (PASSED, FAILED)
               and rules.is_current(r)]
    for device, dtype in sorted({(r["device"], r["dtype"]) for r in quality}):
        charts.append(quality_figure(device, dtype, [r for r in quality if (r["device"], r["dtype"]) == (device, dtype)]))
    curves = [r for r in bench if r["metrics"].get("pruning_curve") and not r["model"].startswith("tiny/")]
    if any(rules.is_current(r) for r in curves):
        charts.append(pruning_figure(curves))
    head_pruning = render.prune_records(records)
    if head_pruning:
        charts.append(head_pruning_figure(head_pruning))
    return [c for c in charts if c]
