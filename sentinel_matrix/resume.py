"""`--skip-current`: leave out the rows whose verdict at this tree is already recorded, so a run that was cut short
(a lent GPU taken back, a session's time spent) resumes where it stopped instead of measuring everything again.

A row counts as done when a pass, failure or inconclusive record of it (same model, weights, check, device and dtype)
is current (sentinel_matrix/evidence.py: every file it ran and read, and its catalog entry, unchanged), in the
--results file or in the committed results folder the page renders from. Skips and machine faults are no verdict, so
those rows run again. Hub weights never count as done: a hub checkpoint can change under its id, which only loading it
would tell.
"""

from __future__ import annotations

import json
from pathlib import Path

from sentinel_core.names import FAILED, INCONCLUSIVE, PACKAGE, PASSED, SYNTHETIC
from sentinel_matrix.catalog import entry_hashes
from sentinel_matrix.evidence import stale_reason
from sentinel_matrix.records import RESULTS_DIR

VERDICTS = (PASSED, FAILED, INCONCLUSIVE)
FIXED_WEIGHTS = (SYNTHETIC, PACKAGE)  # weights the tree decides (the catalog's config, a pinned package)


def add_options(parser) -> None:
    parser.getgroup("sentinel matrix").addoption(
        "--skip-current", action="store_true",
        help="leave out rows whose pass, failure or inconclusive verdict at this tree is already recorded (in "
             "--results or the committed results folder): a run cut short resumes where it stopped")


def row_key(model: str, weights: str, check: str, device: str, dtype: str) -> tuple:
    return (model, weights, check, device, dtype)


def done_rows(paths: list[Path]) -> set[tuple]:
    """The rows with a current verdict among the records of `paths` (JSONL files; folders: their *.jsonl)."""
    files = [f for p in paths for f in (sorted(p.glob("*.jsonl")) if p.is_dir() else [p] if p.is_file() else [])]
    hashes = entry_hashes()
    done = set()
    for path in dict.fromkeys(files):
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
                key = row_key(record["model"], record["weights"], record["check"], record["device"], record["dtype"])
            except (ValueError, KeyError, TypeError):
                continue  # a torn or foreign line is no verdict (the report names it when it renders)
            if key in done or record.get("outcome") not in VERDICTS or record["weights"] not in FIXED_WEIGHTS:
                continue
            if stale_reason(record, current_entry_hash=hashes.get) is None:
                done.add(key)
    return done


def deselect_current(config, items, row_of, dtype_of) -> None:
    """Drop from `items` (in place) the rows already done; `row_of(item)` is its matrix Row or None, `dtype_of(row)`
    the dtype it runs in."""
    done = done_rows([Path(config.getoption("--results")), RESULTS_DIR])
    keep, drop = [], []
    for item in items:
        row = row_of(item)
        key = row and row_key(row.entry.id, row.weights, row.check, row.device, dtype_of(row))
        (drop if key in done else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
