"""The CI workflows: every action pinned to a commit, permissions declared, pipefail shells, test reports
uploaded, and the nightly GPU job covering the catalog's families as the catalog lists them."""

import re
from pathlib import Path

import yaml

WORKFLOWS = sorted((Path(__file__).resolve().parents[1] / ".github" / "workflows").glob("*.yml"))


def load(path):
    return yaml.safe_load(path.read_text())


def steps(workflow):
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def test_actions_are_pinned_to_commits_and_permissions_declared():
    assert len(WORKFLOWS) == 2
    for path in WORKFLOWS:
        workflow = load(path)
        assert workflow["permissions"] == {"contents": "read"}, path.name
        assert workflow["defaults"]["run"]["shell"] == "bash", path.name  # -eo pipefail
        for step in steps(workflow):
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]


def test_test_reports_are_uploaded_and_no_registry_host_is_named():
    for path in WORKFLOWS:
        text = path.read_text()
        assert "--junitxml=" in text, path.name
        assert not re.search(r"https?://", text.replace("${{", "")), path.name


def test_nightly_runs_every_catalog_family_and_uploads_the_report():
    nightly = load(next(p for p in WORKFLOWS if p.name == "nightly-gpu.yml"))
    shard = nightly["jobs"]["matrix"]["strategy"]["matrix"]["shard"]
    assert shard == "${{ fromJSON(needs.shards.outputs.list) }}"
    assert "scripts/nightly-shards.py" in nightly["jobs"]["shards"]["steps"][-1]["run"]
    uploads = [s["with"]["path"] for s in nightly["jobs"]["report"]["steps"] if "upload-artifact" in s.get("uses", "")]
    assert any("report.html" in p for p in uploads)


def test_the_shards_cover_every_family_once_and_the_large_models_apart():
    import json
    import subprocess
    import sys

    from sentinel_matrix.catalog import family_architectures, load_catalog

    root = Path(__file__).resolve().parents[1]
    shards = json.loads(subprocess.run([sys.executable, "scripts/nightly-shards.py"], cwd=root, capture_output=True,
                                       text=True, check=True).stdout)
    names = [s["name"] for s in shards]
    assert names[:-1] == sorted(family_architectures()) and names[-1] == "large"
    large = {e.id for e in load_catalog() if e.size_in_params() > 10e9}
    assert large and shards[-1]["args"].startswith("--models ") and "--device-map auto" in shards[-1]["args"]
    assert set(shards[-1]["args"].split()[1].split(",")) == large and shards[-1]["workers"] == "1"
    llama = next(s for s in shards if s["name"] == "llama")
    assert all(f"not {model.split('/')[-1]}" in llama["args"] for model in large)
    # the -k expression selects as meant: the large ids out, the rest of the family in
    collected = subprocess.run([sys.executable, "-m", "pytest", "matrix/", "--collect-only", "-q", "--slow",
                                "--families", "llama", "-k", llama["args"].split("-k ", 1)[1].strip("'")],
                               cwd=root, capture_output=True, text=True, timeout=120).stdout
    assert "Llama-2-7b-hf" in collected and "Llama-2-13b-hf" not in collected and "Llama-2-70b-hf" not in collected
