"""The status rules, in one place. A status is only what a test measured, with the code as it is now.

Evidence. A record counts only if it ran (not skipped) and is *current*: every project file its row ran or read,
and its catalog entry, are as they were when it ran (`env.depends`, sentinel_matrix/evidence.py), in the tree the report
renders in. A *stale* record (one of them changed, or a record from before rows were keyed) is still shown,
marked ⏳, with what changed, but is evidence neither way: a stale pass is no pass and a stale failure is no failure, until the row runs again. An
*inconclusive* record (a quality row whose HF reference distribution is degenerate, so agreement with
it says nothing) is current but neither a pass nor a failure.

  ✅  every status check (load, infer, quality) passes, current, on real weights (hub or package) on one device
  🧪  every status check passes on one device, but on synthetic weights only (the real config, random values)
  ⚠️  partial: some status checks pass (current), not all of them on one device
  ❌  a current record of a status check fails
  ◻️  inconclusive: the only current evidence is inconclusive
  ⏳  stale: the only evidence was measured by other code (shown, never counted)
  ❔  untested: no record, or only skipped rows

A cell (one check on one device), a model and a family take the first of ❌ ✅ 🧪 ⚠️ ◻️ ⏳ ❔ that applies;
a family's status is the first that one of its models has. Only the checks that decide a status
(sentinel_matrix/registry.py: load, infer, quality) do; bench and mutation rows are reported beside it (a failed
mutation row, a missed mutant, is a known issue).
"""

from __future__ import annotations

from sentinel_matrix import registry
from sentinel_matrix.catalog import entry_hashes
from sentinel_matrix.evidence import stale_reason as _stale_reason
from sentinel_core.names import FAILED, PASSED, REAL_WEIGHTS, SKIPPED

PASS, SYNTHETIC, PARTIAL, FAIL, INCONCLUSIVE, STALE, UNTESTED = "✅", "🧪", "⚠️", "❌", "◻️", "⏳", "❔"
PRECEDENCE = (FAIL, PASS, SYNTHETIC, PARTIAL, INCONCLUSIVE, STALE, UNTESTED)
# Each status as a word beside its mark, so a page reads without an emoji font.
LABEL = {FAIL: "fail", PASS: "pass", SYNTHETIC: "synthetic only", PARTIAL: "partial", INCONCLUSIVE: "inconclusive",
         STALE: "stale", UNTESTED: "untested"}
MEANING = {FAIL: "failing", PASS: "verified on real weights", SYNTHETIC: "passes on synthetic weights only",
           PARTIAL: "partial",
           INCONCLUSIVE: "inconclusive", STALE: "stale evidence only", UNTESTED: "untested"}


def labelled(mark: str) -> str:
    """The mark and its word, kept on one line (no-break spaces): a narrow status column never wraps it."""
    return f"{mark}\u00a0{LABEL[mark].replace(' ', chr(0xA0))}" if mark in LABEL else mark


def stale_reason(record: dict) -> str | None:
    """What changed since the record's row ran (None: it is current; see the module docstring)."""
    return _stale_reason(record, current_entry_hash=lambda model: entry_hashes().get(model))


def is_current(record: dict) -> bool:
    return stale_reason(record) is None


def _ran(records: list[dict]) -> list[dict]:
    return [r for r in records if r["outcome"] != SKIPPED]


def _status(ran: list[dict], complete) -> str:
    """The rules over records that ran; `complete(passes)` says whether those current passes make the whole
    thing pass (a cell: any pass; a model: every status check on one device)."""
    current = [r for r in ran if is_current(r)]
    if any(r["outcome"] == FAILED for r in current):
        return FAIL
    passed = [r for r in current if r["outcome"] == PASSED]
    if complete([r for r in passed if r["weights"] in REAL_WEIGHTS]):
        return PASS
    if complete(passed):
        return SYNTHETIC
    if passed:
        return PARTIAL
    if current:
        return INCONCLUSIVE
    return STALE if ran else UNTESTED


def cell_status(records: list[dict]) -> str:
    """One check of one model on one device, over all weight sources."""
    return _status(_ran(records), bool)


def model_status(records: list[dict]) -> str:
    """A model over all its status checks, devices and weight sources."""
    def every_check_on_one_device(passed: list[dict]) -> bool:
        return any(set(registry.status_names()) <= {r["check"] for r in passed if r["device"] == device}
                   for device in {r["device"] for r in passed})

    return _status(_ran([r for r in records if r["check"] in registry.status_names()]), every_check_on_one_device)


def family_status(model_statuses: list[str]) -> str:
    return next((s for s in PRECEDENCE if s in model_statuses), UNTESTED)
