"""Records -> the support page's data -> SUPPORTED_MODELS.md (jinja2 template, tabulate tables)."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import jinja2
import markupsafe
import tabulate as tabulate_module
from tabulate import tabulate

from sentinel_matrix import grading, registry
from sentinel_core.names import (ENCODER_DECODER_FAMILIES, ERROR, FAILED, GENERIC_WRAPPER, INCONCLUSIVE, NATIVE, PASSED, PROFILE,
                                 REAL_WEIGHTS, SKIPPED, short_dtype)
from sentinel_matrix.metrics import hf_side_moved, hf_side_quantities
from sentinel_matrix.bench_metrics import (ADAPTIVE_DECODE_PATHS, BEST_KEYS, HF_PATHS, RATIO, RATIO_HI, RATIO_LO, RATIOS,
                                  best_key, path_name)
from sentinel_matrix.catalog import family_architectures, generic_wrapper_families, load_catalog
from sentinel_matrix.checks.profile import costliest_first
from sentinel_matrix.grading import BANDWIDTH_SHARE_MIN_MB, FAIR, GOOD, POOR, WEIGHT_BANDWIDTH_BYTES_PER_S

from . import status as rules

TEMPLATES = Path(__file__).resolve().parent / "templates"
# Column widths must not depend on whether the optional wcwidth package is installed (it counts an
# emoji as two columns), or the committed page would differ between machines and --check would flap.
tabulate_module.WIDE_CHARS_MODE = False


@dataclass
class Table:
    """A table as data, rendered both ways from the same rows: Markdown (GitHub's pipe tables, a literal |
    escaped so it cannot split a cell) and HTML (tabulate escapes it)."""
    headers: list[str]
    rows: list[list]

    def markdown(self) -> str:
        def escaped(value) -> str:
            return markdown_text(" ".join(str(value).split()).replace("|", "\\|"))  # a pipe would split the cell
        return tabulate([[escaped(v) for v in row] for row in self.rows], [escaped(h) for h in self.headers],
                        tablefmt="github")

    def html(self) -> markupsafe.Markup:
        return markupsafe.Markup(tabulate(self.rows, self.headers, tablefmt="html"))  # tabulate escaped every cell

    __str__ = markdown  # what the Markdown template prints


def markdown_text(value) -> str:
    """Text from records (a model id, a reason, a sample) as Markdown shows it literally: HTML tags and inline links
    would render."""
    return str(value).replace("<", "&lt;").replace(">", "&gt;").replace("](", "\\](")


def _env():
    # The HTML report escapes every value it prints (a model id or model_type comes from a checkpoint anyone can
    # write); what is HTML already says so (Markup: tables tabulate escaped, matplotlib's SVG).
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
                             autoescape=lambda name: bool(name) and name.endswith(".html.j2"))
    env.filters["md"] = markdown_text  # the Markdown page's own escaping, for text outside its tables
    return env


def _fmt(x: float | None) -> str:
    if x is None:
        return "—"  # recorded as not measured
    return f"{x:.1e}" if abs(x) < 1e-2 and x != 0 else f"{x:.3g}"


def model_order(records: list[dict]) -> list[tuple[str, str]]:
    """(family, model) in catalog order, then models only the records know."""
    order = [(e.family, e.id) for e in load_catalog()]
    extra = sorted({(r["family"], r["model"]) for r in records} - set(order))
    return order + extra


GRADES = (GOOD, FAIR, POOR)  # best to worst; a source shows its worst
STALE_WORDS = {PASSED: "pass", FAILED: "failure", INCONCLUSIVE: "inconclusive"}


def sources(records: list[dict]) -> str:
    """The records' weight sources, each with its worst quality grade where one was recorded."""
    named = []
    for source in sorted({r["weights"] for r in records}):
        graded = [r["metrics"]["grade"] for r in records
                  if r["weights"] == source and r["metrics"].get("grade") in GRADES]
        named.append(f"{source} ({max(graded, key=GRADES.index)})" if graded else source)
    return "+".join(named)


def libraries(records: list[dict]) -> str:
    """The transformers and torch releases the records were measured with (local build tags dropped)."""
    versions = sorted({(r.get("env", {}).get("transformers", "?"), str(r.get("env", {}).get("torch", "?")).split("+")[0])
                       for r in records})
    return " [" + "; ".join(f"transformers {tf}, torch {pt}" for tf, pt in versions) + "]" if versions else ""


def stale_mark(record: dict) -> str:
    return "" if rules.is_current(record) else f"{rules.STALE} "


def cell(records: list[dict]) -> str:
    """The cell's status with the sources behind it; inconclusive and stale records follow, marked."""
    status = rules.cell_status(records)
    ran = [r for r in records if r["outcome"] != SKIPPED]
    current = [r for r in ran if rules.is_current(r)]
    stale = [r for r in ran if not rules.is_current(r)]

    def of(outcome: str, group: list[dict]) -> list[dict]:
        return [r for r in group if r["outcome"] == outcome]

    def named(group: list[dict]) -> str:  # the weight sources, then the library releases the evidence comes from
        return sources(group) + libraries(group)

    parts = []
    if status == rules.FAIL:
        parts.append(f"{status} {named(of('failed', current))}")
    elif status in (rules.PASS, rules.SYNTHETIC, rules.PARTIAL):
        parts.append(f"{status} {named(of('passed', current))}")
    if of(INCONCLUSIVE, current):
        parts.append(f"{rules.INCONCLUSIVE} inconclusive: {named(of('inconclusive', current))}")
    parts.extend(f"{rules.STALE} stale {word}: {named(of(outcome, stale))}"
                 for outcome, word in STALE_WORDS.items() if of(outcome, stale))
    return "; ".join(parts) or status




