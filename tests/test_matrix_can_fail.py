"""The matrix run as users run it: it can fail (a converter with two weights swapped makes `quality`
fail, naming the difference), goes on after an out-of-memory error, loses no finished row when the
process dies, and writes whole lines under pytest-xdist."""

import pytest
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAKE_TOKEN = "hf_sentinelTestTokenNeverWritten"


def run_matrix(tmp_path, *extra, models="tiny/opt*", checks="load,infer,quality"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    results = tmp_path / "rows.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{ROOT / 'tests' / 'plugins'}{os.pathsep}{ROOT}",
           "SENTINEL_CACHE": str(tmp_path / "cache"), "HF_TOKEN": FAKE_TOKEN}
    proc = subprocess.run([sys.executable, "-m", "pytest", "matrix/", "--models", models, "--weights",
                           "synthetic", "--checks", checks, "--results", str(results), "-q", *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    rows = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    return proc, rows


def test_swapped_weights_fail_quality_with_the_difference_named(tmp_path):
    proc, rows = run_matrix(tmp_path, "-p", "swap_two_weights")
    assert proc.returncode == 1, proc.stdout[-2000:]
    quality = [r for r in rows if r["check"] == "quality"]
    assert quality and all(r["outcome"] == "failed" for r in quality)
    for r in quality:
        assert "max |Δ log p|" in r["reason"] and "adaptive differs from HF (float32)" in r["reason"], r["reason"]
        assert r["metrics"]["max_logprob_diff"] > 1e-2 and r["metrics"]["grade"] == "Poor"  # numbers kept
    # The load check cannot see a swap of two same-shaped weights; quality must.
    assert all(r["outcome"] == "passed" for r in rows if r["check"] == "load")


def test_a_conversion_rounding_through_bf16_fails_the_synthetic_quality_row(tmp_path):
    proc, rows = run_matrix(tmp_path, "-p", "round_through_bf16", models="tiny/opt", checks="quality")
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert [r["outcome"] for r in rows] == ["failed"], rows
    assert rows[0]["metrics"]["max_logprob_diff"] > 1e-3, rows[0]["metrics"]


def test_an_error_in_mask_derived_positions_fails_the_quality_row(tmp_path):
    proc, rows = run_matrix(tmp_path, "-p", "mask_positions_ignored", models="tiny/opt", checks="quality")
    assert proc.returncode == 1, proc.stdout[-2000:]
    (row,) = rows
    assert row["outcome"] == "failed" and "called as HF users do" in row["reason"], row["reason"]
    assert row["metrics"]["max_logprob_diff"] < 1e-4 < row["metrics"]["hf_call_max_logprob_diff"]  # only that call


def test_same_rows_pass_with_the_real_converter(tmp_path):
    proc, rows = run_matrix(tmp_path, checks="load,infer,quality,mutation")
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert {r["check"] for r in rows} == {"load", "infer", "quality", "mutation"}
    assert len(rows) == 8 and all(r["outcome"] == "passed" for r in rows)  # tiny/opt and tiny/opt-post-ln
    for r in rows:  # every record says which code produced it
        assert len(r["env"]["fingerprint"]) == 16 and r["env"]["git_sha"], r["env"]
        assert "sentinel_core/families/opt.py" in r["env"]["depends"]["code"], r["env"]["depends"]
    for r in (r for r in rows if r["check"] == "mutation"):
        assert r["metrics"]["mutation_score"]["missed"] == [] and r["metrics"]["mutation_score"]["caught"] >= 6
    assert FAKE_TOKEN not in (tmp_path / "rows.jsonl").read_text()  # tokens never reach the records


@pytest.mark.end_to_end
def test_out_of_memory_is_not_a_verdict_and_the_run_goes_on(tmp_path):
    proc, rows = run_matrix(tmp_path, "-p", "oom_on_post_ln")
    assert proc.returncode == 1
    oom = [r for r in rows if r["model"] == "tiny/opt-post-ln"]
    assert len(oom) == 3 and all(r["outcome"] == "error" and r["reason"].startswith("could not finish: device memory")
                                 for r in oom), [r["reason"] for r in oom]
    assert all(r["outcome"] == "passed" for r in rows if r["model"] == "tiny/opt") and len(rows) == 6


@pytest.mark.end_to_end
def test_a_machine_fault_is_recorded_as_an_error_and_the_page_keeps_the_earlier_pass(tmp_path):
    """SENTINEL_CACHE is a file: no checkpoint can be made. The rows say the machine stopped them; the page's cell
    keeps the earlier pass and lists the run apart."""
    from sentinel_reports.load import merge
    from sentinel_reports.render import render_markdown

    blocked = tmp_path / "cache-file"
    blocked.write_text("not a folder")
    results = tmp_path / "rows.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SENTINEL_CACHE": str(blocked)}
    subprocess.run([sys.executable, "-m", "pytest", "matrix/", "--models", "tiny/gpt2", "--weights", "synthetic",
                    "--checks", "load", "--devices", "cpu", "--results", str(results), "-q", "-p", "no:cacheprovider"],
                   cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert rows and all(r["outcome"] == "error" and r["reason"].startswith("could not finish: ") for r in rows), rows
    # the same row as an earlier run passed it (a day before, the same code)
    earlier = [{**r, "outcome": "passed", "reason": "", "time": "2026-12-01T00:00:00+00:00"} for r in rows]
    merged = merge(earlier + rows)
    assert {r["outcome"] for r in merged} == {"passed", "error"}
    page = render_markdown(merged)
    assert "## Runs that could not finish" in page and "tiny/gpt2 (synthetic, load, cpu fp32" in page
    row = next(line for line in page.splitlines() if line.startswith("| tiny/gpt2 "))
    assert "❌" not in row and "fail" not in row and ("🧪" in row or "partial" in row), row  # the load row counts


@pytest.mark.end_to_end
def test_a_crash_keeps_every_finished_row(tmp_path):
    proc, rows = run_matrix(tmp_path, "-p", "crash_after_two_rows")
    assert proc.returncode == 3
    assert len(rows) == 2 and all(r["outcome"] == "passed" for r in rows)


@pytest.mark.end_to_end
def test_xdist_workers_write_whole_lines(tmp_path):
    # Four models' rows spread over two workers that append to one file at once (the default matrix run
    # already covers every tiny entry, one process).
    proc, rows = run_matrix(tmp_path, "-n", "2", "--dist", "loadgroup", models="tiny/gpt2,tiny/opt,tiny/bloom,tiny/llama")
    assert proc.returncode == 0, proc.stdout[-2000:]
    expected = 3 * 4  # load, infer, quality of each
    assert len(rows) == expected and len({(r["model"], r["check"]) for r in rows}) == expected
