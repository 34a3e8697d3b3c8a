"""The reporter: status rules, staleness, merging, --check, diff, malformed input, mutation score, HTML."""

import json
import re

import pytest

from sentinel_matrix import evidence
from sentinel_reports import status as rules
from sentinel_reports.__main__ import main as reports_main
from sentinel_reports.diff import compare
from sentinel_reports.load import RecordError, load_results, merge, read_records
from sentinel_reports.html import render_html
from sentinel_reports.render import cell, known_issues, mutation_summary, mutation_table, render_markdown

OTHER_CODE = "0123456789abcdef"  # a file hash no tree has
DECODER_NOW = evidence.content_hash((evidence.ROOT / "sentinel_core/decoder.py").read_bytes())


def rec(model="facebook/opt-125m", weights="synthetic", check="quality", device="cpu", outcome="passed",
        time="2026-11-28T10:00:00+00:00", family="opt", dtype="float32", reason="", code=None, **metrics):
    """A record whose row depended on nothing that changed (current), or on a decoder.py whose hash was `code` (stale)."""
    return {"family": family, "model": model, "weights": weights, "check": check, "device": device, "dtype": dtype,
            "outcome": outcome, "reason": reason, "metrics": metrics, "time": time,
            "env": {"torch": "2.13.0", "transformers": "5.24.0", "device_name": "x86_64", "python": "3.11",
                    "git_sha": "e817ab4fead844915a6ebbb6c5230e91f1e7de71", "git_dirty": False,
                    "depends": {"code": {"sentinel_core/decoder.py": code or DECODER_NOW}, "data": {},
                                "catalog_entry": None}}}


def all_checks(**kw):
    return [rec(check=c, **kw) for c in ("load", "infer", "quality")]


# status rules ------------------------------------------------------------------------------------

def test_real_weights_passing_every_check_is_full_support():
    assert rules.model_status(all_checks(weights="package")) == rules.PASS


def test_synthetic_only_evidence_has_its_own_mark_never_full():
    assert rules.model_status(all_checks(weights="synthetic")) == rules.SYNTHETIC
    assert rules.cell_status([rec(weights="synthetic")]) == rules.SYNTHETIC
    assert rules.model_status(all_checks(weights="synthetic")[:2]) == rules.PARTIAL


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
    assert rules.family_status([rules.STALE, rules.INCONCLUSIVE, rules.UNTESTED]) == rules.INCONCLUSIVE
    assert rules.family_status([rules.STALE, rules.UNTESTED]) == rules.STALE


# staleness: only records measured by this tree's code count --------------------------------------

def test_stale_passes_render_as_stale_and_never_count():
    stale = all_checks(weights="package", code=OTHER_CODE)
    assert rules.model_status(stale) == rules.STALE
    assert rules.cell_status([stale[0]]) == rules.STALE
    for check in ("load", "infer", "quality"):  # no dependencies recorded at all: as stale
        del next(r for r in stale if r["check"] == check)["env"]["depends"]
        assert rules.model_status(stale) == rules.STALE
    records = all_checks(weights="package", code=OTHER_CODE, grade="Good")
    page, html = render_markdown(records), render_html(records)
    assert "⏳ stale pass: package (Good)" in html  # the per-check cell
    assert "| ✅" not in page.split("## Support overview")[1].split("## Usage")[0]  # no cell passes
    assert "| opt " in page and "| ⏳ stale " in page  # the family's and the model's status, as a word too
    assert "⏳ stale" in html.split("Evidence")[-1]  # and the evidence says why


def test_records_with_the_current_hash_count():
    current = all_checks(weights="package", grade="Good")
    assert rules.model_status(current) == rules.PASS
    page = render_markdown(current)
    assert "✅ package (Good)" in render_html(current)
    assert "| ✅ pass " in page and "| ⏳" not in page.split("## Support overview")[1].split("## Usage")[0]
    assert "| e817ab4  | current" in page


def test_stale_evidence_adds_nothing_to_current_evidence():
    records = all_checks(weights="synthetic") + all_checks(weights="package", code=OTHER_CODE)
    assert rules.model_status(records) == rules.SYNTHETIC  # the real-weight passes are stale
    quality = [r for r in records if r["check"] == "quality"]
    assert cell(quality) == "🧪 synthetic [transformers 5.24.0, torch 2.13.0]; ⏳ stale pass: package [transformers 5.24.0, torch 2.13.0]"