def quality_note(m: dict, dtype: str) -> str:
    """The graded numbers of one quality record: fp32's max |Δ log p|; half precision's mean KL and mean |Δ log p|
    to HF fp32 as multiples of HF's own (the worst input, sentinel_matrix/grading.py), or the raw top-32 gap where none
    was measured."""
    greedy = f", greedy {m.get('greedy_agreement', 0):.0%}" if "greedy_agreement" in m else ""
    if "kl_ratio" in m:
        positions = sum(p.get("positions", 0) for p in m.get("half_precision", {}).values())
        return (f"vs HF fp32: mean KL {m['kl_ratio']:.2f}×, mean |Δlog p| {m['error_ratio']:.2f}× HF's own "
                f"({positions} positions){greedy}")
    if "rounding_excess" in m:
        kl_ratio = m["kl_vs_fp32"] / m["baseline_kl_vs_fp32"] if m["baseline_kl_vs_fp32"] else float("nan")
        return (f"vs HF fp32 per token ≤ {m['rounding_excess']:.1f}× HF's own rounding, KL {kl_ratio:.2f}× HF's"
                f"{greedy}")
    top = next((f" (top-32 tokens: {_fmt(v)})" for key, v in m.items() if key.startswith("max_logprob_diff_top")
                and dtype != "float32"), "")
    return f"max Δlog p {_fmt(m['max_logprob_diff'])}{top}{greedy}"


def notes(records: list[dict]) -> str:
    parts = []
    if any(r["metrics"].get("adaptive_path") == GENERIC_WRAPPER for r in records):
        parts.append("generic gated wrapper (HF modules, no native converter)")
    for device in sorted({r["device"] for r in records}):
        q = [r for r in records if r["device"] == device and r["check"] == "quality" and r["outcome"] != SKIPPED]
        for dtype in sorted({r["dtype"] for r in q}):
            worst = max((r for r in q if r["dtype"] == dtype), key=lambda r: r["metrics"].get("max_logprob_diff", 0))
            if "max_logprob_diff" in worst["metrics"]:
                parts.append(f"{stale_mark(worst)}{device} {short_dtype(dtype)}: {quality_note(worst['metrics'], dtype)}")
        for r in q:
            if "ppl_ratio" in r["metrics"]:
                m = r["metrics"]
                parts.append(f"{stale_mark(r)}{r['weights']} ppl {m['ppl']:.2f} (ratio {m['ppl_ratio']:.6f})")
        bench = [r for r in records if r["device"] == device and r["check"] == "bench" and r["outcome"] == PASSED]
        for r in bench:
            m = r["metrics"]
            if ratio_text(m, "decode"):
                parts.append(f"{stale_mark(r)}{device} decode {m['decode_tokens_per_s']:.0f} tok/s, "
                             f"vs HF {ratio_text(m, 'decode')}")
    layers = {r["synthetic_layers"] for r in records if r.get("synthetic_layers")}
    if layers:
        parts.append(f"synthetic rows cut to {min(layers)} layers")
    return "; ".join(parts)


def unfinished(records: list[dict]) -> list[str]:
    """Rows the machine stopped (the `error` outcome: disk, memory, permissions), newest first: not a verdict on
    the model, so they are listed here and count nowhere else."""
    return [f"{r['model']} ({r['weights']}, {r['check']}, {r['device']} {short_dtype(r['dtype'])}, {r['time'][:10]}): "
            f"{r['reason']}" for r in sorted(records, key=lambda r: r["time"], reverse=True) if r["outcome"] == ERROR]


def build_context(records: list[dict]) -> dict:
    stopped = unfinished(records)
    records = [r for r in records if r["outcome"] != ERROR]
    by_model: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_model[r["model"]].append(r)
    # One column group per device and dtype: a CUDA fp32 row and a CUDA bf16 row are different evidence.
    devices = sorted({(r["device"], r["dtype"]) for r in records if r["check"] in registry.status_names()},
                     key=lambda d: (d[0] != "cpu", d))
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
            cells = [cell([r for r in recs if r["check"] == check and (r["device"], r["dtype"]) == device])
                     for device in devices for check in registry.status_names()]
            label = model + (" (gated)" if model in catalog and catalog[model].gated else "")
            rows.append([label, *cells, notes(recs)])
            for r in recs:
                text = r["metrics"].get("sample_output")
                if text and r["weights"] in REAL_WEIGHTS:
                    samples.append({"model": model, "weights": r["weights"], "device": r["device"],
                                    "dtype": r["dtype"], "text": " ".join(text.split())})
        headers = ["Model", *[f"{registry.by_name(c).title} ({device} {short_dtype(dtype)})"
                              for device, dtype in devices for c in registry.status_names()], "Notes"]
        counts = {s: statuses.count(s) for s in rules.PRECEDENCE}
        families.append({
            "name": family, "architecture": archs.get(family, "no converter"), "models": models,
            "status": rules.family_status(statuses), "table": Table(headers, rows),
            "counts": counts, "samples": samples,
        })

    overview = architecture_overview(by_model, families, devices)

    gated = {model for model in by_model if model in catalog and catalog[model].gated}
    return {"records": records, "families": families, "overview": overview, "devices": devices,
            "headline": headline(records, devices), "models": models_table(families, by_model, devices, gated),
            # the Markdown page's shorter forms (the full ones are report.html's)
            "overview_short": Table(overview.headers[:-1], [row[:-1] for row in overview.rows]),
            "evidence_current": current_evidence(evidence_table(records)),
            "summary": summary_table(records, [m for _, m in model_order(records)], devices),
            "evidence": evidence_table(records), "issues": known_issues(records), "unfinished": stopped,
            "benchmarks": benchmark_table(records), "benchmarks_tiny": benchmark_table(records, tiny=True),
            "benchmarks_best": best_path_table(records), "profile": profile_table(records), "profile_steps": profile_steps(records),
            "mutation": mutation_table(records), "mutation_summary": mutation_summary(records), "pruning": prune_table(records)}


