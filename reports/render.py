"""Records -> the support page's data -> SUPPORTED_MODELS.md (jinja2 template, tabulate tables)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import jinja2
import tabulate as tabulate_module
from tabulate import tabulate

from matrix.catalog import family_architectures, load_catalog
from matrix.grading import BANDWIDTH_SHARE_MIN_MB, WEIGHT_BANDWIDTH_BYTES_PER_S

from . import status as rules

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
# Column widths must not depend on whether the optional wcwidth package is installed (it counts an
# emoji as two columns), or the committed page would differ between machines and --check would flap.
tabulate_module.WIDE_CHARS_MODE = False
CHECK_TITLES = {"load": "Loading", "infer": "Inference", "quality": "Quality"}
DTYPE_SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def _env():
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), keep_trailing_newline=True,
                              trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)


def _fmt(x: float) -> str:
    return f"{x:.1e}" if abs(x) < 1e-2 and x != 0 else f"{x:.3g}"


def model_order(records: list[dict]) -> list[tuple[str, str]]:
    """(family, model) in catalog order, then models only the records know."""
    order = [(e.family, e.id) for e in load_catalog()]
    extra = sorted({(r["family"], r["model"]) for r in records} - set(order))
    return order + extra


def cell(records: list[dict]) -> str:
    status = rules.cell_status(records)
    ran = [r for r in records if r["outcome"] != "skipped"]
    sources = sorted({r["weights"] for r in ran if r["outcome"] == "passed"})
    if status == rules.FAIL:
        return rules.FAIL
    return f"{status} {'+'.join(sources)}" if sources else status


GENERIC_WRAPPER = "generic-wrapper"  # metrics["adaptive_path"] of a model with no native converter


def notes(records: list[dict]) -> str:
    parts = []
    if any(r["metrics"].get("adaptive_path") == GENERIC_WRAPPER for r in records):
        parts.append("generic gated wrapper (HF modules, no native converter)")
    for device in sorted({r["device"] for r in records}):
        q = [r for r in records if r["device"] == device and r["check"] == "quality" and r["outcome"] != "skipped"]
        if q:
            worst = max(q, key=lambda r: r["metrics"].get("max_logprob_diff", 0))
            m = worst["metrics"]
            if "max_logprob_diff" in m:
                top = next((f" (top-32 tokens: {_fmt(v)}" for key, v in m.items()
                            if key.startswith("max_logprob_diff_top") and worst["dtype"] != "float32"), "")
                beyond = next((f"; {_fmt(v)} beyond HF's own rounding against fp32" for key, v in m.items()
                               if key.startswith("error_beyond_baseline_rounding_top")), "")
                top += f"{beyond})" if top else ""
                parts.append(f"{device} {DTYPE_SHORT.get(worst['dtype'], worst['dtype'])}: "
                             f"max Δlog p {_fmt(m['max_logprob_diff'])}{top}, greedy {m.get('greedy_agreement', 0):.0%}")
        for r in q:
            if "ppl_ratio" in r["metrics"]:
                m = r["metrics"]
                parts.append(f"{r['weights']} ppl {m['ppl']:.2f} (ratio {m['ppl_ratio']:.6f})")
        bench = [r for r in records if r["device"] == device and r["check"] == "bench" and r["outcome"] == "passed"]
        for r in bench:
            m = r["metrics"]
            if m.get("decode_tokens_per_s") and m.get("baseline_decode_tokens_per_s"):
                parts.append(f"{device} decode {m['decode_tokens_per_s']:.0f} tok/s "
                             f"({m['decode_tokens_per_s'] / m['baseline_decode_tokens_per_s']:.2f}× HF)")
    layers = {r["synthetic_layers"] for r in records if r.get("synthetic_layers")}
    if layers:
        parts.append(f"synthetic rows cut to {min(layers)} layers")
    return "; ".join(parts)


def build_context(records: list[dict]) -> dict:
    by_model: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_model[r["model"]].append(r)
    devices = sorted({r["device"] for r in records}, key=lambda d: (d != "cpu", d))
    archs = family_architectures()
    catalog = {e.id: e for e in load_catalog()}

    families = []
    for family in dict.fromkeys(f for f, _ in model_order(records)):
        models = [m for f, m in model_order(records) if f == family]
        rows, statuses, samples = [], [], []
        for model in models:
            recs = by_model.get(model, [])
            status = rules.model_status(recs)
            statuses.append(status)
            cells = [cell([r for r in recs if r["check"] == check and r["device"] == device])
                     for device in devices for check in rules.CHECKS]
            label = model + (" (gated)" if model in catalog and catalog[model].gated else "")
            rows.append([label, *cells, notes(recs)])
            for r in recs:
                text = r["metrics"].get("sample_output")
                if text and r["weights"] in rules.REAL_WEIGHTS:
                    samples.append({"model": model, "weights": r["weights"], "device": r["device"],
                                    "dtype": r["dtype"], "text": " ".join(text.split())})
        headers = ["Model", *[f"{CHECK_TITLES[c]} ({d})" for d in devices for c in rules.CHECKS], "Notes"]
        counts = {s: statuses.count(s) for s in (rules.PASS, rules.PARTIAL, rules.FAIL, rules.UNTESTED)}
        families.append({
            "name": family, "architecture": archs.get(family, "no converter"), "models": models,
            "status": rules.family_status(statuses), "table": tabulate(rows, headers, tablefmt="github"),
            "counts": counts, "samples": samples,
        })

    overview = tabulate(
        [[f["name"], f["architecture"], ", ".join(m for m in f["models"] if not m.startswith("tiny/"))[:120],
          f["status"], ", ".join(f"{n} {s}" for s, n in f["counts"].items() if n)] for f in families],
        ["Family", "Architecture", "Example models", "Status", "Notes"], tablefmt="github")

    return {"records": records, "families": families, "overview": overview, "devices": devices,
            "evidence": evidence_table(records), "issues": known_issues(records),
            "benchmarks": benchmark_table(records)}


def evidence_table(records: list[dict]) -> str:
    groups: dict[tuple, dict] = {}
    for r in records:
        env = r.get("env", {})
        key = (r["time"][:10], env.get("device_name", "?"), r["device"], DTYPE_SHORT.get(r["dtype"], r["dtype"]),
               env.get("torch", "?"), env.get("transformers", "?"))
        g = groups.setdefault(key, {"sources": set(), "ran": 0, "skipped": 0})
        g["sources"].add(r["weights"])
        g["ran" if r["outcome"] != "skipped" else "skipped"] += 1
    rows = [[*k, ", ".join(sorted(g["sources"])), g["ran"], g["skipped"]] for k, g in sorted(groups.items())]
    return tabulate(rows, ["Date", "Device", "Kind", "Dtype", "torch", "transformers", "Weight sources",
                           "Rows run", "Rows skipped"], tablefmt="github")


def known_issues(records: list[dict]) -> list[str]:
    failed = [r for r in records if r["outcome"] == "failed"]
    items = [f"❌ {r['model']} ({r['weights']}, {r['check']}, {r['device']} {DTYPE_SHORT.get(r['dtype'], r['dtype'])}): "
             f"{r['reason']}" for r in sorted(failed, key=lambda r: (r["model"], r["check"]))]
    skipped: dict[str, list[str]] = defaultdict(list)
    for r in records:
        if r["outcome"] == "skipped":
            skipped[f"{_generic_reason(r)} ({r['weights']} rows on {r['device']})"].append(r["model"])
    for reason, models in sorted(skipped.items()):
        unique = sorted(set(models))
        items.append(f"❔ {len(unique)} model(s) not tested: {reason} — {', '.join(unique[:6])}"
                     + (f" and {len(unique) - 6} more" if len(unique) > 6 else ""))
    return items


def _generic_reason(record: dict) -> str:
    """Skip reasons without the model name, so that rows skipped for one cause group together."""
    return record["reason"].replace(record["model"], "the model")


def with_bandwidth_share(m: dict, key: str, record: dict) -> str:
    """tok/s, and on a GPU with a known bandwidth the share of the weight-reading limit it reaches."""
    if not m.get(key):
        return ""
    device = record["env"].get("device_name", "")
    bandwidth = next((v for k, v in WEIGHT_BANDWIDTH_BYTES_PER_S.items() if k in device), None)
    # Records before weights_read_per_token_mb counted embedding tables whole, overstating the share a little.
    read_mb = m.get("weights_read_per_token_mb") or m.get("weights_mb")
    if bandwidth is None or not read_mb or read_mb < BANDWIDTH_SHARE_MIN_MB:
        return f"{m[key]:.0f}"
    limit = bandwidth / (read_mb * 2**20)
    return f"{m[key]:.0f} ({m[key] / limit:.0%} of {limit:.0f})"


def benchmark_table(records: list[dict]) -> str | None:
    bench = [r for r in records if r["check"] == "bench" and r["outcome"] == "passed"]
    if not bench:
        return None
    rows = []
    for r in sorted(bench, key=lambda r: (r["device"], r["family"], r["model"], r["weights"])):
        m = r["metrics"]

        def ratio(a, b, m=m):
            return f"{m[a] / m[b]:.2f}" if m.get(a) and m.get(b) else ""

        rows.append([r["model"], r["weights"], f"{r['env'].get('device_name', r['device'])}",
                     DTYPE_SHORT.get(r["dtype"], r["dtype"]),
                     f"{m.get('prefill_ms', 0):.1f}",
                     " / ".join(filter(None, (ratio("baseline_prefill_ms", "prefill_ms"),
                                              ratio("baseline_prefill_b8_ms", "prefill_b8_ms")))),
                     f"{m.get('decode_tokens_per_s', 0):.0f}", ratio("decode_tokens_per_s", "baseline_decode_tokens_per_s"),
                     f"{m.get('decode_b8_tokens_per_s', 0):.0f}",
                     ratio("decode_b8_tokens_per_s", "baseline_decode_b8_tokens_per_s"),
                     f"{m.get('peak_mem_mb', 0):.0f}", ratio("peak_mem_mb", "baseline_peak_mem_mb"),
                     with_bandwidth_share(m, "graph_decode_tokens_per_s", r),
                     with_bandwidth_share(m, "compiled_decode_tokens_per_s", r)
                     + (f", {m['compiled_vs_eager_agreement']:.0%} tokens = eager"
                        if "compiled_vs_eager_agreement" in m else ""),
                     (" / ".join(f"{m[k]:.2f}" for k in ("pruned_decode_speedup", "pruned_decode_b8_speedup",
                                                          "pruned_prefill_speedup", "pruned_prefill_b8_speedup") if k in m)
                      + ("; graph " + " / ".join(f"{m[k]:.2f}" for k in ("pruned_graph_decode_speedup",
                                                                        "pruned_graph_decode_b8_speedup"))
                         if "pruned_graph_decode_b8_speedup" in m else ""))
                     or ("n/a (generic wrapper: gates only)" if m.get("adaptive_path") == GENERIC_WRAPPER else "")])
    return tabulate(rows, ["Model", "Weights", "Device", "Dtype", "Prefill ms (1×512)", "Prefill speed vs HF (1×512 / 8×512)",
                           "Decode tok/s (b1)", "vs HF", "Decode tok/s (b8)", "vs HF", "Peak MiB", "vs HF",
                           "CUDA-graph decode tok/s (b1)", "Compiled + graph decode tok/s (b1)",
                           "50% heads pruned: speedup decode b1 / b8 / prefill 1×512 / 8×512; graph b1 / b8"],
                    tablefmt="github")


def render_markdown(records: list[dict]) -> str:
    return _env().get_template("SUPPORTED_MODELS.md.j2").render(**build_context(records))