def test_a_stale_failure_is_shown_but_is_no_failure():
    records = all_checks(weights="package") + [rec(check="infer", device="cuda", dtype="bfloat16", outcome="failed",
                                                   reason="boom", code=OTHER_CODE)]
    assert rules.model_status(records) == rules.PASS
    assert cell([records[-1]]) == "⏳ stale failure: synthetic [transformers 5.24.0, torch 2.13.0]"
    issue = known_issues(records + [rec(model="gpt2", family="gpt2", outcome="failed", reason="bad")])
    assert issue[0].startswith("❌ gpt2")  # current failures first
    assert issue[1].startswith("⏳ ❌ facebook/opt-125m (synthetic, infer, cuda bf16, stale: e817ab4): boom")


# inconclusive quality rows and grades ------------------------------------------------------------

def test_inconclusive_is_neither_pass_nor_failure():
    inconclusive = rec(outcome="inconclusive", weights="package", reason="HF reference is degenerate",
                       grade="inconclusive")
    assert rules.cell_status([inconclusive]) == rules.INCONCLUSIVE
    assert cell([inconclusive]) == "◻️ inconclusive: package [transformers 5.24.0, torch 2.13.0]"
    records = all_checks(weights="package")[:2] + [inconclusive]
    assert rules.model_status(records) == rules.PARTIAL  # quality did not pass on real weights
    assert rules.model_status([inconclusive]) == rules.INCONCLUSIVE
    assert rules.cell_status([inconclusive, rec(weights="synthetic")]) == rules.SYNTHETIC
    assert rules.cell_status([inconclusive, rec(weights="synthetic", outcome="failed")]) == rules.FAIL
    assert any(i.startswith("◻️ 1 model(s) inconclusive: HF reference is degenerate") for i in known_issues(records))


def test_inconclusive_replaces_an_older_run_unlike_a_skip(tmp_path):
    passed = rec(time="2026-11-01T00:00:00+00:00")
    inconclusive = rec(outcome="inconclusive", time="2026-11-02T00:00:00+00:00")
    assert merge([passed, inconclusive]) == [inconclusive] and merge([inconclusive, passed]) == [inconclusive]
    assert read_records(write_jsonl(tmp_path / "r.jsonl", [inconclusive]))[0]["outcome"] == "inconclusive"


def test_quality_cells_show_their_grade():
    records = [rec(weights="package", grade="Good"), rec(weights="synthetic", grade="Fair"),
               rec(weights="synthetic", grade="Good", device="cuda", dtype="bfloat16"),
               rec(weights="synthetic", grade="Fair", device="cuda", dtype="float16")]
    assert cell(records[:2]) == "✅ package (Good)+synthetic (Fair) [transformers 5.24.0, torch 2.13.0]"
    assert cell(records[1:2]) == "🧪 synthetic (Fair) [transformers 5.24.0, torch 2.13.0]"
    assert cell(records[2:]) == "🧪 synthetic (Fair) [transformers 5.24.0, torch 2.13.0]"  # the worst of a source's rows
    assert cell([rec(weights="package")]) == "✅ package [transformers 5.24.0, torch 2.13.0]"  # older records carry no grade
    assert cell([rec(outcome="failed", grade="Poor")]) == "❌ synthetic (Poor) [transformers 5.24.0, torch 2.13.0]"


# mutation score ----------------------------------------------------------------------------------

def mutation(model="facebook/opt-125m", family="opt", missed=(), below=(), code=None, **kw):
    """Five mutants, one not applicable; `below` were below the fp32 bar, `missed` (catchable) not caught."""
    names = ["swap_qk", "drop_bias", "rotary_off", "norm_eps", "tie_head"]
    mutants = {name: {"caught": name not in missed, "effect": 0.5, "catchable": name not in below,
                      "applicable": name != "tie_head", "caught_by": "quality"} for name in names}
    caught, catchable = 4 - len(below) - len(missed), 4 - len(below)
    score = {"caught": caught, "catchable": catchable, "missed": list(missed), "catch_rate": caught / catchable,
             "below_bar": len(below), "not_applicable": 1}
    return rec(model=model, family=family, check="mutation", outcome="failed" if missed else "passed", code=code,
               mutants=mutants, mutation_score=score, reason=f"missed {', '.join(missed)}" if missed else "", **kw)


