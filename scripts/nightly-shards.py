"""The nightly GPU job's shards, from the catalog: one per family, and one "large" shard for the models past
LARGE_PARAMS (13B, 70B), which run placed across the runner's GPUs and CPU (--device-map auto) with the HF cache kept
under a budget, and which the family shards leave out. Prints the GitHub Actions matrix as JSON:
[{"name": ..., "args": pytest arguments, "workers": "gpus" (one xdist worker per GPU) or "1"}, ...]."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentinel_matrix.catalog import family_architectures, load_catalog  # noqa: E402

LARGE_PARAMS = 10e9
CACHE_BUDGET_GB = 300


def shards() -> list[dict]:
    entries = load_catalog()
    large = [e for e in entries if e.size_in_params() > LARGE_PARAMS]
    out = []
    for family in sorted(family_architectures()):
        skip = [e.id.split("/")[-1] for e in large if e.family == family]  # as it appears in row ids
        args = ["--families", family] + (["-k", " and ".join(f"not {slug}" for slug in skip)] if skip else [])
        out.append({"name": family, "args": shlex.join(args), "workers": "gpus"})
    if large:
        out.append({"name": "large", "args": shlex.join(["--models", ",".join(e.id for e in large), "--device-map",
                                                         "auto", "--cache-budget-gb", str(CACHE_BUDGET_GB)]),
                    "workers": "1"})  # one process places each model across every GPU
    return out


if __name__ == "__main__":
    print(json.dumps(shards()))
