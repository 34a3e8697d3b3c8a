"""`sentinel bisect`: the binary search is exact (never off by one, each release asked at most once), and the
command prints the first bad release, both records' outcomes and the metrics that moved, on fake releases."""

import pytest

from sentinel_cli import bisect

RELEASES = [f"5.{minor}.0" for minor in range(9)]


@pytest.mark.parametrize("count", range(2, len(RELEASES) + 1))
def test_first_bad_finds_the_exact_flip_asking_each_release_once(count):
    releases = RELEASES[:count]
    for flip in range(1, count):  # releases[flip] is the first bad one
        asked = []

        def verdict(release, flip=flip):
            asked.append(release)
            return bisect.GOOD if releases.index(release) < flip else bisect.BAD

        assert bisect.first_bad(releases, verdict) == (releases[flip - 1], releases[flip], [])
        assert len(asked) == len(set(asked)) and releases[0] not in asked and releases[-1] not in asked


def fake_rows(flip_at: str):
    def run_row(release, args, workdir):
        good = RELEASES.index(release) < RELEASES.index(flip_at)
        return {"outcome": "passed" if good else "failed", "reason": "" if good else "max |Δ log p| 3e-3 > 1e-4",
                "metrics": {"max_abs_logprob_diff": 2e-6 if good else 3e-3, "transformers": release}}
    return run_row


def test_the_command_prints_the_release_the_row_flips_at(monkeypatch, capsys):
    monkeypatch.setattr(bisect, "run_row", fake_rows("5.6.0"))
    code = bisect.main(["tiny/llama", "--check", "quality", "--releases", ",".join(RELEASES)])
    out = capsys.readouterr().out
    assert code == 0 and "first bad release: transformers 5.6.0 (last good: 5.5.0)" in out
    assert "max_abs_logprob_diff: 2e-06 -> 0.003" in out


@pytest.mark.parametrize("argv, says", [
    (["--good", "5.3.0", "--bad", "5.1.0"], "the good one older"),
    (["--good", "5.7.0"], "does not pass under --good 5.7.0"),
    (["--bad", "5.2.0"], "does not fail under --bad 5.2.0"),
])
def test_ends_that_cannot_bracket_a_flip_are_one_line_exit_2(monkeypatch, capsys, argv, says):
    monkeypatch.setattr(bisect, "run_row", fake_rows("5.6.0"))
    code = bisect.main(["tiny/llama", "--check", "quality", "--releases", ",".join(RELEASES), *argv])
    err = capsys.readouterr().err
    assert code == 2 and says in err


def test_an_untestable_release_is_skipped_and_named():
    def verdict(release):
        if release in ("5.4.0", "5.5.0"):
            return bisect.SKIP  # cannot install, or the row skipped
        return bisect.GOOD if release < "5.5.0" else bisect.BAD

    last_good, first, skipped = bisect.first_bad(RELEASES, verdict)
    assert (last_good, first, skipped) == ("5.3.0", "5.6.0", ["5.4.0", "5.5.0"])


def test_a_release_that_cannot_install_is_skipped_by_the_command(monkeypatch, capsys):
    from sentinel_matrix.versions import InstallError

    rows = fake_rows("5.6.0")

    def run_row(release, args, workdir):
        if release == "5.4.0":
            raise InstallError("No matching distribution found for transformers==5.4.0")
        return rows(release, args, workdir)

    monkeypatch.setattr(bisect, "run_row", run_row)
    assert bisect.main(["tiny/llama", "--check", "quality", "--releases", ",".join(RELEASES)]) == 0
    assert "first bad release: transformers 5.6.0" in capsys.readouterr().out


def test_the_command_says_what_moved_on_hfs_side(monkeypatch, capsys):
    def run_row(release, args, workdir):
        good = RELEASES.index(release) < RELEASES.index("5.6.0")
        return {"outcome": "passed" if good else "failed", "reason": "",
                "metrics": {"baseline_padded_vs_alone_beyond_resolution": 1e-6 if good else 4e-3,
                            "baseline_attention_paths_diff": 1e-6}}
    monkeypatch.setattr(bisect, "run_row", run_row)
    assert bisect.main(["tiny/llama", "--check", "infer", "--releases", ",".join(RELEASES)]) == 0
    out = capsys.readouterr().out
    assert "HF's side moved: HF's own padding effect 1e-06 -> 0.004" in out and "eager vs SDPA" not in out


def test_a_flip_with_hfs_numbers_unchanged_says_so(monkeypatch, capsys):
    monkeypatch.setattr(bisect, "run_row", fake_rows("5.6.0"))
    bisect.main(["tiny/llama", "--check", "quality", "--releases", ",".join(RELEASES)])
    assert "HF's side: nothing the row measures of HF alone moved" in capsys.readouterr().out