def hf_class(model_type: str) -> str:
    """The causal-LM class transformers maps a model_type to (LlamaForCausalLM, ...)."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                         MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES)

    if model_type in ENCODER_DECODER_FAMILIES:
        return MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES.get(model_type, model_type)
    return MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type, model_type)


def gated_attention(model_type: str) -> str:
    """Which attention a family's gates sit on."""
    if model_type in ENCODER_DECODER_FAMILIES:
        return "encoder self, decoder self, cross"
    return "self (hooks on HF's modules)" if model_type in generic_wrapper_families() else "self"


def _first(names, n: int = 3) -> str:
    names = list(names)
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "") if names else "—"


def architecture_overview(by_model: dict[str, list[dict]], families: list[dict], devices: list[tuple[str, str]]) -> Table:
    """One row per HF architecture class: how it runs, where it is verified and on which real weights."""
    wrapped = generic_wrapper_families()
    rows = []
    for f in families:
        marks, real, last = [], defaultdict(list), ""
        for device, dtype in devices:
            statuses = []
            for model in f["models"]:
                group = [r for r in by_model.get(model, []) if (r["device"], r["dtype"]) == (device, dtype)]
                statuses.append(rules.model_status(group))
                if statuses[-1] == rules.PASS:
                    real[model].append(f"{device} {short_dtype(dtype)}")
                last = max([last, *(r["time"][:10] for r in group if rules.is_current(r) and r["outcome"] == PASSED)])
            marks.append(rules.family_status(statuses))
        path = "generic wrapper" if f["name"] in wrapped else NATIVE
        rows.append([hf_class(f["name"]), f["name"], path, gated_attention(f["name"]),
                     "gates only" if f["name"] in wrapped else "yes",
                     *map(rules.labelled, marks),
                     "; ".join(f"{m} ({', '.join(where)})" for m, where in real.items()) or "—", last or "—",
                     _first(m for m in f["models"] if not m.startswith("tiny/"))])
    return Table(["Architecture", "model_type", "Path", "Gated attention", "prune_heads",
                  *(f"{device} {short_dtype(dtype)}" for device, dtype in devices),
                  "Verified on real weights", "Last verified", "Catalog models"], rows)


def headline(records: list[dict], devices: list[tuple[str, str]]) -> str:
    """The page's first line: how many rows are current and how they came out, how many are stale, and per device
    and dtype the machine, libraries and commit of its newest current row."""
    ran = [r for r in records if r["outcome"] != SKIPPED]
    current = [r for r in ran if rules.is_current(r)]
    counts = {outcome: sum(r["outcome"] == outcome for r in current) for outcome in (PASSED, FAILED, INCONCLUSIVE)}
    parts = [f"**{len(current)} current rows** ({counts[PASSED]} passed, {counts[FAILED]} failed, "
             f"{counts[INCONCLUSIVE]} inconclusive), {len(ran) - len(current)} stale"]
    for device, dtype in devices:
        group = [r for r in current if (r["device"], r["dtype"]) == (device, dtype)]
        if group:
            newest = max(group, key=lambda r: r["time"])
            env = newest.get("env", {})
            parts.append(f"{device} {short_dtype(dtype)}: {env.get('device_name', '?')}, torch {env.get('torch', '?')}, "
                         f"transformers {env.get('transformers', '?')}, commit {commit(newest)}")
    return " · ".join(parts)


def models_table(families: list[dict], by_model: dict[str, list[dict]], devices: list[tuple[str, str]],
                 gated: set[str]) -> Table:
    """One line per model: its status per device and dtype (as a word beside the mark) and the real weights that
    pass; the per-check cells with their numbers are in report.html."""
    rows = []
    for f in families:
        for model in f["models"]:
            recs = by_model.get(model, [])
            marks = [rules.labelled(rules.model_status([r for r in recs if (r["device"], r["dtype"]) == d]))
                     for d in devices]
            real = sorted({r["weights"] for r in recs if r["weights"] in REAL_WEIGHTS and r["outcome"] == PASSED
                           and rules.is_current(r)})
            rows.append([model + (" (gated)" if model in gated else ""), f["name"], *marks, ", ".join(real) or "—"])
    return Table(["Model", "model_type", *(f"{device} {short_dtype(dtype)}" for device, dtype in devices),
                  "Real weights passing"], rows)


