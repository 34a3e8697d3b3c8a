"""The page's transformers-release table: one file per release read apart (a row's newest record per release,
never across releases), a family's status per release, per model the lowest and highest passing release."""

import json

from sentinel_matrix import evidence
from sentinel_reports.__main__ import main as reports_main

DECODER_NOW = evidence.content_hash((evidence.ROOT / "sentinel_core/decoder.py").read_bytes())


def record(model, release, outcome, check="load", time="2026-12-06T10:00:00+00:00"):
    return {"family": model.split("/")[1], "model": model, "weights": "synthetic", "check": check, "device": "cpu",
            "dtype": "float32", "outcome": outcome, "reason": "" if outcome == "passed" else "logits differ",
            "metrics": {}, "time": time,
            "env": {"transformers": release, "torch": "2.13.0", "device_name": "x86_64", "python": "3.11",
                    "depends": {"code": {"sentinel_core/decoder.py": DECODER_NOW}, "data": {}, "catalog_entry": None}}}


def test_each_release_keeps_its_own_records(tmp_path, monkeypatch):
    import sentinel_reports.__main__ as entry

    results = tmp_path / "results"
    (results / "versions").mkdir(parents=True)
    (results / "main.jsonl").write_text(json.dumps(record("tiny/gpt2", "5.25.0", "passed")) + "\n")
    lines = {"4.57.6": [record("tiny/gpt2", "4.57.6", "failed"), record("tiny/llama", "4.57.6", "passed")],
             "5.0.0": [record("tiny/gpt2", "5.0.0", "passed", time="2026-12-06T09:00:00+00:00"),
                       record("tiny/llama", "5.0.0", "passed")]}
    for release, rows in lines.items():
        (results / "versions" / f"transformers-{release}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows))
    (results / "versions" / "install-failures.log").write_text('{"transformers": "5.1.0", "outcome": "error"}\n')
    monkeypatch.setattr(entry, "RESULTS_DIR", results)
    page = tmp_path / "page.md"
    assert reports_main(["--output", str(page), "--html", str(tmp_path / "r.html"), "--allow-empty"]) == 0
    text = page.read_text()
    table = text.split("## Transformers releases", 1)[1]
    header = next(line for line in table.splitlines() if line.startswith("| Family"))
    assert [c.strip() for c in header.strip("|").split("|")][1:] == ["4.57.6", "5.0.0", "5.25.0"]
    gpt2 = next(line for line in table.splitlines() if line.startswith("| gpt2"))
    cells = [c.strip() for c in gpt2.strip("|").split("|")][1:]
    assert "fail" in cells[0] and "partial" in cells[1] and "partial" in cells[2], gpt2  # load alone: partial
    html = (tmp_path / "r.html").read_text()
    assert 'href="#release-gpt2-4.57.6"' in html and "tiny/gpt2 load: failed — logits differ" in html


def test_a_change_on_hfs_side_is_named_with_its_releases(tmp_path, monkeypatch):
    """HF's eager vs SDPA distance jumps between two releases while the row flips: the page names that quantity and
    the releases; an HF-side number that stays put is not listed."""
    import sentinel_reports.__main__ as entry

    def quality(release, outcome, paths_diff):
        r = record("tiny/falcon", release, outcome, check="quality")
        r["metrics"] = {"baseline_attention_paths_diff": paths_diff, "reference_stats": {"median_entropy": 3.0}}
        return r

    results = tmp_path / "results"
    (results / "versions").mkdir(parents=True)
    (results / "main.jsonl").write_text(json.dumps(quality("5.25.0", "failed", 3e-3)) + "\n")
    for release, diff in (("5.10.4", 1e-6), ("5.17.0", 2e-6)):
        (results / "versions" / f"transformers-{release}.jsonl").write_text(json.dumps(quality(release, "passed", diff)) + "\n")
    monkeypatch.setattr(entry, "RESULTS_DIR", results)
    page = tmp_path / "page.md"
    assert reports_main(["--output", str(page), "--html", str(tmp_path / "r.html"), "--allow-empty"]) == 0
    moved = [line for line in page.read_text().splitlines() if "HF eager vs SDPA" in line]
    assert len(moved) == 1 and "5.17.0 → 5.25.0" in moved[0] and "passed → failed" in moved[0], moved
    assert "median_entropy" not in page.read_text().split("## Transformers releases", 1)[1].split("##", 1)[0]
    assert "HF eager vs SDPA" in (tmp_path / "r.html").read_text()
