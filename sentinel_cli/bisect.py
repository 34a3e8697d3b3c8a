"""`sentinel bisect MODEL --check CHECK [--good V] [--bad V]`: the first transformers release where a matrix row's
outcome flips, found by running the row in each release's cached environment (sentinel_matrix/versions.py).

It prints the release, the two records either side and the metrics that moved between them. torch is not a
dimension: every environment shares this interpreter's torch, so a flip is transformers' (or its tokenizers'
and huggingface-hub's, which each release brings along).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Callable

from .common import add_option, parse

HELP = "find the first transformers release where a model's matrix row flips (installs releases into cached envs)"


class BisectError(ValueError):
    """Bisection cannot start: the named ends do not differ, or are not releases of the list."""


GOOD, BAD, SKIP = "good", "bad", "skip"


def first_bad(releases: list[str], verdict: Callable[[str], str]) -> tuple[str, str, list[str]]:
    """(last good, first bad, skipped between them) of `releases` (oldest first; the first good, the last bad): a
    binary search asking `verdict` (GOOD, BAD or SKIP: the row could not tell) about each release at most once. A
    skipped release is dropped, as git bisect skip does; when skipped ones sit between the answer's two releases,
    the flip is at one of them or at the first bad one."""
    if len(releases) < 2:
        raise BisectError("bisect needs a good release and a later bad one")
    span = list(releases)
    low, high = 0, len(span) - 1  # invariant: span[low] good, span[high] bad
    while high - low > 1:
        middle = (low + high) // 2
        answer = verdict(span[middle])
        if answer == SKIP:
            del span[middle]
            high -= 1
        elif answer == GOOD:
            low = middle
        else:
            high = middle
    between = releases[releases.index(span[low]) + 1:releases.index(span[high])]
    return span[low], span[high], between


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sentinel bisect", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=_model_argument,
                   help="a catalog id, a local folder or a .gguf file (as `sentinel check` takes)")
    add_option(p, "--check", required=True, help="the matrix check whose outcome flips (load, infer, quality, ...)")
    add_option(p, "--good", default=None, help="a release where the row passes (default: the oldest listed)")
    add_option(p, "--bad", default=None, help="a later release where it does not (default: the newest listed)")
    add_option(p, "--weights", default="synthetic", help="weight source of the row (default synthetic)")
    add_option(p, "--releases", default=None,
               help="comma-separated releases to search, oldest first (default: every newest patch of each minor "
                    "from 4.57, as the package index lists them)")
    return p


def _model_argument(model: str) -> str:
    """A local folder or file as an absolute path (the rows run in the checkout); any other name as it is."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def run_row(release: str, args, workdir: Path) -> dict:
    """The row's record under `release` (its environment made on first use)."""
    from sentinel_matrix import versions

    results = workdir / f"transformers-{release}.jsonl"
    versions.run_rows(release, ["--models", args.model, "--checks", args.check, "--weights", args.weights], results)
    records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()] \
        if results.is_file() else []
    if not records:
        return {"outcome": "error", "reason": "the row recorded nothing", "metrics": {}}
    return records[-1]


def main(argv=None) -> int:
    args = parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    from sentinel_matrix import versions

    try:
        releases = [r.strip() for r in args.releases.split(",") if r.strip()] if args.releases else \
            versions.available_releases()
    except versions.InstallError as exc:
        print(f"error: {exc}: name the releases with --releases", file=sys.stderr)
        return 2
    good = args.good or releases[0]
    bad = args.bad or releases[-1]
    if good not in releases or bad not in releases or releases.index(good) >= releases.index(bad):
        print(f"error: --good {good} and --bad {bad} must be releases of the list, the good one older: "
              f"{', '.join(releases)}", file=sys.stderr)
        return 2
    span = releases[releases.index(good):releases.index(bad) + 1]
    seen: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        def record(release: str) -> dict:
            if release not in seen:
                try:
                    seen[release] = run_row(release, args, Path(tmp))
                except versions.InstallError as exc:
                    seen[release] = {"outcome": "error", "reason": f"cannot install: {exc}", "metrics": {}}
                print(f"transformers {release}: {seen[release]['outcome']}", file=sys.stderr, flush=True)
            return seen[release]

        def verdict(release: str) -> str:  # a failed row is bad; a skip or an error tells nothing
            outcome = record(release)["outcome"]
            return GOOD if outcome == "passed" else BAD if outcome == "failed" else SKIP

        if record(good)["outcome"] != "passed":
            print(f"error: the row does not pass under --good {good} ({record(good)['outcome']}: "
                  f"{record(good).get('reason', '')}): name a release where it passes", file=sys.stderr)
            return 2
        if record(bad)["outcome"] != "failed":
            print(f"error: the row does not fail under --bad {bad} ({record(bad)['outcome']}): name a release where "
                  f"it fails", file=sys.stderr)
            return 2
        last_good, first_bad_release, skipped = first_bad(span, verdict)
    before, after = seen[last_good], seen[first_bad_release]
    print(f"first bad release: transformers {first_bad_release} (last good: {last_good})")
    if skipped:
        print(f"  untestable between them: {', '.join(skipped)} (the flip may be at one of those)")
    print(f"  {last_good}: {before['outcome']}")
    print(f"  {first_bad_release}: {after['outcome']} — {after.get('reason', '')}")
    for key in sorted(set(before.get("metrics", {})) | set(after.get("metrics", {}))):
        old, new = before.get("metrics", {}).get(key), after.get("metrics", {}).get(key)
        if old != new and not isinstance(old, (dict, list)) and not isinstance(new, (dict, list)):
            print(f"  {key}: {old} -> {new}")
    for line in hf_side_changes(before, after):
        print(line)
    return 0


def hf_side_changes(before: dict, after: dict) -> list[str]:
    """Lines naming what moved on HF's side between two records of a row (metrics.hf_side_quantities), or saying
    that nothing did: a flip with HF's own numbers moving is HF's change."""
    from sentinel_matrix.metrics import hf_side_moved, hf_side_quantities

    old, new = hf_side_quantities(before.get("metrics", {})), hf_side_quantities(after.get("metrics", {}))
    moved = [label for label in sorted(set(old) & set(new)) if hf_side_moved(label, old[label], new[label])]
    if not moved:
        measured = ", ".join(sorted(set(old) & set(new))) or "none measured in both records"
        return [f"  HF's side: nothing the row measures of HF alone moved ({measured})"]
    return [f"  HF's side moved: {label} {old[label]:.3g} -> {new[label]:.3g}" for label in moved]
