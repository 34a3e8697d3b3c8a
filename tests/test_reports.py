"""The reporter: status rules, merging, --check, diff, malformed input, HTML."""

import json

import pytest

from reports import status as rules
from reports.__main__ import main as reports_main
from reports.diff import compare
from reports.load import RecordError, load_results, merge, read_records
from reports.render import render_markdown


def rec(model="facebook/opt-125m", weights="synthetic", check="quality", device="cpu", outcome="passed",
        time="2026-11-28T10:00:00+00:00", family="opt", dtype="float32", reason="", **metrics):
    return {"family": family, "model": model, "weights": weights, "check": check, "device": device, "dtype": dtype,
            "outcome": outcome, "reason": reason, "metrics": metrics, "time": time,
            "env": {"torch": "2.13.0", "transformers": "5.24.0", "device_name": "x86_64", "python": "3.11"}}


def all_checks(**kw):
    return [rec(check=c, **kw) for c in ("load", "infer", "quality")]


# status rules ------------------------------------------------------------------------------------

def test_real_weights_passing_every_check_is_full_support():
    assert rules.model_status(all_checks(weights="package")) == rules.PASS


def test_synthetic_only_evidence_is_partial_never_full():
    assert rules.model_status(all_checks(weights="synthetic")) == rules.PARTIAL
    assert rules.cell_status([rec(weights="synthetic")]) == rules.PARTIAL


def test_real_weights_on_some_checks_only_is_partial():
    records = [rec(check="load", weights="hub"), rec(check="infer", weights="hub")]
    assert rules.model_status(records) == rules.PARTIAL


def test_any_failure_is_a_failure():
    records = all_checks(weights="package") + [rec(check="infer", device="cuda", outcome="failed", reason="boom")]
    assert rules.model_status(records) == rules.FAIL
    assert rules.cell_status([rec(outcome="failed"), rec(weights="package")]) == rules.FAIL


def test_skipped_or_missing_is_untested():
    assert rules.model_status([]) == rules.UNTESTED
    assert rules.cell_status([rec(outcome="skipped", weights="hub", reason="not cached")]) == rules.UNTESTED


def test_full_support_needs_all_checks_on_one_device():
    records = [rec(check="load", weights="hub", device="cpu"), rec(check="infer", weights="hub", device="cpu"),
               rec(check="quality", weights="hub", device="cuda")]
    assert rules.model_status(records) == rules.PARTIAL


def test_family_status():
    assert rules.family_status([rules.PASS, rules.PARTIAL]) == rules.PASS
    assert rules.family_status([rules.PARTIAL, rules.UNTESTED]) == rules.PARTIAL
    assert rules.family_status([rules.PASS, rules.FAIL]) == rules.FAIL
    assert rules.family_status([rules.UNTESTED]) == rules.UNTESTED


# merging and reading ---------------------------------------------------------------------------

def test_newest_record_per_key_wins():
    old = rec(outcome="failed", time="2026-11-01T00:00:00+00:00", reason="old")
    new = rec(outcome="passed", time="2026-11-02T00:00:00+00:00")
    other_device = rec(device="cuda", dtype="bfloat16", time="2026-10-01T00:00:00+00:00")
    merged = merge([new, old, other_device])
    assert len(merged) == 2
    assert next(r for r in merged if r["device"] == "cpu")["outcome"] == "passed"


def test_a_later_skip_never_erases_a_row_that_ran():
    ran = rec(outcome="failed", time="2026-11-01T00:00:00+00:00", reason="max |Δ log p| 3e-3")
    skip = rec(outcome="skipped", time="2026-11-05T00:00:00+00:00", reason="not in the HF cache")
    assert merge([ran, skip]) == [ran] and merge([skip, ran]) == [ran]
    newer_skip = rec(outcome="skipped", time="2026-11-06T00:00:00+00:00", reason="offline")
    assert merge([skip, newer_skip]) == [newer_skip]  # between skips the newest reason wins
    rerun = rec(outcome="passed", time="2026-11-07T00:00:00+00:00")
    assert merge([ran, skip, rerun]) == [rerun]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_several_files_merge(tmp_path):
    write_jsonl(tmp_path / "cpu.jsonl", [rec(time="2026-11-01T00:00:00+00:00", outcome="failed", reason="x")])
    write_jsonl(tmp_path / "gpu.jsonl", [rec(time="2026-11-03T00:00:00+00:00"),
                                         rec(device="cuda", dtype="bfloat16")])
    records = load_results([tmp_path])
    assert len(records) == 2 and all(r["outcome"] == "passed" for r in records)


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(rec()) + "\n{oops\n")
    with pytest.raises(RecordError, match=r"bad\.jsonl:2"):
        read_records(path)
    assert reports_main([str(path), "--output", str(tmp_path / "out.md")]) == 2


