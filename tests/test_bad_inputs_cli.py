"""Every bad input to `sentinel generate` is one line on stderr, "error: ...", naming the fix, with exit status 2
and no traceback; where the Python API takes the same input, it raises the SentinelError subclass that line
comes from. Each case builds its bad input from a small checkpoint (hidden 32-64, 2 layers, vocabulary 512)."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GPTBigCodeConfig

from sentinel_core import (CheckpointError, DeviceError, RemoteCodeError, load_adaptive_model,
                           load_baseline_model)
from sentinel_cli import main
from sentinel_core.synthetic import cached_synthetic_checkpoint, make_synthetic_checkpoint
from tokenizer_fixture import make_tokenizer
from variants import VOCAB, variants

PROMPT = "The fox walked to the river"
# No converter, learned positions (64 of them): goes through the generic gated wrapper.
WRAPPER = GPTBigCodeConfig(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=1,
                           eos_token_id=2)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once, at import


@pytest.fixture(scope="module")
def sources(synthetic_folders, tmp_path_factory) -> dict[str, Path]:
    """The checkpoints the cases start from, each with a tokenizer; a case edits a copy."""
    wrapper = make_synthetic_checkpoint(WRAPPER, tmp_path_factory.mktemp("wrapper"), calibrate=False)
    tokenizer = make_tokenizer(VOCAB)
    folders = {}
    for name, folder in (("gpt2", synthetic_folders("gpt2")), ("llama-gqa", synthetic_folders("llama-gqa")),
                         ("wrapper", wrapper)):
        folders[name] = Path(shutil.copytree(folder, tmp_path_factory.mktemp("sources") / name))
        tokenizer.save_pretrained(str(folders[name]))
    return folders


@dataclass
class Bad:
    """One bad input: the command line that gives it (None where the CLI cannot even express it) and the API
    call that takes it (None where the API has no such input)."""

    argv: list | None
    api: Callable | None


@dataclass
class Workshop:
    """What a case builds its bad input with: the source checkpoints, its own folder, and monkeypatch."""

    sources: dict[str, Path]
    tmp: Path
    monkeypatch: pytest.MonkeyPatch

    def copy(self, name: str) -> Path:
        return Path(shutil.copytree(self.sources[name], self.tmp / name))


def generate_argv(model, *options, prompt: str = PROMPT) -> list:
    return ["--model_name", model, "--prompt", prompt, "--max_new_tokens", 4, "--device", "cpu", *options]


def loading(model) -> Bad:
    """The CLI and load_adaptive_model given the same model."""
    return Bad(generate_argv(model), lambda: load_adaptive_model(str(model)))


def reshaped(source: str, key: str, reshape) -> Callable[[Workshop], Bad]:
    def build(w: Workshop) -> Bad:
        folder = w.copy(source)
        weights = load_file(folder / "model.safetensors")
        weights[key] = reshape(weights[key]).contiguous()
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
        return loading(folder)
    return build


def config_field(source: str, **fields) -> Callable[[Workshop], Bad]:
    def build(w: Workshop) -> Bad:
        folder = w.copy(source)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **fields}))
        return loading(folder)
    return build


class RunsAShellCommand:
    """What a malicious pickle does: unpickling it calls os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def pytorch_bin(kind: str) -> Callable[[Workshop], Bad]:
    def build(w: Workshop) -> Bad:
        folder = w.copy("gpt2")
        weights = load_file(folder / "model.safetensors")
        (folder / "model.safetensors").unlink()
        path = folder / "pytorch_model.bin"
        if kind == "malicious":
            torch.save({"transformer.wte.weight": RunsAShellCommand(w.tmp / "payload-ran")}, path)
        else:
            torch.save(weights, path)
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return loading(folder)
    return build


def gguf(kind: str) -> Callable[[Workshop], Bad]:
    def build(w: Workshop) -> Bad:
        import gguf as gguf_lib
        import numpy as np

        path = w.tmp / "model.gguf"
        if kind == "not gguf":
            path.write_bytes(b"<html>this download is an error page, not a model</html>")
        else:
            writer = gguf_lib.GGUFWriter(str(path), "llama")
            writer.add_block_count(2)
            writer.add_embedding_length(32)
            writer.add_tensor("token_embd.weight", np.zeros((VOCAB, 32), dtype=np.float32))
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
        return loading(path)
    return build


def no_cuda(build: Callable[[Workshop], Bad]) -> Callable[[Workshop], Bad]:
    def build_without_cuda(w: Workshop) -> Bad:
        w.monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        return build(w)
    return build_without_cuda


def cuda_with_two_devices(w: Workshop) -> Bad:
    w.monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    w.monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    return Bad(None, lambda: load_adaptive_model(str(w.sources["gpt2"]), device="cuda:7"))


def bigger_tokenizer(w: Workshop) -> Bad:
    folder = w.copy("gpt2")
    make_tokenizer(900).save_pretrained(str(folder))  # the model has 512 token ids
    return Bad(generate_argv(folder, prompt="the keeper climbed the narrow stairs to light the lamp"), None)


def remote_code(w: Workshop) -> Bad:
    (w.tmp / "config.json").write_text(json.dumps({
        "model_type": "custom_remote", "auto_map": {"AutoConfig": "configuration_x.XConfig",
                                                     "AutoModelForCausalLM": "modeling_x.XModel"}}))
    return loading(w.tmp)