def test_mutation_score_per_model_device_and_dtype_with_the_statistics_power_apart():
    records = [mutation(), mutation(model="facebook/opt-350m", missed=("swap_qk",), below=("norm_eps",)),
               mutation(model="gpt2", family="gpt2", code=OTHER_CODE),
               mutation(model="facebook/opt-350m", device="cuda", dtype="bfloat16")]
    records[-1]["metrics"]["mutation_score"]["caught_by_statistics"] = 1
    table = mutation_table(records).markdown()
    lines = table.splitlines()
    small = next(line for line in lines if "| facebook/opt-125m" in line)
    assert "4 / 4 (100%)" in small and "| current" in small
    missed = next(line for line in lines if "| facebook/opt-350m" in line and "| cpu" in line)
    assert "2 / 3 (67%)" in missed and "swap_qk" in missed
    half = next(line for line in lines if "| facebook/opt-350m" in line and "| cuda" in line)
    assert "4 / 4 (100%)" in half and "1 / 4 (25%)" in half
    gpt2 = next(line for line in lines if "| gpt2" in line)
    assert "4 / 4" in gpt2 and "⏳ stale" in gpt2
    summary = mutation_summary(records).markdown()
    cpu = next(line for line in summary.splitlines() if "| cpu" in line)
    assert "6 / 7 (86%)" in cpu and "| –" in cpu  # the stale gpt2 record is left out
    cuda = next(line for line in summary.splitlines() if "| cuda" in line)
    assert "1 / 4 (25%)" in cuda
    assert mutation_table(all_checks()) is None


def test_mutation_does_not_decide_status_but_a_miss_is_a_known_issue():
    records = all_checks(weights="package") + [mutation(missed=("swap_qk",))]
    assert rules.model_status(records) == rules.PASS
    page = render_markdown(records)
    assert "## Mutation score" in page
    assert "❌ facebook/opt-125m (synthetic, mutation, cpu fp32): missed swap_qk" in page


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


def test_a_skip_before_any_checkpoint_never_outlives_a_row_that_ran_on_one():
    # The weights were not installed (no checkpoint, so no fingerprint); later the row ran on a checkpoint.
    skip = rec(outcome="skipped", time="2026-11-01T00:00:00+00:00", reason="package weights not installed")
    ran = {**rec(time="2026-11-02T00:00:00+00:00"), "checkpoint": {"fingerprint": "abc"}}
    assert merge([skip, ran]) == [ran] and merge([ran, skip]) == [ran]
    assert merge([skip]) == [skip]  # alone it is still the row's only word
    elsewhere = {**skip, "device": "cuda"}
    assert merge([skip, ran, elsewhere]) == [ran, elsewhere]


def test_a_run_from_before_fingerprints_is_the_rows_older_run_once_it_ran_on_a_named_checkpoint():
    unnamed = rec(outcome="failed", time="2026-11-01T00:00:00+00:00", reason="old")  # no "checkpoint" at all
    named = {**rec(time="2026-11-02T00:00:00+00:00"), "checkpoint": {"fingerprint": "abc"}}
    assert merge([unnamed, named]) == [named] and merge([named, unnamed]) == [named]
    # Newer than every named run, or alone, or another row's: it stays the row's own word.
    newer_unnamed = {**unnamed, "time": "2026-11-03T00:00:00+00:00"}
    assert merge([named, newer_unnamed]) == [named, newer_unnamed]
    assert merge([unnamed]) == [unnamed]
    elsewhere = {**named, "device": "cuda", "dtype": "bfloat16"}
    assert merge([unnamed, elsewhere]) == [unnamed, elsewhere]


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


