"""A self-contained HTML report: the support tables plus inline SVG plots (no scripts, no network)."""

from __future__ import annotations

from html import escape


from .render import DTYPE_SHORT, _env, build_context


def bar_chart(title: str, bars: list[tuple[str, list[float]]], series: list[str], unit: str,
              reference: float | None = None) -> str:
    """Horizontal grouped bars as SVG; `reference` draws a vertical line (e.g. ratio 1.0)."""
    colors = ["#3b6fb6", "#e0873a", "#5a9e57"]
    row_h, bar_h, left, width = 14 * max(1, len(series)) + 10, 12, 380, 420
    values = [v for _, vs in bars for v in vs if v is not None] + ([reference] if reference else [])
    top = max(values) * 1.1 if values else 1.0
    height = 40 + row_h * len(bars) + 20
    out = [f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{left + width + 80}" height="{height}" '
           f'role="img" aria-label="{escape(title)}">',
           f'<text x="4" y="16" font-weight="bold">{escape(title)}</text>']
    for i, name in enumerate(series):
        out.append(f'<rect x="{left + 140 * i}" y="24" width="10" height="10" fill="{colors[i % 3]}"/>'
                   f'<text x="{left + 140 * i + 14}" y="33" font-size="11">{escape(name)}</text>')
    for row, (label, vs) in enumerate(bars):
        y = 44 + row * row_h
        short = label if len(label) <= 58 else "…" + label[-57:]
        out.append(f'<text x="{left - 6}" y="{y + bar_h}" font-size="11" text-anchor="end">{escape(short)}</text>')
        for i, v in enumerate(vs):
            if v is None:
                continue
            w = width * v / top
            out.append(f'<rect x="{left}" y="{y + i * (bar_h + 2)}" width="{w:.1f}" height="{bar_h}" '
                       f'fill="{colors[i % 3]}"><title>{escape(label)} {escape(series[i])}: {v:.3g} {unit}</title></rect>'
                       f'<text x="{left + w + 4:.1f}" y="{y + i * (bar_h + 2) + 10}" font-size="10">{v:.3g}</text>')
    if reference:
        x = left + width * reference / top
        out.append(f'<line x1="{x:.1f}" y1="40" x2="{x:.1f}" y2="{height - 10}" stroke="#888" stroke-dasharray="4"/>')
    out.append("</svg>")
    return "".join(out)


def line_chart(title: str, points: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str) -> str:
    width, height, pad = 520, 260, 44
    xs = [x for pts in points.values() for x, _ in pts]
    ys = [y for pts in points.values() for _, y in pts]
    if not xs:
        return ""
    x0, x1, y0, y1 = min(xs), max(xs) or 1, min(ys + [0]), max(ys) * 1.1 or 1

    def sx(x):
        return pad + (width - 2 * pad) * (x - x0) / ((x1 - x0) or 1)

    def sy(y):
        return height - pad - (height - 2 * pad) * (y - y0) / ((y1 - y0) or 1)

    out = [f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{escape(title)}"><text x="4" y="16" font-weight="bold">{escape(title)}</text>',
           f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#444"/>',
           f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#444"/>',
           f'<text x="{width / 2}" y="{height - 8}" font-size="11" text-anchor="middle">{escape(xlabel)}</text>',
           f'<text x="12" y="{height / 2}" font-size="11" transform="rotate(-90 12 {height / 2})" '
           f'text-anchor="middle">{escape(ylabel)}</text>']
    colors = ["#3b6fb6", "#e0873a", "#5a9e57", "#b64a3b", "#7a5ab6"]
    for i, (name, pts) in enumerate(sorted(points.items())):
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(pts))
        out.append(f'<polyline points="{path}" fill="none" stroke="{colors[i % 5]}" stroke-width="2"/>'
                   f'<text x="{width - pad + 4}" y="{sy(sorted(pts)[-1][1]):.1f}" font-size="10">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def plots(records: list[dict]) -> list[str]:
    bench = sorted((r for r in records if r["check"] == "bench" and r["outcome"] == "passed"),
                   key=lambda r: (r["device"], r["model"]))
    charts = []
    label = lambda r: f"{r['model']} ({r['device']} {DTYPE_SHORT.get(r['dtype'], r['dtype'])})"  # noqa: E731
    decode = [(label(r), [r["metrics"].get("decode_tokens_per_s"), r["metrics"].get("baseline_decode_tokens_per_s")])
              for r in bench if r["metrics"].get("decode_tokens_per_s")]
    if decode:
        charts.append(bar_chart("Decode throughput, batch 1", decode, ["adaptive", "Hugging Face"], "tokens/s"))
        ratios = [(name, [vs[0] / vs[1] if vs[1] else None]) for name, vs in decode]
        charts.append(bar_chart("Adaptive / HF decode speed (line: 1.0)", ratios, ["ratio"], "×", reference=1.0))
    quality = [r for r in records if r["check"] == "quality" and "max_logprob_diff" in r.get("metrics", {})]
    for device, dtype in sorted({(r["device"], r["dtype"]) for r in quality}):
        rows = sorted((r for r in quality if (r["device"], r["dtype"]) == (device, dtype)), key=lambda r: r["model"])
        charts.append(bar_chart(f"Max |Δ log p| against HF ({device} {DTYPE_SHORT.get(dtype, dtype)}), per model",
                                [(f"{r['model']} ({r['weights']})", [r["metrics"]["max_logprob_diff"]]) for r in rows],
                                ["max |Δ log p|"], ""))
    curves = {label(r): [tuple(p) for p in r["metrics"]["pruning_curve"]]
              for r in records if r.get("metrics", {}).get("pruning_curve")}
    if curves:
        charts.append(line_chart("Pruning curve", curves, "fraction of heads pruned", "decode tokens/s"))
    return charts


def render_html(records: list[dict]) -> str:
    context = build_context(records)
    return _env().get_template("report.html.j2").render(**context, plots=plots(records))
