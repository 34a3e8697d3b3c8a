"""A disk budget for the Hugging Face cache: `--cache-budget-gb G`. After a model's last row, while the HF cache
(HF_HOME's hub folder, as huggingface_hub's `scan_cache_dir` reads it) holds more than G, the revisions this run
downloaded are deleted (`delete_revisions`), least recently used first; a revision that was in the cache before the
run is kept unless `--evict-preexisting`. That row's record says what was evicted (`hf_cache_evicted`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

BUDGET_KEY = pytest.StashKey["CacheBudget"]()


def _scan():
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        return scan_cache_dir()
    except CacheNotFound:  # nothing cached yet
        return None


@dataclass
class CacheBudget:
    budget_bytes: int
    evict_preexisting: bool = False
    before: set = field(default_factory=set)  # (repo_id, commit) cached when the run started

    @classmethod
    def start(cls, budget_gb: float, evict_preexisting: bool) -> "CacheBudget":
        info = _scan()
        before = {(repo.repo_id, rev.commit_hash) for repo in (info.repos if info else ()) for rev in repo.revisions}
        return cls(int(budget_gb * 1e9), evict_preexisting, before)

    def enforce(self) -> list[dict]:
        """Delete revisions while the cache is over budget; what was deleted, each with its size."""
        info = _scan()
        if info is None or info.size_on_disk <= self.budget_bytes:
            return []
        candidates = sorted(((repo, rev) for repo in info.repos for rev in repo.revisions
                             if self.evict_preexisting or (repo.repo_id, rev.commit_hash) not in self.before),
                            key=lambda pair: pair[0].last_accessed)
        size, chosen = info.size_on_disk, []
        for repo, rev in candidates:
            if size <= self.budget_bytes:
                break
            chosen.append((repo, rev))
            size -= rev.size_on_disk
        if chosen:
            info.delete_revisions(*(rev.commit_hash for _, rev in chosen)).execute()
        return [{"repo": repo.repo_id, "revision": rev.commit_hash, "bytes": rev.size_on_disk,
                 "preexisting": (repo.repo_id, rev.commit_hash) in self.before} for repo, rev in chosen]


def add_options(group) -> None:
    group.addoption("--cache-budget-gb", type=float, default=None,
                    help="after each model's rows, delete the HF cache revisions this run downloaded while the cache "
                         "is over this many GB (the record lists them)")
    group.addoption("--evict-preexisting", action="store_true",
                    help="with --cache-budget-gb, also delete revisions that were cached before the run")


def configure(config) -> None:
    budget = config.getoption("--cache-budget-gb")
    if budget is not None:
        if budget < 0:
            raise pytest.UsageError(f"--cache-budget-gb {budget}: give a size in GB, 0 or more")
        config.stash[BUDGET_KEY] = CacheBudget.start(budget, config.getoption("--evict-preexisting"))
    elif config.getoption("--evict-preexisting"):
        raise pytest.UsageError("--evict-preexisting works with --cache-budget-gb: give the budget too")


def after_model(item, nextitem, metrics: dict) -> None:
    """At the last row of a model (the next row is another model's, or none): enforce the budget, and note in the
    row's metrics what went."""
    budget = item.config.stash.get(BUDGET_KEY, None)
    if budget is None:
        return
    here = _model_key(item)
    if here is None or (nextitem is not None and _model_key(nextitem) == here):
        return
    evicted = budget.enforce()
    if evicted:
        metrics["hf_cache_evicted"] = evicted


def _model_key(item):
    row = getattr(item, "callspec", None) and item.callspec.params.get("row")
    return getattr(row, "model_key", None)