def test_empty_results_never_overwrite_a_page_unless_asked(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    out = tmp_path / "SUPPORTED.md"
    out.write_text("the committed page")
    assert reports_main([str(tmp_path / "results"), "--output", str(out)]) == 2
    assert out.read_text() == "the committed page" and "--allow-empty" in capsys.readouterr().err
    assert reports_main([str(tmp_path / "results"), "--output", str(out), "--allow-empty"]) == 0
    assert "Nothing has been run yet" in out.read_text()


@pytest.mark.parametrize("field, value, message", [
    ("time", 1764000000, "time must be text"), ("metrics", [1, 2], "metrics must be object"),
    ("model", None, "model must be text"), ("duration_s", "slow", "duration_s must be null or number"),
    ("metrics", {"max_logprob_diff": "tiny"}, "metrics.max_logprob_diff must be null or number"),
    ("metrics", {"greedy_identical": 1}, "metrics.greedy_identical must be null or true/false"),
    ("env", {"git_sha": 7}, "env.git_sha must be null or text"), ("outcome", "passd", "outcome 'passd' is not one"),
])
def test_a_mistyped_field_is_one_error_naming_file_and_line(tmp_path, capsys, field, value, message):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(rec()) + "\n" + json.dumps({**rec(), field: value}) + "\n")
    assert reports_main([str(path), "--output", str(tmp_path / "page.md")]) == 2
    err = capsys.readouterr().err
    assert f"r.jsonl:2: {message}" in err and err.count("\n") == 1


