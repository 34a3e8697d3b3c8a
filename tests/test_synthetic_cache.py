"""Synthetic checkpoints on disk: half the bytes and still exact in fp32, one folder per distinct config, a damaged
folder made again, and a disk too small is one clear line before anything is written."""

from __future__ import annotations

import shutil
from collections import namedtuple

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, LlamaConfig

from sentinel_core import synthetic
from sentinel_core.errors import DiskSpaceError, SentinelError


def config():
    return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=512, tie_word_embeddings=False)


def test_values_are_off_bf16s_grid_stored_in_fp32_and_load_back_exactly(tmp_path):
    """On values bf16 holds exactly, a converter rounding weights through bf16 would change nothing."""
    folder = synthetic.make_synthetic_checkpoint(config(), tmp_path / "m")
    with safe_open(folder / "model.safetensors", "pt") as stored:
        assert {stored.get_slice(name).get_dtype() for name in stored.keys()} == {"F32"}
        tensors = {name: stored.get_tensor(name) for name in stored.keys()}
    for name, t in tensors.items():
        assert (t.bfloat16().float() != t).float().mean() > 0.99, f"{name} sits on bf16's grid"
    model = AutoModelForCausalLM.from_pretrained(folder)  # the default dtype: what the config declares
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    for name, p in model.state_dict().items():
        assert torch.equal(p, tensors[name].float()), name


def test_one_folder_per_distinct_config_and_a_damaged_one_is_made_again(tmp_path):
    first = synthetic.cached_synthetic_checkpoint(config(), tmp_path)
    assert synthetic.cached_synthetic_checkpoint(config(), tmp_path) == first
    assert [p.name for p in tmp_path.iterdir()] == [first.name]
    weights = first / "model.safetensors"
    intact = weights.read_bytes()
    weights.write_bytes(intact[: len(intact) // 2])  # a disk that filled up, a copy cut short
    assert not synthetic.checkpoint_intact(first)
    with pytest.warns(UserWarning, match="damaged"):
        again = synthetic.cached_synthetic_checkpoint(config(), tmp_path)
    assert again == first and weights.read_bytes() == intact


def test_a_disk_too_small_is_one_line_saying_how_much_and_where(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DiskSpaceError, match=r"needs 0\.\d+ GB in .* and only 0\.00 GB is free: .*SENTINEL_CACHE"):
        synthetic.cached_synthetic_checkpoint(config(), tmp_path)
    assert issubclass(DiskSpaceError, SentinelError)
    assert not any(tmp_path.rglob("*.safetensors"))