def summary_table(records: list[dict], models: list[str], devices: list[tuple[str, str]]) -> Table:
    """Per device and dtype, how many models stand where (each model's status from that column group's
    records alone), the library versions of the current records and the day of the last one."""
    rows = []
    for device, dtype in devices:
        group = [r for r in records if (r["device"], r["dtype"]) == (device, dtype)]
        by_model: dict[str, list[dict]] = defaultdict(list)
        for r in group:
            by_model[r["model"]].append(r)
        statuses = [rules.model_status(by_model.get(model, [])) for model in models]
        current = [r for r in group if rules.is_current(r) and r["outcome"] != SKIPPED]
        versions = sorted({f"torch {r['env'].get('torch', '?')}, transformers {r['env'].get('transformers', '?')}"
                           for r in current})
        rows.append([f"{device} {short_dtype(dtype)}", *(statuses.count(s) for s in rules.PRECEDENCE),
                     "; ".join(versions) or "—", max((r["time"][:10] for r in current), default="—")])
    return Table(["Device", *(f"{mark} {rules.MEANING[mark]}" for mark in rules.PRECEDENCE), "Libraries (current rows)",
                  "Last run"], rows)


def commit(record: dict) -> str:
    """The short commit that measured a record, +dirty where sentinel_core/ or sentinel_matrix/ had changes."""
    env = record.get("env", {})
    return (env.get("git_sha") or "?")[:7] + ("+dirty" if env.get("git_dirty") else "")


def code_state(record: dict) -> str:
    reason = rules.stale_reason(record)
    return "current" if reason is None else f"{rules.STALE} stale: {reason}"


def evidence_table(records: list[dict]) -> str:
    groups: dict[tuple, dict] = {}
    for r in records:
        env = r.get("env", {})
        key = (r["time"][:10], env.get("device_name", "?"), r["device"], short_dtype(r["dtype"]),
               env.get("torch", "?"), env.get("transformers", "?"), commit(r), code_state(r))
        g = groups.setdefault(key, {"sources": set(), "ran": 0, "skipped": 0})
        g["sources"].add(r["weights"])
        g["ran" if r["outcome"] != SKIPPED else "skipped"] += 1
    rows = [[*k, ", ".join(sorted(g["sources"])), g["ran"], g["skipped"]] for k, g in sorted(groups.items())]
    return Table(["Date", "Device", "Kind", "Dtype", "torch", "transformers", "Commit", "Code",
                  "Weight sources", "Rows run", "Rows skipped"], rows)


def current_evidence(table: Table) -> Table:
    """The evidence table's groups whose rows are all current (its Code column)."""
    code = table.headers.index("Code")
    return Table(table.headers, [row for row in table.rows if row[code] == "current"])


def known_issues(records: list[dict]) -> list[str]:
    """Failures (current first; stale ones marked, as they count no more), then inconclusive and
    skipped rows grouped by reason. Failed mutation rows (missed mutants) are failures like any."""
    failed = sorted((r for r in records if r["outcome"] == FAILED),
                    key=lambda r: (not rules.is_current(r), r["model"], r["check"]))
    items = [f"{stale_mark(r)}{rules.FAIL} {r['model']} ({r['weights']}, {r['check']}, {r['device']} "
             f"{short_dtype(r['dtype'])}{'' if rules.is_current(r) else ', stale: ' + commit(r)}): "
             f"{r['reason'] or _missed_text(r)}" for r in failed]
    for outcome, mark, what in ((INCONCLUSIVE, rules.INCONCLUSIVE, "inconclusive"),
                                (SKIPPED, rules.UNTESTED, "not tested")):
        grouped: dict[str, list[str]] = defaultdict(list)
        for r in records:
            if r["outcome"] == outcome:
                stale = ", stale" if outcome != SKIPPED and not rules.is_current(r) else ""
                grouped[f"{_generic_reason(r)} ({r['weights']} rows on {r['device']}{stale})"].append(r["model"])
        for reason, models in sorted(grouped.items()):
            unique = sorted(set(models))
            items.append(f"{mark} {len(unique)} model(s) {what}: {reason} — {', '.join(unique[:6])}"
                         + (f" and {len(unique) - 6} more" if len(unique) > 6 else ""))
    return items


def mutation_counts(metrics: dict) -> dict:
    """One mutation record's score as the check wrote it (sentinel_matrix/checks/mutation.py): of the applicable mutants
    whose fp32 effect passes the fp32 bar (catchable), how many were caught, how many of those half precision's
    rounding statistics alone caught (None: fp32, or a record from before they were told apart), the missed
    ones' names; how many were below that bar or not applicable. Records written before the fp32 bar decided
    (a noise factor did) say above_noise / below_noise."""
    score = metrics.get("mutation_score", {})
    return {"caught": score.get("caught", 0), "catchable": score.get("catchable", score.get("above_noise", 0)),
            "by_statistics": score.get("caught_by_statistics"),
            "missed": sorted(score.get("missed", [])), "below_bar": score.get("below_bar", score.get("below_noise", 0)),
            "not_applicable": score.get("not_applicable", 0)}


def _missed_text(record: dict) -> str:
    missed = mutation_counts(record["metrics"])["missed"] if record["check"] == "mutation" else []
    return f"missed mutant(s): {', '.join(missed)}" if missed else ""


def _rate(caught: int, catchable: int) -> str:
    return f"{caught} / {catchable} ({caught / catchable:.0%})" if catchable else "–"