def test_a_latin1_byte_is_one_error_naming_the_line(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    path.write_bytes(json.dumps(rec()).encode() + b"\n" + json.dumps(rec(reason="caf\u00e9")).encode()[:-5] + b"\xe9\"}\n")
    assert reports_main([str(path), "--output", str(tmp_path / "page.md")]) == 2
    assert "r.jsonl:2: not UTF-8" in capsys.readouterr().err


def test_random_field_types_never_traceback(tmp_path):
    """Fuzz: every field and some metrics of valid records replaced by values of random JSON types."""
    import random

    rng = random.Random(0)
    values = [None, True, 0, 1.5, float("nan"), "", "x", [], [1], {}, {"a": 1}]
    fields = ["family", "model", "weights", "check", "device", "dtype", "outcome", "reason", "metrics", "env", "time",
              "duration_s", "synthetic_layers", "checkpoint"]
    metric_names = ["max_logprob_diff", "grade", "mutation_score", "ppl", "decode_ratio", "sample_output",
                    "pruning_curve", "greedy_identical", "reference_stats"]
    for trial in range(400):
        record = rec(check=rng.choice(["load", "quality", "bench", "mutation"]), max_logprob_diff=1e-5, ppl=20.0)
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.5:
                record[rng.choice(fields)] = rng.choice(values)
            elif isinstance(record.get("metrics"), dict):
                record["metrics"][rng.choice(metric_names)] = rng.choice(values)
        path = tmp_path / f"fuzz{trial}.jsonl"
        path.write_text(json.dumps(record) + "\n")
        code = reports_main([str(path), "--output", str(tmp_path / "page.md"), "--html", str(tmp_path / "r.html")])
        assert code in (0, 2), record


def test_outputs_go_into_new_folders_or_fail_in_one_line_before_writing(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(rec()) + "\n")
    assert reports_main([str(path), "--output", str(tmp_path / "a" / "page.md"), "--html",
                         str(tmp_path / "b" / "report.html")]) == 0
    assert (tmp_path / "a" / "page.md").is_file() and (tmp_path / "b" / "report.html").is_file()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert reports_main([str(path), "--output", str(tmp_path / "c.md"), "--html", str(blocker / "report.html")]) == 2
    assert not (tmp_path / "c.md").exists() and "cannot create" in capsys.readouterr().err


def test_diff_counts_a_lost_number_and_fails_on_regression_when_asked(tmp_path, capsys):
    from sentinel_reports.diff import main as diff_main

    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    old.write_text(json.dumps(rec(max_logprob_diff=1e-5, ppl=20.0)) + "\n")
    new.write_text(json.dumps(rec(max_logprob_diff=float("nan"), ppl=None)) + "\n")
    assert diff_main([str(old), str(new)]) == 0
    out = capsys.readouterr().out
    assert "max_logprob_diff 1e-05 -> nan" in out and "ppl 20 -> null" in out
    assert diff_main([str(old), str(new), "--fail-on-regression"]) == 1
    new.write_text(json.dumps(rec(outcome="failed", max_logprob_diff=1e-5, ppl=20.0)) + "\n")
    assert diff_main([str(old), str(new), "--fail-on-regression"]) == 1
    assert diff_main([str(old), str(old), "--fail-on-regression"]) == 0


# rendering, --check, diff ----------------------------------------------------------------------

def test_page_shows_evidence_kind_and_numbers():
    records = all_checks(weights="synthetic", max_logprob_diff=1.9e-5, greedy_agreement=1.0) + \
        all_checks(model="HuggingFaceTB/SmolLM2-135M-Instruct", family="llama", weights="package",
                   max_logprob_diff=3e-6, greedy_agreement=1.0, ppl=24.5, baseline_ppl=24.5, ppl_ratio=1.0,
                   sample_output=" learn from data.")
    page, html = render_markdown(records), render_html(records)
    assert "| facebook/opt-125m" in page and "🧪 synthetic only" in page and "✅ pass" in page
    assert "learn from data." in page
    assert "✅ package" in html and "ppl 24.50" in html and "1.9e-05" in html  # every check's numbers: the HTML
    assert "2.13.0" in page and "5.24.0" in page  # where the evidence came from


def test_failures_become_known_issues():
    page = render_markdown([rec(outcome="failed", reason="adaptive differs from HF: max |Δ log p| 3.1e+00")])
    assert "❌ facebook/opt-125m" in page and "3.1e+00" in page


def test_check_catches_a_hand_edit(tmp_path, capsys):
    results = write_jsonl(tmp_path / "r.jsonl", all_checks(weights="package"))
    page = tmp_path / "SUPPORTED_MODELS.md"
    assert reports_main([str(results), "--output", str(page)]) == 0
    assert reports_main([str(results), "--output", str(page), "--check"]) == 0
    text = page.read_text().replace("🧪 synthetic", "✅ hub", 1).replace("| ❔", "| ✅", 1)
    page.write_text(text)
    assert reports_main([str(results), "--output", str(page), "--check"]) == 1
    assert "line " in capsys.readouterr().err


def test_diff_reports_status_changes_and_moved_metrics():
    old = [rec(outcome="passed", max_logprob_diff=1e-6, load_s=1.0), rec(check="load")]
    new = [rec(outcome="failed", reason="boom", max_logprob_diff=2e-6, load_s=2.0), rec(check="infer")]
    lines, _ = compare(old, new)
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


def bench_row(**metrics):
    return rec(check="bench", weights="synthetic", decode_tokens_per_s=900.0, baseline_decode_tokens_per_s=600.0,
               prefill_ms=5.0, baseline_prefill_ms=6.0, peak_mem_mb=100.0, baseline_peak_mem_mb=100.0, **metrics)


def test_bench_ratios_show_their_spread():
    spread = {"decode_ratio": 1.42, "decode_ratio_lo": 1.31, "decode_ratio_hi": 1.55,
              "prefill_ratio": 1.03, "prefill_ratio_lo": 0.97, "prefill_ratio_hi": 1.08}
    table = render_html([bench_row(**spread)]).split("<h2>Benchmarks</h2>")[1]
    assert "1.42 (1.31–1.55)" in table and "1.42 (1.31–1.55) ~ noise" not in table
    assert "1.03 (0.97–1.08) ~ noise" in table
    old = render_html([bench_row()]).split("<h2>Benchmarks</h2>")[1]
    assert "1.50 (no spread)" in old and "1.20 (no spread)" in old  # decode 900/600, prefill 6/5
    stale = render_html([bench_row(code=OTHER_CODE)]).split("<h2>Benchmarks</h2>")[1]
    assert "⏳ facebook/opt-125m" in stale


def test_spreads_are_not_regressions():
    old = [bench_row(decode_tokens_per_s_iqr=10.0, decode_ratio_lo=1.0)]
    new = [bench_row(decode_tokens_per_s_iqr=30.0, decode_ratio_lo=1.3)]
    assert compare(old, new) == ([], [])


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
    assert "Mutation score" not in html
    records.append(mutation())
    assert reports_main([str(write_jsonl(tmp_path / "r.jsonl", records)), "--output", str(tmp_path / "p.md"),
                         "--html", str(out)]) == 0
    assert "<h2>Mutation score</h2>" in out.read_text()
    assert html.count("<svg") >= 3  # decode throughput with its ratios, quality, pruning curves
    assert "Decode throughput" in html and "Pruning curves" in html
    # self-contained: nothing fetched (XML namespace names are identifiers, never loaded)
    assert "<script" not in html and "http" not in re.sub(r'xmlns(:\w+)?="http[^"]+"', "", html)


def test_a_users_own_run_shows_in_what_they_render_and_check_keeps_to_the_committed(tmp_path, capsys):
    """`pytest matrix/` writes results/latest.jsonl: a folder read includes it (and says so); --check and
    --committed leave it out, so the committed page still renders the same from a clean clone."""
    folder = tmp_path / "results"
    folder.mkdir()
    write_jsonl(folder / "cpu-offline.jsonl", all_checks())
    write_jsonl(folder / "latest.jsonl", [rec(model="tiny/gpt2", family="gpt2", check="load", outcome="failed",
                                              reason="a failure only the user's run has",
                                              time="2026-12-03T08:00:00+00:00")])
    page, committed = tmp_path / "page.md", tmp_path / "committed.md"
    assert reports_main([str(folder), "--output", str(page)]) == 0
    assert "a failure only the user's run has" in page.read_text()
    assert "latest.jsonl (1)" in capsys.readouterr().err
    assert reports_main([str(folder), "--output", str(committed), "--committed"]) == 0
    assert "a failure only the user's run has" not in committed.read_text()
    assert reports_main([str(folder), "--output", str(committed), "--check"]) == 0
    assert reports_main([str(folder), "--output", str(page), "--check"]) == 1


def test_a_pipe_in_a_cell_never_splits_it():
    """phi3's architecture text says q|k|v: every row of every Markdown table keeps its header's cell count."""
    from sentinel_reports.render import Table

    table = Table(["Family", "Architecture"], [["phi3", "fused q|k|v and gate|up"], ["x", "two\nlines"]]).markdown()
    lines = table.splitlines()
    cells = [len([c for c in line.replace("\\|", "").split("|")]) for line in lines]
    assert len(set(cells)) == 1 and "q\\|k\\|v" in table
    page = render_markdown(all_checks())
    for block in page.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        widths = {len(line.replace("\\|", "").split("|")) for line in rows}
        assert len(widths) <= 1, block


def test_every_table_of_the_committed_page_keeps_its_header_width():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "SUPPORTED_MODELS.md").read_text(encoding="utf-8")
    tables = 0
    for block in page.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        if rows:
            tables += 1
            assert len({len(line.replace("\\|", "").split("|")) for line in rows}) == 1, rows[0][:200]
    assert tables >= 7  # overview, models, summary, benchmarks, mutation, pruning, evidence, legend


