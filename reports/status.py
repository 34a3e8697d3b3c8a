"""The status rules, in one place. A status is only what a test measured.

  ✅  every check passes on real weights (hub or package) on at least one device
  ⚠️  partial: some checks pass, or the only evidence is synthetic weights (real geometry, random values)
  ❌  a check fails
  ❔  untested (no record, or only skipped rows)
"""

from __future__ import annotations

PASS, PARTIAL, FAIL, UNTESTED = "✅", "⚠️", "❌", "❔"
REAL_WEIGHTS = ("hub", "package")
CHECKS = ("load", "infer", "quality")


def cell_status(records: list[dict]) -> str:
    """One check of one model on one device, over all weight sources."""
    ran = [r for r in records if r["outcome"] != "skipped"]
    if any(r["outcome"] == "failed" for r in ran):
        return FAIL
    if any(r["weights"] in REAL_WEIGHTS for r in ran):
        return PASS
    if ran:
        return PARTIAL
    return UNTESTED


def model_status(records: list[dict]) -> str:
    """A model over all its checks, devices and weight sources."""
    if any(r["outcome"] == "failed" for r in records if r["check"] in CHECKS):
        return FAIL
    devices = {r["device"] for r in records}
    for device in devices:
        real_pass = {r["check"] for r in records if r["device"] == device and r["outcome"] == "passed"
                     and r["weights"] in REAL_WEIGHTS}
        if set(CHECKS) <= real_pass:
            return PASS
    if any(r["outcome"] == "passed" for r in records if r["check"] in CHECKS):
        return PARTIAL
    return UNTESTED


def family_status(model_statuses: list[str]) -> str:
    if FAIL in model_statuses:
        return FAIL
    if PASS in model_statuses:
        return PASS
    if PARTIAL in model_statuses:
        return PARTIAL
    return UNTESTED