def mutation_table(records: list[dict]) -> Table | None:
    """Per model, device and dtype: catchable injected conversion bugs (fp32 effect past the fp32 bar) that the
    checks caught, with the catch rate; in half precision also how many the rounding statistics alone caught
    (the rest only the fp32 rule on the row's own weights); the missed ones named."""
    rows = []
    order = {model: i for i, (_, model) in enumerate(model_order(records))}
    for r in sorted((r for r in records if r["check"] == "mutation" and r["outcome"] != SKIPPED),
                    key=lambda r: (order.get(r["model"], len(order)), r["device"], r["dtype"])):
        c = mutation_counts(r["metrics"])
        statistics = "–" if c["by_statistics"] is None else _rate(c["by_statistics"], c["catchable"])
        rows.append([r["family"], r["model"], r["weights"], r["device"], short_dtype(r["dtype"]),
                     _rate(c["caught"], c["catchable"]), statistics, ", ".join(c["missed"]) or "none",
                     c["below_bar"], c["not_applicable"], code_state(r)])
    if not rows:
        return None
    return Table(["Family", "Model", "Weights", "Device", "Dtype", "Caught / catchable", "By rounding statistics alone",
                  "Missed", "Below fp32 bar", "Not applicable", "Code"], rows)


def mutation_summary(records: list[dict]) -> Table | None:
    """The mutation table summed per device and dtype, current records only."""
    groups: dict[tuple, dict] = {}
    for r in records:
        if r["check"] != "mutation" or r["outcome"] == SKIPPED or not rules.is_current(r):
            continue
        c = mutation_counts(r["metrics"])
        g = groups.setdefault((r["device"], short_dtype(r["dtype"])), {"caught": 0, "catchable": 0, "statistics": 0,
                                                                       "told": 0, "models": 0})
        g["caught"] += c["caught"]
        g["catchable"] += c["catchable"]
        g["models"] += 1
        if c["by_statistics"] is not None:
            g["statistics"] += c["by_statistics"]
            g["told"] += c["catchable"]
    if not groups:
        return None
    return Table(["Device", "Dtype", "Model rows", "Caught / catchable", "By rounding statistics alone"],
                 [[device, dtype, g["models"], _rate(g["caught"], g["catchable"]),
                   _rate(g["statistics"], g["told"]) if g["told"] else "–"] for (device, dtype), g in sorted(groups.items())])


def _generic_reason(record: dict) -> str:
    """Skip reasons without the model name, so that rows skipped for one cause group together: in a command the
    reason quotes, MODEL stands for it (`hf download MODEL`), in prose "the model"."""
    reason = re.sub(rf"(`[^`]*){re.escape(record['model'])}([^`]*`)", r"\1MODEL\2", record["reason"])
    return reason.replace(record["model"], "the model")


def with_bandwidth_share(m: dict, key: str, record: dict) -> str:
    """tok/s, and the share of the weight-reading limit it reaches: the limit the record measured (its own
    read bandwidth), else, for records from before that measurement, one from the GPU's nominal bandwidth."""
    if not m.get(key):
        return ""
    # Records before weights_read_per_token_mb counted embedding tables whole, overstating the share a little.
    read_mb = m.get("weights_read_per_token_mb") or m.get("weights_mb")
    if not read_mb or read_mb < BANDWIDTH_SHARE_MIN_MB:
        return f"{m[key]:.0f}"
    limit = m.get("limit_decode_tokens_per_s")
    if not limit:
        device = record["env"].get("device_name", "")
        bandwidth = next((v for k, v in WEIGHT_BANDWIDTH_BYTES_PER_S.items() if k in device), None)
        if bandwidth is None:
            return f"{m[key]:.0f}"
        limit = bandwidth / (read_mb * 2**20)
    return f"{m[key]:.0f} ({m[key] / limit:.0%} of {limit:.0f})"


def ratio_text(m: dict, name: str) -> str:
    """An adaptive/HF ratio of RATIOS (> 1: adaptive faster) with its spread over the interleaved repeats,
    "~ noise" where the spread covers 1.0; a record from before the repeats has no spread to show."""
    if name + RATIO_LO in m:
        lo, hi = m[name + RATIO_LO], m[name + RATIO_HI]
        return f"{m[name + RATIO]:.2f} ({lo:.2f}–{hi:.2f})" + (" ~ noise" if lo <= 1.0 <= hi else "")
    num, den = RATIOS[name]
    return f"{m[num] / m[den]:.2f} (no spread)" if m.get(num) and m.get(den) else ""


