"""python -m reports diff OLD NEW: rows whose status changed, and metrics that moved past a threshold."""

from __future__ import annotations

import argparse
import sys

from matrix.bench_metrics import SPREAD_SUFFIXES
from matrix.grading import DIFF_ABSOLUTE, DIFF_IGNORED, DIFF_RELATIVE

from .load import RecordError, load_results, record_key


def moved(name: str, old, new) -> bool:
    # A spread (IQR, round count, a ratio's range) describes a measurement; it is not one that regresses.
    if name in DIFF_IGNORED or name.endswith(SPREAD_SUFFIXES) or isinstance(old, bool) or isinstance(new, bool):
        return False
    if not isinstance(old, (int, float)) or not isinstance(new, (int, float)):
        return False
    if name in DIFF_ABSOLUTE:
        return abs(new - old) > DIFF_ABSOLUTE[name]
    return abs(new - old) > DIFF_RELATIVE * max(abs(old), 1e-12)


def compare(old: list[dict], new: list[dict]) -> list[str]:
    before = {record_key(r): r for r in old}
    after = {record_key(r): r for r in new}
    lines = []
    for key in sorted(set(before) | set(after)):
        label = "/".join(key)
        a, b = before.get(key), after.get(key)
        if a is None:
            lines.append(f"+ {label}: new row, {b['outcome']}")
            continue
        if b is None:
            lines.append(f"- {label}: row gone (was {a['outcome']})")
            continue
        if a["outcome"] != b["outcome"]:
            lines.append(f"! {label}: {a['outcome']} -> {b['outcome']}" + (f" ({b['reason']})" if b["reason"] else ""))
        for name in sorted(set(a["metrics"]) & set(b["metrics"])):
            if moved(name, a["metrics"][name], b["metrics"][name]):
                lines.append(f"~ {label}: {name} {a['metrics'][name]:.4g} -> {b['metrics'][name]:.4g}")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports diff", description=__doc__)
    parser.add_argument("old", help="results file or folder before")
    parser.add_argument("new", help="results file or folder after")
    args = parser.parse_args(argv)
    try:
        lines = compare(load_results([args.old]), load_results([args.new]))
    except RecordError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines) if lines else "no status changes and no metric moved past its threshold")
    return 0