def prune_row(**kw):
    curve = lambda *ppl: [[f / 10, p] for f, p in enumerate(ppl)]  # noqa: E731
    return rec(check="prune", weights="package", model="HuggingFaceTB/SmolLM2-135M-Instruct", family="llama",
               ppl_by_fraction={"gradient": curve(20.0, 20.5, 21.5, 25.0, 30.0, 40.0),
                                "ablation": curve(20.0, 20.2, 20.9, 23.0, 27.0, 33.0),
                                "magnitude": curve(20.0, 24.0, 30.0, 40.0, 60.0, 90.0),
                                "random": curve(20.0, 26.0, 35.0, 50.0, 80.0, 120.0)},
               ppl_random_spread=[[f / 10, p * 0.9, p * 1.1] for f, p in enumerate((20.0, 26, 35, 50, 80, 120))],
               prunable_fraction={"gradient": 0.1, "ablation": 0.2, "magnitude": 0.0, "random": 0.0},
               prunable_within=0.05, throughput_method="gradient",
               throughput_columns=["fraction", "prefill_ms", "prefill_ms_iqr", "decode_tokens_per_s",
                                   "decode_tokens_per_s_iqr", "params"],
               throughput_by_fraction=[[f / 10, 100.0 - 5 * f, 1.0, 50.0 + 2 * f, 1.0, 1000 - f] for f in range(6)],
               **kw)


def test_head_pruning_table_and_plot(tmp_path):
    page = render_markdown([prune_row()])
    table = page.split("## Head pruning")[1].split("\n## ")[0]
    assert "| ablation " in table and "| 20% " in table  # ablation's prunable fraction
    assert "| 26.0 (23.4–28.6) / 35.0 (31.5–38.5) / 120.0 (108.0–132.0) " in table  # random at 10 / 20 / 50%
    assert "| 20.5 / 21.5 / 40.0 " in table  # gradient
    assert "1.20 / 1.33 at 50% (gradient)" in table  # decode 60/50, prefill 100/75
    out = tmp_path / "report.html"
    assert reports_main([str(write_jsonl(tmp_path / "r.jsonl", [prune_row()])), "--output", str(tmp_path / "p.md"),
                         "--html", str(out)]) == 0
    html = out.read_text()
    assert "<h2>Head pruning</h2>" in html and "Perplexity as heads are removed" in html
    assert "## Head pruning" not in render_markdown(all_checks())
    assert "| ⏳ HuggingFaceTB" in render_markdown([prune_row(code=OTHER_CODE)])


