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
    family = nightly["jobs"]["matrix"]["strategy"]["matrix"]["family"]
    assert family == "${{ fromJSON(needs.families.outputs.list) }}"
    assert "family_architectures" in nightly["jobs"]["families"]["steps"][-1]["run"]
    uploads = [s["with"]["path"] for s in nightly["jobs"]["report"]["steps"] if "upload-artifact" in s.get("uses", "")]
    assert any("report.html" in p for p in uploads)
