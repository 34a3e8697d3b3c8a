"""Every check of the matrix, defined once: its name, title, what it runs, whether it runs by default and
whether it decides a model's status. The pytest plugin (row generation, order, --checks), the status rules,
the report's columns and the tests all read this list; adding a check is adding one `Check` here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sentinel_core.names import BENCH, INFER, LOAD, MUTATION, PROFILE, PRUNE, QUALITY


@dataclass(frozen=True)
class Check:
    name: str
    title: str  # the report's column title
    summary: str  # one line: what a pass means
    run: Callable  # run(row, request) -> metrics dict; raises CheckFailed / CheckInconclusive
    default: bool = True  # runs when --checks is not given
    decides_status: bool = True  # part of a model's ✅ / ⚠️ / ❌; else reported beside it
    # Synthetic rows time the real geometry at full depth, loading their own models (bench); others share the
    # loaded HF + adaptive pair of a checkpoint cut to a few layers.
    full_depth: bool = False
    slow_beyond_tiny: bool = False  # rows of non-tiny entries only with --slow or the model named (mutation)


def _load(row, request):
    from sentinel_matrix.checks import check_load

    return check_load(request.getfixturevalue("pair"))


def _infer(row, request):
    from sentinel_matrix.checks import check_infer
    from sentinel_matrix.evidence import memo

    pair = request.getfixturevalue("pair")
    return memo(pair.cache, INFER, lambda: check_infer(pair))  # the mutation row reuses it


def _quality(row, request):
    from sentinel_matrix.checks import check_quality
    from sentinel_matrix.evidence import memo
    from sentinel_matrix.sources import perplexity_text

    pair = request.getfixturevalue("pair")
    if not pair.real_weights:
        return memo(pair.cache, QUALITY, lambda: check_quality(pair))  # the mutation row reuses it
    name, text = perplexity_text()
    return {"ppl_text": name, **check_quality(pair, text=text)}


def _mutation(row, request):
    from sentinel_matrix.checks import check_mutation

    return check_mutation(request.getfixturevalue("pair"))


def _prune(row, request):
    import pytest

    from sentinel_matrix.checks.prune import check_prune, too_slow_here
    from sentinel_matrix.sources import perplexity_text

    if row.weights == "synthetic":
        pytest.skip("pruning curves need trained weights: in random weights no head matters more than another")
    pair = request.getfixturevalue("pair")
    reason = too_slow_here(pair.adaptive, pair.device)
    if reason:
        pytest.skip(reason)
    return check_prune(pair, *perplexity_text())


def _bench(row, request):
    from sentinel_matrix.checks.bench import run_bench

    folder, device, dtype = request.getfixturevalue("bench_folder")
    return run_bench(folder, device, dtype, request.getfixturevalue("benchmark"),
                     compiled=request.config.getoption("--bench-compiled"))


def _profile(row, request):
    import pytest

    from sentinel_matrix.checks.profile import run_profile

    if row.device != "cuda":
        pytest.skip("the profile counts a decode step's CUDA kernels: run it with --devices cuda")
    folder, device, dtype = request.getfixturevalue("bench_folder")
    return run_profile(folder, device, dtype)


CHECKS: list[Check] = [
    Check(LOAD, "Loading", "builds from the checkpoint, every key mapped, parameters = HF + one gate per head", _load),
    Check(INFER, "Inference", "finite outputs; left-padded rows equal the rows alone; the cache equals a full "
                                "forward", _infer),
    Check(QUALITY, "Quality", "log-probs, greedy tokens and perplexity agree with HF eager", _quality),
    Check(MUTATION, "Mutation score", "every injected conversion bug past the fp32 bar fails quality or infer",
          _mutation, decides_status=False, slow_beyond_tiny=True),
    Check(PRUNE, "Head pruning", "perplexity with 0-50% of heads removed in each method's order, and the pruned "
                                   "model's speed (a measurement, never a verdict)", _prune,
          default=False, decides_status=False),
    Check(BENCH, "Benchmarks", "adaptive and HF timed side by side (a measurement, never a verdict)", _bench,
          default=False, decides_status=False, full_depth=True),
    Check(PROFILE, "Decode profile", "a batch-1 decode step's kernels, GPU busy time and share of the bandwidth "
                                     "limit, per decode path (a measurement, never a verdict)", _profile,
          default=False, decides_status=False, full_depth=True),
]


def register(check: Check) -> Check:
    """Add a check (order: the rows of one model run in list order)."""
    if any(c.name == check.name for c in CHECKS):
        raise ValueError(f"a check named {check.name!r} is already registered")
    CHECKS.append(check)
    return check


def by_name(name: str) -> Check:
    return next(c for c in CHECKS if c.name == name)


def names() -> tuple[str, ...]:
    return tuple(c.name for c in CHECKS)


def default_names() -> tuple[str, ...]:
    return tuple(c.name for c in CHECKS if c.default)


def status_names() -> tuple[str, ...]:
    return tuple(c.name for c in CHECKS if c.decides_status)
