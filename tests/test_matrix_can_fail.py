"""The matrix can fail: a converter with two weights swapped makes `quality` fail, naming the difference."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_matrix(tmp_path, *extra):
    results = tmp_path / "rows.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{ROOT / 'tests' / 'plugins'}{os.pathsep}{ROOT}",
           "SENTINEL_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "matrix/", "--models", "tiny/opt", "--weights",
                           "synthetic", "--results", str(results), "-q", *extra],
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
    # The load check cannot see a swap of two same-shaped weights; quality must.
    assert all(r["outcome"] == "passed" for r in rows if r["check"] == "load")


def test_same_rows_pass_with_the_real_converter(tmp_path):
    proc, rows = run_matrix(tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert {r["check"] for r in rows} == {"load", "infer", "quality"}
    assert len(rows) == 6 and all(r["outcome"] == "passed" for r in rows)  # tiny/opt and tiny/opt-post-ln
