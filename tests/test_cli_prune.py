"""`sentinel prune`: importance on a calibration split, heads removed for real, perplexity before and after on a
held-out split, the pruned model saved where load_adaptive_model reads it back; bad input is one line, exit 2."""

import re

import pytest

from sentinel_core import load_adaptive_model
from sentinel_cli import main
from sentinel_core.importance import calibration_and_heldout, perplexity
from sentinel_core.synthetic import make_synthetic_checkpoint
from tokenizer_fixture import TEXT, save_tokenizer
from variants import variants

SPLITS = ["--calibration-rows", "2", "--calibration-length", "32", "--heldout-tokens", "96"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama-gqa-prune")
    config = variants()["llama-gqa"]
    make_synthetic_checkpoint(config, folder, seed=5)
    save_tokenizer(folder, config)
    return folder


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text(TEXT * 3, encoding="utf-8")
    return path


def run(capsys, *argv):
    code = main(["prune", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("method", ["gradient", "ablation"])
def test_prunes_saves_and_reports_perplexity(checkpoint, text_file, tmp_path, capsys, method):
    out_dir = tmp_path / "pruned"
    code, out, err = run(capsys, checkpoint, "--fraction", "0.25", "--method", method, "--text", text_file,
                         "--out", out_dir, *SPLITS)
    assert code == 0, err
    model = load_adaptive_model(str(out_dir))
    total = model.gates.numel()
    removed = sum(len(h) for h in model.pruned_heads.values())
    assert removed == round(0.25 * total)
    assert f"removed {removed} of {total} heads ({method} order)" in out
    if method == "ablation":
        assert f"{total}/{total}" in err, "the ablation progress bar counts every head"

    # The printed perplexities are the unpruned and the saved model's on the held-out split.
    before, after = map(float, re.search(r": ([\d.]+) -> ([\d.]+)", out).groups())
    from transformers import AutoTokenizer

    _, heldout = calibration_and_heldout(AutoTokenizer.from_pretrained(str(checkpoint)), TEXT * 3, 2, 32, 96)
    assert perplexity(load_adaptive_model(str(checkpoint)), heldout, 512) == pytest.approx(before, abs=5e-4)
    assert perplexity(model, heldout, 512) == pytest.approx(after, abs=5e-4)


def test_a_window_longer_than_learned_positions_is_refused_before_scoring(tmp_path, text_file, capsys):
    folder = tmp_path / "gpt2"
    config = variants()["gpt2"]
    make_synthetic_checkpoint(config, folder, seed=5)
    save_tokenizer(folder, config)
    code, _, err = run(capsys, folder, "--count", "1", "--text", text_file, "--out", tmp_path / "x",
                       "--calibration-rows", "1", "--calibration-length", str(config.n_positions + 1),
                       "--heldout-tokens", "16")
    assert code == 2 and f"has {config.n_positions} positions; give at most that" in err, err
    assert "scoring" not in err and not (tmp_path / "x").exists()


def test_a_pruned_folder_generates_with_its_own_tokenizer(checkpoint, text_file, tmp_path, capsys):
    """prune → generate: the pruned folder carries the tokenizer and generation config, so it chains."""
    out_dir = tmp_path / "pruned"
    assert run(capsys, checkpoint, "--count", "2", "--text", text_file, "--out", out_dir, *SPLITS)[0] == 0
    assert (out_dir / "tokenizer.json").is_file() or (out_dir / "tokenizer_config.json").is_file()
    code = main(["generate", "--model-name", str(out_dir), "--prompt", "The fox", "--max-new-tokens", "4"])
    out, err = capsys.readouterr()
    assert code == 0 and out.strip(), err


def test_random_order_is_seeded(checkpoint, text_file, tmp_path, capsys):
    plans = []
    for i, seed in enumerate((1, 1, 2)):
        code, _, err = run(capsys, checkpoint, "--count", "3", "--method", "random", "--seed", seed,
                           "--text", text_file, "--out", tmp_path / str(i), *SPLITS)
        assert code == 0, err
        plans.append(load_adaptive_model(str(tmp_path / str(i))).pruned_heads)
    assert plans[0] == plans[1] != plans[2]


@pytest.mark.parametrize("argv, message", [
    (["--fraction", "1.5"], "fraction must be a number in [0, 1)"),
    (["--fraction", "0.2", "--text", "/nonexistent.txt"], "no such file"),
    (["--fraction", "0.2", "--heldout-tokens", "100000"], "give a longer text or smaller splits"),
    (["--count", "10000"], "can go while keeping min_heads_per_layer=1"),
    (["--fraction", "0.2", "--heldout-tokens", "0"], "perplexity needs at least 2 held-out tokens"),
    (["--fraction", "0.2", "--heldout-tokens", "1"], "perplexity needs at least 2 held-out tokens"),
    (["--fraction", "0.2", "--calibration-length", "1"], "a window needs at least 2 tokens"),
    (["--fraction", "0.2", "--calibration-length", "-1"], "a window needs at least 2 tokens"),
    (["--fraction", "0.2", "--calibration-rows", "0"], "at least 1 window is needed"),
    (["--fraction", "0.2", "--seed", str(2**64)], "give a seed in [0, 2**63 - 1]"),
    (["--fraction", "0.2", "--device", "meta"], "--device meta: use cpu or cuda"),
    (["--fraction", "0.2", "--text", "/tmp"], "--text /tmp: Is a directory"),
])
def test_bad_input_is_one_line(checkpoint, text_file, tmp_path, capsys, argv, message):
    argv = [*SPLITS, *argv]
    if "--text" not in argv:
        argv += ["--text", text_file]
    code, out, err = run(capsys, checkpoint, "--out", tmp_path / "x", *argv)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "x").exists(), "nothing saved after an error"


def test_refuses_an_out_folder_it_cannot_write_before_scoring(checkpoint, text_file, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "file").write_text("")
    code, _, err = run(capsys, checkpoint, "--fraction", "0.2", "--out", locked / "file" / "pruned", "--text",
                       text_file, *SPLITS)
    assert code == 2 and "is not a folder you can write to" in err and "scoring" not in err


def test_refuses_a_non_empty_out_folder(checkpoint, text_file, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    code, _, err = run(capsys, checkpoint, "--fraction", "0.2", "--out", tmp_path / "taken", "--text", text_file,
                       *SPLITS)
    assert code == 2 and "is not an empty folder" in err
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_needs_a_size_and_an_out_folder(checkpoint, capsys):
    code, _, err = run(capsys, checkpoint, "--out", "x")
    assert code == 2 and "one of the arguments --fraction --count is required" in err
    code, _, err = run(capsys, checkpoint, "--fraction", "0.2")
    assert code == 2 and "--out" in err


def test_generic_wrapper_is_refused_before_scoring(tmp_path, text_file, capsys):
    from transformers import GPTBigCodeConfig

    config = GPTBigCodeConfig(vocab_size=512, n_embd=64, n_layer=2, n_head=4, n_positions=256,
                              bos_token_id=1, eos_token_id=2)
    folder = make_synthetic_checkpoint(config, tmp_path / "bigcode", seed=3)
    save_tokenizer(folder, config)
    code, _, err = run(capsys, folder, "--fraction", "0.25", "--text", text_file, "--out", tmp_path / "o", *SPLITS)
    assert code == 2 and "generic gated wrapper" in err and "scoring" not in err
