"""Which code measured a record: commit, dirty flag and source hash, with and without git."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from sentinel_matrix import records

ROOT = records.ROOT


def copy_without_git(tmp_path):
    """The repository as it is shipped to a GPU machine: sources, no .git, caches that must not count."""
    for folder in records.SOURCE_FOLDERS:
        shutil.copytree(records.ROOT / folder, tmp_path / folder)
    cache = tmp_path / "sentinel_matrix" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "stray.py").write_text("x = 1\n")
    return tmp_path


def test_source_hash_is_read_from_the_files_not_git(tmp_path):
    copy = copy_without_git(tmp_path)
    # __wrapped__: uncached, so both hashes see the files as they are now
    assert records.source_hash.__wrapped__(copy) == records.source_hash.__wrapped__(records.ROOT)
    assert len(records.source_hash.__wrapped__(copy)) == 16
    (copy / "sentinel_matrix" / "records.py").write_text((copy / "sentinel_matrix" / "records.py").read_text() + "\n")
    assert records.source_hash.__wrapped__(copy) != records.source_hash.__wrapped__(records.ROOT)


def test_a_copy_names_the_commit_stamped_for_its_own_sources(tmp_path):
    copy = copy_without_git(tmp_path)
    assert records.git_sha.__wrapped__(copy) is None and records.git_dirty.__wrapped__(copy) is None
    sha = "e817ab4fead844915a6ebbb6c5230e91f1e7de71"
    (copy / records.COMMIT_FILE).write_text(f"{sha} {records.source_hash.__wrapped__(copy)}\n")
    assert records.git_sha.__wrapped__(copy) == sha and records.git_dirty.__wrapped__(copy) is False
    # The GPU machine's copy sits on the landed main's .git: the stamp, which describes these sources, wins.
    subprocess.run(["git", "init", "-q", str(copy)], check=True)
    subprocess.run(["git", "-C", str(copy), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "another commit"], check=True)
    assert records.git_sha.__wrapped__(copy) == sha and records.git_dirty.__wrapped__(copy) is False
    # A stamp of other sources (the code changed after stamping) names nothing; there, git's HEAD is the commit.
    (copy / records.COMMIT_FILE).write_text(f"{sha} 0123456789abcdef\n")
    assert records.git_sha.__wrapped__(copy) not in (None, sha)
    shutil.rmtree(copy / ".git")
    assert records.git_sha.__wrapped__(copy) is None


def test_environment_names_the_code():
    from sentinel_matrix import evidence

    depends = evidence.depends(({"sentinel_matrix/records.py"}, set()), "abc")
    env = records.environment("cpu", depends)
    assert env["depends"]["code"]["sentinel_matrix/records.py"] == evidence.content_hash((records.ROOT / "sentinel_matrix/records.py").read_bytes())
    assert env["fingerprint"] == evidence.fingerprint(depends)
    if (records.ROOT / ".git").exists():
        assert len(env["git_sha"]) == 40 and isinstance(env["git_dirty"], bool)


@pytest.mark.end_to_end
def test_kill_9_mid_run_loses_no_finished_row(tmp_path):
    """A matrix run killed outright (OOM killer, a cancelled CI job) keeps every row it finished, whole."""
    results = tmp_path / "rows.jsonl"
    command = [sys.executable, "-m", "pytest", "matrix/", "--models", "tiny/gpt2", "--devices", "cpu",
               "--checks", "load,infer,quality,mutation", "--results", str(results), "-q", "-p", "no:cacheprovider"]
    run = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and run.poll() is None and not (results.exists() and results.read_text()):
        time.sleep(0.02)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert rows and all(row["model"] == "tiny/gpt2" and row["outcome"] in {"passed", "failed", "skipped"} for row in rows)


def test_a_torn_tail_never_costs_the_next_row(tmp_path):
    """A run that died mid-write (a full disk) left half a record: the report reads the rest, saying so, and the
    next record gets a line of its own; the fragment is kept aside."""
    import warnings

    from sentinel_reports.load import read_records

    results = tmp_path / "rows.jsonl"
    whole = {"family": "gpt2", "model": "tiny/gpt2", "weights": "synthetic", "check": "load", "device": "cpu",
             "dtype": "float32", "outcome": "passed", "reason": "", "metrics": {}, "env": {},
             "time": "2026-12-06T00:00:00+00:00"}
    records.append_record(results, whole)
    with open(results, "a") as f:
        f.write(json.dumps({**whole, "check": "infer"})[:40])  # the disk filled here
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [r["check"] for r in read_records(results)] == ["load"]
        records.append_record(results, {**whole, "check": "quality"})
    assert any("cut short" in str(w.message) for w in caught)
    assert [r["check"] for r in read_records(results)] == ["load", "quality"]
    assert (tmp_path / "rows.jsonl.torn").read_text() == json.dumps({**whole, "check": "infer"})[:40] + "\n"


def test_a_failed_write_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    results = tmp_path / "rows.jsonl"
    records.append_record(results, {"model": "a", "check": "load"})
    before = results.read_bytes()

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(records.os, "fsync", full_disk)
    with pytest.raises(records.RecordWriteError, match="No space left on device.*the file is as it was"):
        records.append_record(results, {"model": "b", "check": "infer"})
    assert results.read_bytes() == before


def test_a_held_lock_times_out_naming_the_lock(tmp_path, monkeypatch):
    from filelock import FileLock

    results = tmp_path / "rows.jsonl"
    monkeypatch.setattr(records, "LOCK_TIMEOUT_S", 0.2)
    held = FileLock(f"{results}.lock")
    held.acquire()
    try:
        done = subprocess.run([sys.executable, "-c", "import sys; from sentinel_matrix import records; records.LOCK_TIMEOUT_S = 0.2; "
                               f"records.append_record({str(results)!r}, {{'model': 'x'}})"],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    finally:
        held.release()
    assert done.returncode != 0 and f"{results}.lock has been held by another process" in done.stderr


def test_a_lock_that_is_a_folder_is_one_clear_error(tmp_path):
    results = tmp_path / "rows.jsonl"
    (tmp_path / "rows.jsonl.lock").mkdir()
    with pytest.raises(records.RecordWriteError, match="cannot lock or open it"):
        records.append_record(results, {"model": "x"})
