"""python -m sentinel_reports diff OLD NEW: rows whose status changed, and metrics that moved past a threshold."""

from __future__ import annotations

import argparse
import json
import math
import sys

from sentinel_matrix.metrics import DIFF_RELATIVE, HIGHER, LOWER, metric
from sentinel_core.names import FAILED, INCONCLUSIVE, PASSED

from .load import RecordError, load_results, record_key


MISSING = object()  # a metric one of the two records does not have


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def lost(old, new) -> bool:
    """A finite measurement that became NaN, infinite or null: a regression (a metric no longer recorded at all
    is listed as a change only; the check may have stopped measuring it)."""
    return is_number(old) and math.isfinite(old) and new is not MISSING and not (is_number(new) and math.isfinite(new))


def moved(name: str, old, new) -> bool:
    # A spread (IQR, round count, a ratio's range) describes a measurement; it is not one that regresses.
    definition = metric(name)
    if definition.diff_ignored:
        return False
    if not is_number(old) or not is_number(new):
        return old != new and (is_number(old) or is_number(new))
    if not (math.isfinite(old) and math.isfinite(new)):
        return not (math.isnan(old) and math.isnan(new)) and old != new
    if definition.diff_absolute is not None:
        return abs(new - old) > definition.diff_absolute
    return abs(new - old) > DIFF_RELATIVE * max(abs(old), 1e-12)


def direction(name: str, old, new) -> str:
    """ (better) or (worse), for a number whose better direction is known."""
    better = metric(name).better
    if better not in (HIGHER, LOWER) or not (is_number(old) and is_number(new)) or old == new:
        return ""
    return " (better)" if (new > old) == (better == HIGHER) else " (worse)"


WORSE = {(PASSED, FAILED), (PASSED, INCONCLUSIVE), (INCONCLUSIVE, FAILED)}


def show(value) -> str:
    return f"{value:.4g}" if is_number(value) else "missing" if value is MISSING else json.dumps(value)


def compare(old: list[dict], new: list[dict]) -> tuple[list[str], list[str]]:
    """(every change, the regressions among them: a row that got worse, a measured number that was lost)."""
    before = {record_key(r): r for r in old}
    after = {record_key(r): r for r in new}
    lines, regressions = [], []
    for key in sorted(set(before) | set(after)):
        label = "/".join(part for part in key if part)
        a, b = before.get(key), after.get(key)
        if a is None:
            lines.append(f"+ {label}: new row, {b['outcome']}")
            continue
        if b is None:
            lines.append(f"- {label}: row gone (was {a['outcome']})")
            continue
        if a["outcome"] != b["outcome"]:
            lines.append(f"! {label}: {a['outcome']} -> {b['outcome']}" + (f" ({b['reason']})" if b["reason"] else ""))
            if (a["outcome"], b["outcome"]) in WORSE:
                regressions.append(lines[-1])
        for name in sorted(set(a["metrics"]) | set(b["metrics"])):
            old_value, new_value = a["metrics"].get(name, MISSING), b["metrics"].get(name, MISSING)
            if old_value is MISSING and new_value is MISSING or not moved(name, old_value, new_value):
                continue
            lines.append(f"~ {label}: {name} {show(old_value)} -> {show(new_value)}{direction(name, old_value, new_value)}")
            if lost(old_value, new_value):
                regressions.append(lines[-1])
    return lines, regressions


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m sentinel_reports diff", description=__doc__)
    parser.add_argument("old", help="results file or folder before")
    parser.add_argument("new", help="results file or folder after")
    parser.add_argument("--fail-on-regression", action="store_true",
                        help="exit 1 when a row got worse (passed -> failed or inconclusive) or a measured number "
                             "became NaN, infinite or null (for CI)")
    args = parser.parse_args(argv)
    try:
        # a number that became NaN is the regression diff is for: those records are kept here
        lines, regressions = compare(load_results([args.old], page=False),
                                     load_results([args.new], page=False))
    except RecordError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines) if lines else "no status changes and no metric moved past its threshold")
    if regressions and args.fail_on_regression:
        print(f"error: {len(regressions)} regression(s)", file=sys.stderr)
        return 1
    return 0
