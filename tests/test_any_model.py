"""The matrix checks any model a user names: a local folder, a GGUF file, a hub id; bad option values are
usage errors that name the valid ones, never an empty run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sentinel_matrix import adhoc, options, sources

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def run_matrix(*args: str, results: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "matrix/", "-q", "-p", "no:randomly", "--results",
                           str(results), *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)


def read(results: Path) -> list[dict]:
    return [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []


class FakeConfig:
    def __init__(self, **values):
        self.values = {"--families": "", "--models": "", "--checks": "", "--devices": "cpu", "--weights": "default",
                       "--results": "results/latest.jsonl", "collectonly": False, **values}
        self.stash = pytest.Stash()

    def getoption(self, name):
        return self.values[name]


@pytest.mark.parametrize("option, value, suggestion", [
    ("--families", "lama", "llama"), ("--checks", "load,qualty", "quality"), ("--devices", "gpu", "cuda"),
    ("--weights", "synth", "synthetic"), ("--checks", "load,infr", "infer"),
    ("--families", "pythia", "gpt_neox"), ("--families", "llama2", "llama"), ("--families", "GPT2", "gpt2"),
    ("--families", "Pythia", "gpt_neox"), ("--families", "gemma-3", "gemma3_text"), ("--checks", "LOAD", "load"),
])
def test_an_unknown_name_is_a_usage_error_naming_the_valid_ones(option, value, suggestion):
    with pytest.raises(pytest.UsageError, match=f"did you mean '{suggestion}'.*valid names: .*{suggestion}"):
        options.validate(FakeConfig(**{option: value}))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_rows_on_a_machine_without_cuda_are_a_usage_error_not_skips():
    with pytest.raises(pytest.UsageError, match="--devices cuda: this machine has no CUDA device"):
        options.validate(FakeConfig(**{"--devices": "cpu,cuda"}))


def test_a_glob_that_matches_nothing_and_a_missing_path_are_usage_errors(tmp_path):
    with pytest.raises(pytest.UsageError, match="no catalog id matches 'gpt3\\*'"):
        options.validate(FakeConfig(**{"--models": "gpt3*"}))
    with pytest.raises(pytest.UsageError, match="no such folder or file"):
        options.validate(FakeConfig(**{"--models": str(tmp_path / "nothing-here")}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(pytest.UsageError, match="not a .gguf; pass the folder"):
        options.validate(FakeConfig(**{"--models": str(tmp_path / "model.safetensors")}))


def test_results_that_cannot_be_written_stop_the_run_before_the_first_row(tmp_path):
    with pytest.raises(pytest.UsageError, match="--results: .* is a folder: name a file"):
        options.validate(FakeConfig(**{"--results": str(tmp_path)}))
    (tmp_path / "file").write_text("")
    with pytest.raises(pytest.UsageError, match="--results: cannot create"):
        options.validate(FakeConfig(**{"--results": str(tmp_path / "file" / "rows.jsonl")}))
    options.validate(FakeConfig(**{"--results": str(tmp_path / "new" / "rows.jsonl")}))  # folders are made


def test_catalog_names_stay_catalog_rows_and_the_rest_resolve(tmp_path, monkeypatch):
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"model_type": "llama"}))
    # a hub id in the HF cache resolves offline to a hub row of its model_type
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda repo, name: str(config_file)
                        if repo == "my-org/my-model" else None)
    config = FakeConfig(**{"--models": "tiny/llama,gpt2*,tiny-opt,my-org/my-model"})
    options.validate(config)
    [entry] = config.stash[options.ADHOC_ENTRIES]
    assert (entry.id, entry.sources, entry.family) == ("my-org/my-model", ("hub",), "llama")


def test_the_command_line_stops_before_collection_on_a_typo():
    done = subprocess.run([sys.executable, "-m", "pytest", "matrix/", "--families", "lama", "--collect-only", "-q"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 4 and "did you mean 'llama'" in done.stderr


def test_fingerprints_tell_two_checkpoints_under_one_path_apart(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama", "hidden_size": 8}')
    first = sources.fingerprint(tmp_path)
    assert first == sources.fingerprint(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama", "hidden_size": 16}')
    assert sources.fingerprint(tmp_path) != first


def test_a_folder_without_a_config_becomes_a_failed_row_saying_why(tmp_path):
    entry = adhoc.resolve(str(tmp_path))
    assert entry.family == adhoc.UNKNOWN_FAMILY and "no config.json" in entry.problem
    with pytest.raises(adhoc.AdhocError, match="no config.json"):
        adhoc.provision(entry)


@pytest.fixture(scope="module")
def local_qwen2(tmp_path_factory) -> Path:
    """A Qwen2 checkpoint no catalog entry names: its own geometry, calibrated random weights."""
    from transformers import Qwen2Config

    from sentinel_core.synthetic import make_synthetic_checkpoint

    config = Qwen2Config(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=6,
                         num_key_value_heads=2, vocab_size=384, max_position_embeddings=128, tie_word_embeddings=False)
    return make_synthetic_checkpoint(config, tmp_path_factory.mktemp("my-finetune") / "my-finetune")


def test_a_local_folder_gets_load_infer_and_quality_rows_that_pass(local_qwen2, tmp_path):
    results = tmp_path / "rows.jsonl"
    done = run_matrix("--models", str(local_qwen2), "--checks", "load,infer,quality", results=results)
    rows = read(results)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert sorted(r["check"] for r in rows) == ["infer", "load", "quality"]
    for row in rows:
        assert (row["outcome"], row["family"], row["weights"], row["model"]) == \
            ("passed", "qwen2", "local", str(local_qwen2))
        assert row["checkpoint"] == {"location": str(local_qwen2), "fingerprint": sources.fingerprint(local_qwen2)}
        assert row["metrics"]["adaptive_path"] == "native"


@pytest.mark.parametrize("name, suggestion", [("tiny/gpt3", "'tiny/gpt2'"), ("TINY/LLAMA2", "'tiny/llama'"),
                                              ("no-such-org/no-such-model", None)])
def test_an_id_that_is_nothing_here_is_a_usage_error_that_records_nothing(tmp_path, name, suggestion):
    """Neither a catalog id, a folder, a file nor in the HF cache (offline): no row, one line, the closest ids."""
    results = tmp_path / "rows.jsonl"
    done = run_matrix("--models", name, "--checks", "load", results=results)
    assert done.returncode == 4 and not results.exists(), done.stdout[-500:]
    error = next(line for line in (done.stdout + done.stderr).splitlines() if line.startswith("ERROR: --models"))
    assert f"{name!r} is no catalog id, folder or file, and not in the Hugging Face cache" in error
    assert (suggestion in error.split("did you mean", 1)[-1]) if suggestion else ("did you mean" not in error), error


def test_a_tokenizer_larger_than_the_vocabulary_is_a_row_failure_naming_the_fix(local_qwen2, tmp_path):
    import shutil

    from tokenizer_fixture import save_tokenizer

    folder = tmp_path / "mismatched"
    shutil.copytree(local_qwen2, folder)
    save_tokenizer(folder, vocab_size=512)  # the model has 384 rows
    with pytest.raises(adhoc.AdhocError, match=r"tokenizer has 51\d tokens and the model's vocabulary 384: save the tokenizer"):
        adhoc.provision(adhoc.resolve(str(folder)))


def test_every_family_alias_names_a_family_with_a_converter():
    from sentinel_core.families import FAMILIES
    from sentinel_core.names import FAMILY_ALIASES

    assert set(FAMILY_ALIASES.values()) <= set(FAMILIES), set(FAMILY_ALIASES.values()) - set(FAMILIES)
    assert all(alias == alias.lower() and alias not in FAMILIES for alias in FAMILY_ALIASES)