def truncated_cached_checkpoint(w: Workshop) -> Bad:
    folder = cached_synthetic_checkpoint(variants()["gpt2"], w.tmp / "synthetic", seed=1234, calibrate=False)
    for file in w.sources["gpt2"].glob("tokenizer*"):
        shutil.copy(file, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return loading(folder)


# The CLI and the API spell the way out their own way.
NO_CUDA = re.compile(r"CUDA is not available \(.*\): use (--device cpu|device='cpu')$")

# case -> (what builds the bad input, what the API raises for it (None: no API call), what the message says:
# literal text, or a pattern)
CASES = {
    "gpt2 tensor truncated": (
        reshaped("gpt2", "transformer.h.0.attn.c_attn.weight", lambda t: t[:, :128]), CheckpointError,
        "transformer.h.0.attn.c_attn.weight has shape (64, 128) in the checkpoint but the config expects (64, 192)"),
    "llama tensor transposed": (
        reshaped("llama-gqa", "model.layers.1.self_attn.k_proj.weight", lambda t: t.T), CheckpointError,
        "model.layers.1.self_attn.k_proj.weight has shape (64, 32) in the checkpoint but the config expects (32, 64)"),
    "wrapper tensor transposed": (
        reshaped("wrapper", "transformer.h.0.attn.c_attn.weight", lambda t: t.T), CheckpointError,
        "transformer.h.0.attn.c_attn.weight has shape (32, 48) in the checkpoint but the config expects (48, 32)"),
    "gpt2 config n_layer a word": (
        config_field("gpt2", n_layer="two"), CheckpointError,
        "config.json does not validate (Field 'n_layer' expected int, got str (value: 'two')): correct it"),
    "llama config heads a string": (
        config_field("llama-gqa", num_attention_heads="4"), CheckpointError,
        "config.json does not validate (Field 'num_attention_heads' expected int"),
    "wrapper config heads a string": (
        config_field("wrapper", n_head="4"), CheckpointError, "config.json does not validate (Field 'n_head'"),
    "truncated pytorch_model.bin": (
        pytorch_bin("truncated"), CheckpointError, "(pytorch_model.bin) are unreadable or unsafe"),
    "malicious pytorch_model.bin": (
        pytorch_bin("malicious"), CheckpointError, "(it asks to call posix.system) and nothing in them was run; "
                                                   "re-download the model, or use its .safetensors weights"),
    "not a GGUF file": (gguf("not gguf"), CheckpointError, "model.gguf is not a readable GGUF file"),
    "truncated GGUF": (gguf("truncated"), CheckpointError, "model.gguf is not a readable GGUF file"),
    "seed beyond 64 bits": (
        lambda w: Bad(generate_argv(w.sources["gpt2"], "--do_sample", "--seed", 2**64), None),
        None, "--seed 18446744073709551616: give a seed in [0, 2**63 - 1]"),
    "prompt not UTF-8": (
        lambda w: Bad(generate_argv(w.sources["gpt2"], prompt=os.fsdecode(b"caf\xe9 au lait")), None),
        None, "--prompt must be UTF-8 text, and it holds byte 0xe9 at position 3"),
    "wrapper prompt past its learned positions": (
        lambda w: Bad(generate_argv(w.sources["wrapper"], prompt="the fox " * 40), None),
        None, "exceeds the model's 64 positions: shorten the prompt or lower --max_new_tokens"),
    "cuda without CUDA": (
        no_cuda(lambda w: Bad(generate_argv(w.sources["gpt2"], "--device", "cuda"),
                              lambda: load_adaptive_model(str(w.sources["gpt2"]), device="cuda"))),
        DeviceError, NO_CUDA),
    "baseline on cuda without CUDA": (
        no_cuda(lambda w: Bad(None, lambda: load_baseline_model(str(w.sources["gpt2"]), device="cuda"))),
        DeviceError, NO_CUDA),
    "unknown device": (
        lambda w: Bad(None, lambda: load_adaptive_model(str(w.sources["gpt2"]), device="gpu")),
        DeviceError, "unknown device 'gpu': use 'cpu', 'cuda' or 'cuda:N'"),
    "cuda:7 of 2 devices": (
        cuda_with_two_devices, DeviceError, "'cuda:7' does not exist: this machine has 2 CUDA device(s)"),
    "tokenizer bigger than the vocabulary": (
        bigger_tokenizer, None, "outside the model's vocabulary 0..511: use the checkpoint's own tokenizer"),
    "needs trust_remote_code": (remote_code, RemoteCodeError, "pass --trust_remote_code"),
    "truncated cached synthetic checkpoint": (
        truncated_cached_checkpoint, CheckpointError, "does not hold a loadable checkpoint"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line(case, sources, tmp_path, monkeypatch, capsys):
    build, api_error, fragment = CASES[case]

    def says(message: str) -> bool:
        return fragment in message if isinstance(fragment, str) else fragment.search(message) is not None

    bad = build(Workshop(sources, tmp_path, monkeypatch))
    assert bad.argv is not None or bad.api is not None
    assert (bad.api is None) == (api_error is None)
    if bad.argv is not None:
        code = main([str(a) for a in bad.argv])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert says(lines[0]), lines[0]
    if bad.api is not None:
        with pytest.raises(api_error) as caught:
            bad.api()
        message = str(caught.value)
        assert says(message) and "\n" not in message, message
    assert not (tmp_path / "payload-ran").exists(), "a pickle in the checkpoint was executed"