def test_record_missing_fields_names_them(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"model": "x", "time": "t"}])
    with pytest.raises(RecordError, match=r"r\.jsonl:1: record lacks family"):
        read_records(path)


def test_unknown_fields_are_ignored_with_a_warning(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{**rec(), "colour": "blue"}])
    with pytest.warns(UserWarning, match="colour"):
        records = read_records(path)
    assert "colour" not in records[0]


def test_empty_results_render_a_nothing_run_page(tmp_path):
    (tmp_path / "results").mkdir()
    out = tmp_path / "SUPPORTED.md"
    assert reports_main([str(tmp_path / "results"), "--output", str(out)]) == 0
    assert "Nothing has been run yet" in out.read_text()


# rendering, --check, diff ----------------------------------------------------------------------

def test_page_shows_evidence_kind_and_numbers():
    records = all_checks(weights="synthetic", max_logprob_diff=1.9e-5, greedy_agreement=1.0) + \
        all_checks(model="HuggingFaceTB/SmolLM2-135M-Instruct", family="llama", weights="package",
                   max_logprob_diff=3e-6, greedy_agreement=1.0, ppl=24.5, baseline_ppl=24.5, ppl_ratio=1.0,
                   sample_output=" learn from data.")
    page = render_markdown(records)
    assert "| facebook/opt-125m" in page and "⚠️ synthetic" in page
    assert "✅ package" in page and "ppl 24.50" in page and "learn from data." in page
    assert "1.9e-05" in page
    assert "2.13.0" in page and "5.24.0" in page  # where the evidence came from


def test_failures_become_known_issues():
    page = render_markdown([rec(outcome="failed", reason="adaptive differs from HF: max |Δ log p| 3.1e+00")])
    assert "❌ facebook/opt-125m" in page and "3.1e+00" in page


def test_check_catches_a_hand_edit(tmp_path, capsys):
    results = write_jsonl(tmp_path / "r.jsonl", all_checks(weights="package"))
    page = tmp_path / "SUPPORTED_MODELS.md"
    assert reports_main([str(results), "--output", str(page)]) == 0
    assert reports_main([str(results), "--output", str(page), "--check"]) == 0
    text = page.read_text().replace("⚠️ synthetic", "✅ hub", 1).replace("| ❔", "| ✅", 1)
    page.write_text(text)
    assert reports_main([str(results), "--output", str(page), "--check"]) == 1
    assert "line " in capsys.readouterr().err


def test_diff_reports_status_changes_and_moved_metrics():
    old = [rec(outcome="passed", max_logprob_diff=1e-6, load_s=1.0), rec(check="load")]
    new = [rec(outcome="failed", reason="boom", max_logprob_diff=2e-6, load_s=2.0), rec(check="infer")]
    lines = compare(old, new)
    assert any(line.startswith("! ") and "passed -> failed" in line for line in lines)
    assert any("load_s 1 -> 2" in line for line in lines)
    assert not any("max_logprob_diff" in line for line in lines)  # 1e-6 -> 2e-6 is within its absolute bar
    assert any(line.startswith("+ ") and "/infer/" in line for line in lines)
    assert any(line.startswith("- ") and "/load/" in line for line in lines)


def test_diff_command(tmp_path, capsys):
    a = write_jsonl(tmp_path / "a.jsonl", [rec()])
    b = write_jsonl(tmp_path / "b.jsonl", [rec(outcome="failed", reason="r")])
    assert reports_main(["diff", str(a), str(b)]) == 0
    assert "passed -> failed" in capsys.readouterr().out


def test_html_report_has_tables_and_plots(tmp_path):
    records = all_checks(weights="package", max_logprob_diff=1e-6) + [
        rec(check="bench", device="cuda", dtype="bfloat16", weights="synthetic", decode_tokens_per_s=900.0,
            baseline_decode_tokens_per_s=600.0, prefill_ms=5.0, baseline_prefill_ms=6.0, peak_mem_mb=100.0,
            baseline_peak_mem_mb=100.0, pruning_curve=[[0.0, 900.0], [0.5, 1200.0]])]
    out = tmp_path / "report.html"
    assert reports_main([str(write_jsonl(tmp_path / "r.jsonl", records)), "--output", str(tmp_path / "p.md"),
                         "--html", str(out)]) == 0
    html = out.read_text()
    assert html.count("<table") >= 3
    assert html.count("<svg") >= 3  # decode throughput, ratio bars, quality, pruning curve
    assert "Decode throughput" in html and "Pruning curve" in html
    assert "http" not in html.replace("http://www.w3.org/2000/svg", "")  # self-contained
