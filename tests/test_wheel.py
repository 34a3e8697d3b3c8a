"""The package as a user installs it: a wheel built from the repo carries the catalog, the Wikipedia sample
and the report's templates, and, installed into a fresh venv, checks a tiny model and renders its report
from a folder outside the repository."""

import pytest
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

OUTSIDE = textwrap.dedent("""
    import json, os, pathlib, sys
    import sentinel_matrix, sentinel_reports, sentinel_core
    venv = pathlib.Path(sys.prefix).resolve()
    for package in (sentinel_matrix, sentinel_reports, sentinel_core):  # the wheel's copy, never the checkout's
        assert venv in pathlib.Path(package.__file__).resolve().parents, package.__file__

    from sentinel_matrix import evidence, records
    from sentinel_matrix.catalog import load_catalog
    from sentinel_matrix.checks import check_infer, check_load, check_quality, load_pair
    from sentinel_matrix.sources import synthetic_checkpoint, wikipedia_text

    assert len(wikipedia_text()) > 100_000
    entry = next(e for e in load_catalog() if e.id == "tiny/gpt2")
    pair = load_pair(synthetic_checkpoint(entry), "cpu", "float32")

    def traced(check, pair):  # as the matrix's rows record what they ran (sentinel_matrix/evidence.py)
        global depends
        with evidence.TRACER.scope() as files:
            metrics = check(pair)
        assert any(name.startswith("sentinel_matrix/checks/") for name in files[0]), files
        depends = evidence.depends(files, entry.table_hash)
        return metrics
    with open("results.jsonl", "w") as out:
        for name, check in (("load", check_load), ("infer", check_infer), ("quality", check_quality)):
            out.write(json.dumps({"family": entry.family, "model": entry.id, "weights": "synthetic", "check": name,
                                  "device": "cpu", "dtype": "float32", "outcome": "passed", "reason": "",
                                  "metrics": traced(check, pair), "env": records.environment("cpu", depends), "time": records.now(),
                                  "duration_s": 0.0, "synthetic_layers": None}) + "\\n")
    print("checked", entry.id)
""")


def run(command, **kw):
    done = subprocess.run(command, capture_output=True, text=True, **kw)
    assert done.returncode == 0, f"{command}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done


@pytest.mark.end_to_end
def test_the_wheel_installs_and_checks_a_tiny_model_outside_the_repo(tmp_path):
    # From a copy of the sources alone: setuptools would reuse a checkout's stale build/ folder.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__",
                                                                 "results", ".tox", ".venv", "gpu_assets"))
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source), "-w",
         str(tmp_path / "dist")])
    wheel = next((tmp_path / "dist").glob("sentinel_hf-*.whl"))
    # torch and transformers come from this interpreter (a venv cannot download them offline); Sentinel
    # itself only from the wheel.
    run([sys.executable, "-m", "venv", "--system-site-packages", str(tmp_path / "venv")])
    python = str(tmp_path / "venv" / "bin" / "python")
    run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)])
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "SENTINEL_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    assert "checked tiny/gpt2" in run([python, "-c", OUTSIDE], cwd=outside, env=env).stdout
    run([python, "-m", "sentinel_reports", "results.jsonl", "--output", "page.md", "--html", "report.html"], cwd=outside, env=env)
    page = (outside / "page.md").read_text()
    assert "tiny/gpt2" in page and "GPT2LMHeadModel" in page
    assert "<svg" in (outside / "report.html").read_text()
    # The command line's matrix run from the installed package: its options come from sentinel_matrix/plugin.py.
    done = run([python, "-m", "sentinel_cli", "check", "tiny/gpt2", "--checks", "load", "--results",
                "check.jsonl"], cwd=outside, env=env)
    assert "1 passed" in done.stdout and (outside / "check.jsonl").is_file()
    # Without a path, records and pages go to the working folder, never into the install.
    site = Path(run([python, "-c", "import sentinel_core, pathlib; print(pathlib.Path(sentinel_core.__file__)"
                                   ".parent.parent)"], cwd=outside, env=env).stdout.strip())  # not the checkout's
    assert (site / "sentinel_core").is_dir() and tmp_path / "venv" in site.parents, site

    def installed_files():
        return {p for p in site.rglob("*") if p.is_file() and "__pycache__" not in p.parts}

    before = installed_files()
    run([python, "-m", "sentinel_cli", "check", "tiny/gpt2", "--checks", "load"], cwd=outside, env=env)
    run([python, "-m", "sentinel_cli", "report", "--html", "only.html"], cwd=outside, env=env)
    assert installed_files() == before, sorted(map(str, installed_files() - before))
    # Every top-level name the wheel claims in site-packages is Sentinel's own: no `matrix`, no `reports`.
    record = next(site.glob("sentinel_hf-*.dist-info/RECORD")).read_text()
    top_level = {line.split("/")[0] for line in record.splitlines()
                 if line and not line.startswith("..") and ".dist-info/" not in line}  # ../bin/sentinel: the script
    assert top_level and all(name.startswith("sentinel_") for name in top_level), top_level
    assert (outside / "results" / "latest.jsonl").is_file() and (outside / "only.html").is_file()
    assert not (outside / "SUPPORTED_MODELS.md").exists()  # --html alone writes that file and nothing else
