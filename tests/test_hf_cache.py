"""--cache-budget-gb (sentinel_matrix/hf_cache.py) on a temporary HF_HOME: a revision that was cached before the run
is kept, one the run brought is deleted while the cache is over budget, and the row's record says what went."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cache_model(hub: Path, repo: str, commit: str, size: int) -> None:
    """A model as huggingface_hub caches it: a blob, a snapshot linking to it, refs/main."""
    folder = hub / f"models--{repo.replace('/', '--')}"
    (folder / "blobs").mkdir(parents=True)
    (folder / "blobs" / f"blob-{commit}").write_bytes(b"\0" * size)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(folder / "blobs" / f"blob-{commit}")
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    return home / "hub"


def test_only_what_the_run_brought_is_evicted(hf_home):
    from sentinel_matrix.hf_cache import CacheBudget

    cache_model(hf_home, "org/before", "a" * 40, 3_000_000)
    budget = CacheBudget.start(0.001, evict_preexisting=False)  # 1 MB: both models are over it
    cache_model(hf_home, "org/downloaded", "b" * 40, 2_000_000)
    evicted = budget.enforce()
    assert [e["repo"] for e in evicted] == ["org/downloaded"] and not evicted[0]["preexisting"]
    assert (hf_home / "models--org--before" / "snapshots" / ("a" * 40)).is_dir()
    assert not (hf_home / "models--org--downloaded" / "snapshots" / ("b" * 40)).exists()
    assert budget.enforce() == []  # still over budget, and nothing of this run's is left to delete


def test_preexisting_revisions_go_only_when_asked(hf_home):
    from sentinel_matrix.hf_cache import CacheBudget

    cache_model(hf_home, "org/before", "a" * 40, 3_000_000)
    assert CacheBudget.start(0.001, evict_preexisting=False).enforce() == []
    evicted = CacheBudget.start(0.001, evict_preexisting=True).enforce()
    assert evicted[0]["repo"] == "org/before" and evicted[0]["preexisting"]


def test_within_budget_nothing_is_deleted(hf_home):
    from sentinel_matrix.hf_cache import CacheBudget

    budget = CacheBudget.start(1.0, evict_preexisting=True)
    cache_model(hf_home, "org/downloaded", "b" * 40, 2_000_000)
    assert budget.enforce() == []


@pytest.mark.end_to_end
def test_the_matrix_records_the_eviction_on_the_models_last_row(tmp_path):
    home = tmp_path / "hf"
    cache_model(home / "hub", "org/before", "a" * 40, 3_000_000)
    results = tmp_path / "rows.jsonl"
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "matrix/", "--models", "tiny/gpt2", "--checks", "load,infer",
                           "--cache-budget-gb", "0", "--evict-preexisting", "--results", str(results), "-q",
                           "-p", "no:randomly", "-p", "no:cacheprovider"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-1000:]
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert "hf_cache_evicted" not in rows[0]["metrics"]  # the model's first row: its rows are not done
    assert rows[-1]["metrics"]["hf_cache_evicted"][0]["repo"] == "org/before"


def test_a_negative_budget_or_a_lone_evict_flag_is_a_usage_error():
    from types import SimpleNamespace

    from sentinel_matrix.hf_cache import configure

    for budget, evict, says in ((-1.0, False, "0 or more"), (None, True, "give the budget")):
        options = {"--cache-budget-gb": budget, "--evict-preexisting": evict}
        config = SimpleNamespace(getoption=options.get, stash={})
        with pytest.raises(pytest.UsageError, match=says):
            configure(config)
