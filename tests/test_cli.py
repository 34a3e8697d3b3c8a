"""The command line, end to end on a tiny synthetic GPT-2 with a real (trained offline) tokenizer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from tokenizer_fixture import save_tokenizer  # noqa: E402
from variants import variants  # noqa: E402

from sentinel_core import FAMILIES  # noqa: E402
from sentinel_core.cli import build_parser, main, sampling_settings  # noqa: E402
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
    assert code == 0 and "Greedy decoding is the default" in out
