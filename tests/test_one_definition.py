"""Adding a check is one definition: a `Check` registered in sentinel_matrix/registry.py (here from a plugin, as a
user's own check would be) is a valid --checks name, gets its rows and records, takes part in the status
rules and becomes a column of the report, with no other file touched."""

import pytest
import json
import subprocess
import sys
from pathlib import Path

from sentinel_matrix import registry
from sentinel_reports import status as rules
from sentinel_reports.render import render_markdown

REPO = Path(__file__).resolve().parents[1]

PLUGIN = '''
from sentinel_matrix import registry

def _made_up(row, request):
    return {"made_up_score": 0.5}

registry.register(registry.Check("made_up", "Made up", "a check invented by a test", _made_up, default=False))
'''


@pytest.mark.end_to_end
def test_a_made_up_check_needs_one_definition(tmp_path, monkeypatch):
    (tmp_path / "made_up_plugin.py").write_text(PLUGIN)
    results = tmp_path / "rows.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "matrix/", "-p", "made_up_plugin", "--models", "tiny/gpt2",
         "--checks", "load,infer,quality,made_up", "--results", str(results), "-q", "-p", "no:cacheprovider"],
        cwd=REPO, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
                                                        "PYTHONPATH": str(tmp_path), "HOME": str(Path.home())})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = [json.loads(line) for line in results.read_text().splitlines()]
    made_up = [r for r in records if r["check"] == "made_up"]
    assert len(made_up) == 1 and made_up[0]["outcome"] == "passed" and made_up[0]["metrics"]["made_up_score"] == 0.5

    # The report process knows the same definition: the check is a column and decides the status.
    monkeypatch.setattr(registry, "CHECKS", [*registry.CHECKS, registry.Check(
        "made_up", "Made up", "a check invented by a test", lambda row, request: {}, default=False)])
    from sentinel_reports.html import render_html

    assert "<th>Made up (cpu fp32)" in render_html(records)  # a column of the per-check tables
    others = [r for r in records if r["check"] != "made_up"]
    assert rules.model_status(others) == rules.PARTIAL  # every status check now includes the made-up one
    assert rules.model_status(records) == rules.SYNTHETIC