def test_the_html_report_escapes_what_checkpoints_name():
    """A model_type, model id, reason or sample text from a checkpoint anyone can write never becomes markup."""
    from sentinel_reports.html import render_html

    script = "<script>alert(1)</script>"
    records = [rec(model=f"evil/{script}", family=f"x{script}", weights="hub", check=c, reason=f"r{script}",
                   sample_output=f"s{script}", ppl=10.0, ppl_ratio=1.0) for c in ("load", "infer", "quality")]
    records.append(rec(model=f"evil/{script}", family=f"x{script}", check="mutation", outcome="failed",
                       reason=f"missed {script}"))
    page = render_html(records)
    assert "<script" not in page.lower(), page[page.lower().index("<script") - 200:][:400]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<table") >= 3  # tables still render as HTML (plots: tests/test_wheel.py, test_report_browser.py)
    # the Markdown page, which GitHub renders: no tag and no inline link from a record, in tables or lists
    link = "[click](https://example.invalid)"
    records.append(rec(model="evil/link", check="load", outcome="failed", reason=f"see {link}"))
    markdown = render_markdown(records)
    assert "<script" not in markdown.lower() and "&lt;script&gt;" in markdown
    assert "[click](" not in markdown and "[click\\](" in markdown


@pytest.mark.parametrize("change, why", [
    ({"check": "qualty"}, "check 'qualty' is not one this matrix has"),
    ({"time": "not a time"}, "time 'not a time' is not an ISO time"),
    ({"metrics": {"max_logprob_diff": float("nan"), "grade": "Good"}}, "a passing record with non-finite metrics"),
])
def test_a_record_that_cannot_count_is_left_out_visibly(tmp_path, change, why):
    path = write_jsonl(tmp_path / "r.jsonl", [rec(check="load"), {**rec(check="quality"), **change}])
    with pytest.warns(UserWarning, match=f"r.jsonl:2: left out: {re.escape(why)}"):
        assert [r["check"] for r in read_records(path)] == ["load"]


def test_record_times_compare_as_times():
    """"+05:00" is five hours earlier in UTC: 10:00+05:00 (05:00 UTC) is older than 06:00+00:00."""
    older = rec(time="2026-11-28T10:00:00+05:00", outcome="failed")
    newer = rec(time="2026-11-28T06:00:00+00:00", outcome="passed")
    assert merge([newer, older]) == [newer] and merge([older, newer]) == [newer]


def test_check_against_a_folder_or_a_binary_page_is_one_line(tmp_path, capsys):
    results = write_jsonl(tmp_path / "r.jsonl", all_checks())
    (tmp_path / "page").mkdir()
    assert reports_main([str(results), "--check", "--output", str(tmp_path / "page")]) == 2
    assert "is a folder" in capsys.readouterr().err
    (tmp_path / "page.md").write_bytes(b"\xff\xfe junk")
    assert reports_main([str(results), "--check", "--output", str(tmp_path / "page.md")]) == 2
    assert "is not UTF-8 text" in capsys.readouterr().err


def test_a_failed_page_write_keeps_the_old_page(tmp_path, monkeypatch):
    import pathlib

    results = write_jsonl(tmp_path / "r.jsonl", all_checks())
    page = tmp_path / "page.md"
    page.write_text("the old page")

    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_text", full_disk)
    assert reports_main([str(results), "--output", str(page)]) == 2
    monkeypatch.undo()
    assert page.read_text() == "the old page"


@pytest.mark.parametrize("curves", [{"gradient": [[0.0]]}, {"gradient": "flat"}, {}, {"gradient": []},
                                    {"gradient": [[0.0, "x"]]}])
def test_a_prune_record_with_malformed_curves_is_one_line(tmp_path, curves):
    bad = rec(check="prune", weights="package", ppl_by_fraction=curves, ppl_random_spread=[[0.0, 1.0, 2.0]])
    path = write_jsonl(tmp_path / "r.jsonl", [bad])
    with pytest.raises(RecordError, match="r.jsonl:1: metrics.ppl_by_fraction must map names to non-empty"):
        read_records(path)