def benchmark_table(records: list[dict], tiny: bool = False) -> Table | None:
    """Passed bench rows: the real geometries, or (tiny=True) the tiny test models apart from them."""
    bench = [r for r in records if r["check"] == "bench" and r["outcome"] == PASSED
             and r["model"].startswith("tiny/") == tiny]
    if not bench:
        return None
    rows = []
    for r in sorted(bench, key=lambda r: (r["device"], r["family"], r["model"], r["weights"])):
        m = r["metrics"]
        memory = m.get("peak_mem_mb") and m.get("baseline_peak_mem_mb")
        # `baseline_` is HF eager since the SDPA baseline; before, it was HF's default attention (`attn_baseline`).
        hf_attn = m.get("attn_baseline")
        other = f" [HF {hf_attn}]" if hf_attn and hf_attn != "eager" else ""

        def against(name: str) -> str:
            text = ratio_text(m, name)
            return text + other if text else text

        rows.append([stale_mark(r) + r["model"], r["weights"], f"{r['env'].get('device_name', r['device'])}",
                     short_dtype(r["dtype"]), m.get("prefill_tokens", "?"),
                     f"{m.get('prefill_ms', 0):.1f}",
                     " / ".join(filter(None, (against("prefill"), against("prefill_b8")))),
                     f"{m.get('decode_tokens_per_s', 0):.0f}", against("decode"),
                     f"{m.get('decode_b8_tokens_per_s', 0):.0f}", against("decode_b8"),
                     f"{m.get('peak_mem_mb', 0):.0f}", f"{m['peak_mem_mb'] / m['baseline_peak_mem_mb']:.2f}" if memory else "",
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
    return Table(["Model", "Weights", "Device", "Dtype", "Prompt tokens T", "Prefill ms (1×T) ↓",
                  "Prefill speed vs HF eager (1×T / 8×T) ↑", "Decode tok/s (b1) ↑", "vs HF eager ↑",
                  "Decode tok/s (b8) ↑", "vs HF eager ↑", "Peak MiB ↓", "vs HF ↓", "CUDA-graph decode tok/s (b1) ↑",
                  "Compiled + graph decode tok/s (b1) ↑",
                  "50% heads pruned: speedup decode b1 / b8 / prefill 1×T / 8×T; graph b1 / b8 ↑"], rows)


PRUNE_TABLE_FRACTIONS = (0.1, 0.2, 0.5)  # the curve's points the table prints (the plot has them all)


def prune_records(records: list[dict]) -> list[dict]:
    return sorted((r for r in records if r["check"] == "prune" and r["outcome"] == PASSED
                   and r["metrics"].get("ppl_by_fraction")), key=lambda r: (r["device"], r["family"], r["model"]))


def prune_table(records: list[dict]) -> Table | None:
    """Per model and method: the largest fraction of heads removed with held-out perplexity within the recorded
    margin of the unpruned model's, the perplexity at the largest fraction, and what the removal buys in speed."""
    rows = []
    for r in prune_records(records):
        m = r["metrics"]
        curves = m["ppl_by_fraction"]
        base = next(iter(curves.values()))[0][1]
        timed = {t[0]: dict(zip(m["throughput_columns"], t)) for t in m.get("throughput_by_fraction", [])}
        last = max(timed) if timed else None
        speed = (f"{timed[last]['decode_tokens_per_s'] / timed[0.0]['decode_tokens_per_s']:.2f} / "
                 f"{timed[0.0]['prefill_ms'] / timed[last]['prefill_ms']:.2f} at {last:.0%} "
                 f"({m['throughput_method']})" if last and 0.0 in timed else "")
        for i, (method, curve) in enumerate(curves.items()):
            points = []
            for fraction in PRUNE_TABLE_FRACTIONS:
                at = next((p[1] for p in curve if abs(p[0] - fraction) < 1e-9), None)
                if at is None:
                    points.append(_fmt(None))
                    continue
                spread = next(((lo, hi) for f, lo, hi in m.get("ppl_random_spread", []) if abs(f - fraction) < 1e-9),
                              None) if method == "random" else None
                points.append(f"{at:.1f}" + (f" ({spread[0]:.1f}–{spread[1]:.1f})" if spread else ""))
            rows.append([stale_mark(r) + r["model"] if i == 0 else "", r["weights"] if i == 0 else "",
                         f"{r['device']} {short_dtype(r['dtype'])}" if i == 0 else "",
                         f"{base:.2f}" if i == 0 else "", method, f"{m['prunable_fraction'][method]:.0%}",
                         " / ".join(points), speed if i == 0 else ""])
    if not rows:
        return None
    return Table(["Model", "Weights", "Device", "Held-out ppl, all heads", "Importance",
                  f"Prunable within +{grading.PRUNABLE_PPL_WITHIN:.0%} ppl ↑",
                  "ppl with " + " / ".join(f"{f:.0%}" for f in PRUNE_TABLE_FRACTIONS) + " of heads removed "
                  "(random: seeds' range) ↓", "Pruned speed vs unpruned: decode / prefill ↑"], rows)


HF_BASELINE_MARKERS = ("baseline_sdpa_decode_tokens_per_s", "baseline_sdpa_unavailable")  # records that timed every HF path


def best_decode(m: dict, paths) -> tuple[str | None, float | None]:
    """(path in words, tok/s) of the fastest batch-1 decode among `paths` (key prefixes) that the record timed."""
    key = best_key(m, [p + "decode_tokens_per_s" for p in paths], higher=True)
    if key is None:
        return None, None
    # Before the SDPA baseline, `baseline_` timed HF's default attention, which `attn_baseline` names.
    name = (m.get("attn_baseline") or "eager") if key.startswith("baseline_decode") else path_name(key)
    return name, m[key]


def best_ratio_text(m: dict, name: str) -> str:
    """A BEST_RATIOS ratio with its spread over repeats (as ratio_text), or a dash where it was not measured."""
    if name + RATIO not in m:
        return _fmt(None)
    lo, hi = m[name + RATIO_LO], m[name + RATIO_HI]
    paths = m.get(name + BEST_KEYS)
    against = f" [{path_name(paths[0])} vs {path_name(paths[1])}]" if paths else ""
    return f"{m[name + RATIO]:.2f} ({lo:.2f}–{hi:.2f})" + (" ~ noise" if lo <= 1.0 <= hi else "") + against


def hf_paths_text(m: dict) -> str:
    """HF's batch-1 decode on each path: eager / SDPA / compiled (with its first call, which compiles); a path
    that did not run says so."""
    cells = []
    for prefix, unavailable, word in (("baseline_", None, ""), ("baseline_sdpa_", "baseline_sdpa_unavailable", "no SDPA"),
                                      ("baseline_compiled_", "baseline_compiled_unavailable", "not run")):
        value, first = m.get(prefix + "decode_tokens_per_s"), m.get(prefix + "first_call_s")
        if value:
            cells.append(f"{value:.0f}" + (f" (first call {first:.0f} s)" if first else ""))
        else:
            cells.append(word if unavailable in m else _fmt(None))
    return " / ".join(cells)


def best_path_table(records: list[dict]) -> Table | None:
    """Full-depth bench rows against HF's fastest path (eager, SDPA, static cache + torch.compile) and the
    device's limit (its read bandwidth over the bytes a decode step reads). Records from before these
    were measured show a dash."""
    bench = [r for r in records if r["check"] == "bench" and r["outcome"] == PASSED and not r["model"].startswith("tiny/")]
    if not bench:
        return None
    rows = []
    for r in sorted(bench, key=lambda r: (r["device"], r["family"], r["model"], r["weights"])):
        m = r["metrics"]
        every_hf_path = any(k in m for k in HF_BASELINE_MARKERS)
        hf_name, hf_best = best_decode(m, HF_PATHS) if every_hf_path else (None, None)
        our_name, our_best = best_decode(m, ADAPTIVE_DECODE_PATHS)
        limit = m.get("limit_decode_tokens_per_s")
        shares = [m.get(k) for k in ("decode_share_of_limit", "baseline_decode_share_of_limit")]
        rows.append([stale_mark(r) + r["model"], r["weights"], f"{r['env'].get('device_name', r['device'])}",
                     short_dtype(r["dtype"]),
                     hf_paths_text(m) if every_hf_path else _fmt(None),
                     f"{hf_best:.0f} ({hf_name})" if hf_best else _fmt(None),
                     f"{our_best:.0f} ({our_name})" if our_best else _fmt(None),
                     best_ratio_text(m, "decode_vs_best"), best_ratio_text(m, "decode_b8_vs_best"),
                     # the fastest round, which sets the limit (older records: the median)
                     f"{m.get('read_bandwidth_peak_gb_s') or m['read_bandwidth_gb_s']:.0f}"
                     if m.get("read_bandwidth_gb_s") else _fmt(None),
                     f"{limit:.0f}" if limit else _fmt(None),
                     " / ".join(_fmt(None) if s is None else f"{s:.0%}" for s in shares) if limit else _fmt(None)])
    return Table(["Model", "Weights", "Device", "Dtype", "HF decode tok/s (b1): eager / SDPA / compiled ↑",
                  "HF best decode tok/s (b1) ↑", "Adaptive best decode tok/s (b1) ↑", "vs HF best (b1) ↑",
                  "vs HF best (b8) ↑", "Read GB/s (fastest round)", "Decode limit tok/s (b1)", "Share of limit: adaptive / HF ↑"], rows)


PROFILE_PATHS = (("graph_", "CUDA graph"), ("fused_", "fused (Triton)"), ("pruned_graph_", "CUDA graph, half the heads pruned"),
                 ("pruned_fused_", "fused, half the heads pruned"))


def profile_steps(records: list[dict]) -> str:
    """The decode steps the profile rows' wall times span, as their records say ("128"; "32 or 128" when they differ)."""
    steps = {r["metrics"].get("profile_steps") for r in records if r["check"] == PROFILE and r["outcome"] == PASSED}
    return " or ".join(f"{n:.0f}" for n in sorted(steps - {None}))


def profile_table(records: list[dict]) -> Table | None:
    """The profile rows (CUDA): per model and decode path, a batch-1 step's wall time, kernels, GPU busy time, share
    of the device's bandwidth limit and its costliest kernel."""
    rows = []
    for r in sorted((r for r in records if r["check"] == PROFILE and r["outcome"] == PASSED),
                    key=lambda r: (r["device"], r["family"], r["model"])):
        m = r["metrics"]
        for prefix, name in PROFILE_PATHS:
            wall = m.get(prefix + "wall_ms_per_step")
            if wall is None:
                if prefix == "fused_" and m.get("fused_unavailable"):
                    rows.append([stale_mark(r) + r["model"], r["env"].get("device_name", r["device"]),
                                 short_dtype(r["dtype"]), name, f"not run: {m['fused_unavailable']}", *[_fmt(None)] * 7])
                continue
            top = next(iter(costliest_first(m.get(prefix + "top_kernels") or {})), None)
            # busy_ms_per_step: the kernels' union; a record from before it has only their sum (kernel_ms_per_step).
            # Its share is of gpu_step_ms; an older record's share was of a noisier step (at times above 100%): not shown.
            share, busy, gpu_step, busy_share = (m.get(prefix + key) for key in
                                                 ("share_of_limit", "busy_ms_per_step", "gpu_step_ms", "busy_share"))
            rows.append([stale_mark(r) + r["model"], r["env"].get("device_name", r["device"]), short_dtype(r["dtype"]),
                         name, f"{wall:.3f} ({1e3 / wall:.0f} tok/s)", _fmt(None) if share is None else f"{share:.0%}",
                         f"{m[prefix + 'kernels_per_step']:.0f}", f"{m[prefix + 'kernel_ms_per_step']:.3f}",
                         _fmt(None) if busy is None else f"{busy:.3f}" + ("" if gpu_step is None or busy_share is None
                                                                          else f" of {gpu_step:.3f} ({busy_share:.0%})"),
                         f"{top[0]} {top[1][0]:.0f} µs × {top[1][1]:.0f}" if top else _fmt(None),
                         _fmt(None) if prefix + "call_capture_ms" not in m else
                         f"{m[prefix + 'call_prefill_ms']:.1f} + {m[prefix + 'call_capture_ms']:.1f}",
                         f"{m['limit_decode_tokens_per_s']:.0f}"])
    if not rows:
        return None
    return Table(["Model", "Device", "Dtype", "Decode path (batch 1)", "ms per step ↓", "Share of limit ↑",
                  "Kernels per step ↓", "Kernel ms summed", "GPU busy ms of the profiled step (share)", "Costliest kernel (per step)",
                  "Per call: prefill + warm-up and capture ms ↓",
                  "Limit tok/s"], rows)


def release_of(record: dict) -> str | None:
    return (record.get("env") or {}).get("transformers")


def version_matrix(records: list[dict]) -> dict | None:
    """Family × transformers release over the CPU rows (the version runs' and the main job's): each cell the
    family's status on that release's records, with the reasons of what failed or skipped there; per model the
    lowest and highest release it passes on. None while fewer than two releases have records."""
    from packaging.version import Version

    from .load import recorded_at, record_key

    newest: dict[tuple, dict] = {}  # per release and row, the newest record (the main job's and a version run's)
    for r in records:
        if r["device"] == "cpu" and release_of(r) and r["check"] in registry.status_names() and r["outcome"] != ERROR:
            key = (release_of(r), *record_key(r))
            if key not in newest or recorded_at(r) > recorded_at(newest[key]):
                newest[key] = r
    cpu = list(newest.values())
    # a release whose every record is stale says nothing about today's code: no column
    releases = sorted({release_of(r) for r in cpu if rules.is_current(r)}, key=Version)
    cpu = [r for r in cpu if release_of(r) in releases]
    if len(releases) < 2:
        return None
    rows = []
    for family in sorted({r["family"] for r in cpu}):
        cells = []
        for release in releases:
            here = [r for r in cpu if r["family"] == family and release_of(r) == release]
            statuses = [rules.model_status([r for r in here if r["model"] == m]) for m in {r["model"] for r in here}]
            reasons = sorted({f"{r['model']} {r['check']}: {r['outcome']} — {r['reason'] or 'no reason recorded'}"
                              for r in here if r["outcome"] != PASSED and rules.is_current(r)})
            cells.append({"status": rules.labelled(rules.family_status(statuses)) if here else rules.labelled(
                rules.UNTESTED), "release": release, "anchor": f"release-{family}-{release}",
                          "reasons": reasons})
        rows.append({"family": family, "cells": cells})
    verified = []
    for model in sorted({r["model"] for r in cpu}):
        good = [release for release in releases if rules.model_status(
            [r for r in cpu if r["model"] == model and release_of(r) == release]) in (rules.PASS, rules.SYNTHETIC)]
        verified.append([model, good[0] if good else "—", good[-1] if good else "—", f"{len(good)}/{len(releases)}"])
    table = Table(["Family", *releases], [[row["family"], *[c["status"] for c in row["cells"]]] for row in rows])
    return {"releases": releases, "rows": rows, "table": table,
            "models": Table(["Model", "Lowest release passing", "Highest", "Releases passing"], verified),
            "hf_moved": hf_moved_table(cpu, releases)}


def hf_moved_table(records: list[dict], releases: list[str]) -> Table:
    """Where HF itself changed between consecutive releases a row ran on: a quantity the row measured of HF alone
    (metrics.hf_side_quantities: its eager vs SDPA, its padding effect, its fp32 distribution, ...) that moved past
    its threshold. A verdict that flips with such a change is HF's change showing, not ours."""
    by_row: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in records:
        if rules.is_current(r):
            by_row[(r["model"], r["weights"], r["check"], r["dtype"])][release_of(r)] = r
    rows = []
    for (model, weights, check, dtype), per_release in sorted(by_row.items()):
        ran = [release for release in releases if release in per_release]
        for old_release, new_release in zip(ran, ran[1:]):
            old = hf_side_quantities(per_release[old_release]["metrics"])
            new = hf_side_quantities(per_release[new_release]["metrics"])
            for label in sorted(set(old) & set(new)):
                if hf_side_moved(label, old[label], new[label]):
                    outcomes = f"{per_release[old_release]['outcome']} → {per_release[new_release]['outcome']}"
                    rows.append([model, check, label, f"{old_release} → {new_release}",
                                 f"{old[label]:.3g} → {new[label]:.3g}", outcomes])
    return Table(["Model", "Check", "HF-side quantity", "Releases", "Value", "Row outcome"], rows)


def render_markdown(records: list[dict], release_records: list[dict] | None = None) -> str:
    return _env().get_template("SUPPORTED_MODELS.md.j2").render(**build_context(records),
                                                                 versions=version_matrix(records + (release_records or [])))
