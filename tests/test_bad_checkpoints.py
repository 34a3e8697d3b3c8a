"""Damaged or impossible checkpoints: each one SentinelError subclass, one line naming the fix, raised before any
weights are read where the config alone shows it; never a traceback out of transformers or torch."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from sentinel_core import (CheckpointError, SentinelError, UnsupportedModelError, load_adaptive_model,
                           resolve_checkpoint)
from sentinel_core.saving import WEIGHTS


def copied(synthetic_folders, tmp_path, variant):
    folder = tmp_path / variant
    shutil.copytree(synthetic_folders(variant), folder)
    return folder


def config_edit(variant, **fields):
    def make(synthetic_folders, tmp_path):
        folder = copied(synthetic_folders, tmp_path, variant)
        config = json.loads((folder / "config.json").read_text())
        config.update(fields)
        (folder / "config.json").write_text(json.dumps(config))
        return folder
    return make


def saved_then(edit):
    """A pruned model saved by save_pretrained, then `edit(folder)` applied to what it wrote."""
    def make(synthetic_folders, tmp_path):
        model = load_adaptive_model(synthetic_folders("llama-gqa"))
        model.prune_heads({0: [1, 2], 1: [0]})
        folder = tmp_path / "saved"
        model.save_pretrained(folder)
        edit(folder)
        return folder
    return make


def manifest_field(field, value):
    def edit(folder):
        manifest = json.loads((folder / "sentinel.json").read_text())
        manifest["spec"][field] = value
        (folder / "sentinel.json").write_text(json.dumps(manifest))
    return edit


def tensor(name, value):
    def edit(folder):
        weights = load_file(folder / WEIGHTS)
        weights[name] = torch.tensor(value, dtype=weights[name].dtype)
        save_file(weights, folder / WEIGHTS, metadata={"format": "pt"})
    return edit


def gguf_of(architecture):
    def make(synthetic_folders, tmp_path):
        import gguf
        import numpy as np

        path = tmp_path / f"{architecture}.gguf"
        writer = gguf.GGUFWriter(str(path), architecture)
        writer.add_block_count(1)
        writer.add_context_length(16)
        writer.add_embedding_length(8)
        writer.add_head_count(2)
        writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path
    return make


CASES = {
    # head and layer counts no attention can be built from
    "zero heads": (config_edit("llama-gqa", num_attention_heads=0), CheckpointError, "num_attention_heads=0"),
    "negative heads": (config_edit("llama-gqa", num_attention_heads=-4), CheckpointError, "positive integer"),
    "heads not dividing hidden": (config_edit("gpt2", n_head=5), CheckpointError, "not divisible by its 5"),
    "zero gpt2 heads": (config_edit("gpt2", n_head=0), CheckpointError, "positive integer"),
    "kv heads not dividing heads": (config_edit("llama-gqa", num_key_value_heads=3), CheckpointError,
                                    "does not divide them"),
    "zero kv heads": (config_edit("llama-gqa", num_key_value_heads=0), CheckpointError, "num_key_value_heads=0"),
    "zero layers": (config_edit("llama-gqa", num_hidden_layers=0), CheckpointError, "num_hidden_layers=0"),
    "heads as a string": (config_edit("llama-gqa", num_attention_heads="4"), CheckpointError, "in config.json"),
    "heads as a float": (config_edit("llama-gqa", num_attention_heads=4.5), CheckpointError, "in config.json"),
    # a GGUF of an architecture transformers cannot read
    "bert GGUF": (gguf_of("bert"), UnsupportedModelError, "Hugging Face checkpoint"),
    # a saved folder whose manifest or tensors were edited by hand
    "spec field not an integer": (saved_then(manifest_field("max_positions", "x")), CheckpointError, "sentinel.json"),
    "spec field a float": (saved_then(manifest_field("num_layers", 2.0)), CheckpointError, "sentinel.json"),
    "spec heads zero": (saved_then(manifest_field("num_heads", 0)), CheckpointError, "sentinel.json"),
    "head ids out of range": (saved_then(tensor("layers.0.attn.head_ids", [0, 3, 9])), CheckpointError,
                              "re-save it"),
    "head ids repeated": (saved_then(tensor("layers.0.attn.head_ids", [0, 0])), CheckpointError, "re-save it"),
    "head ids empty": (saved_then(tensor("layers.1.attn.head_ids", [])), CheckpointError, "re-save it"),
    "kv map tampered": (saved_then(tensor("layers.0.attn.kv_of_head", [1, 1])), CheckpointError, "kv_of_head"),
    "kv map out of range": (saved_then(tensor("layers.1.attn.kv_of_head", [0, 7, 7])), CheckpointError,
                            "kv_of_head"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_checkpoint_is_one_sentinel_error_naming_the_fix(synthetic_folders, tmp_path, case):
    make, error, fragment = CASES[case]
    path = make(synthetic_folders, tmp_path)
    with pytest.raises(SentinelError) as caught:
        load_adaptive_model(str(path))
    assert isinstance(caught.value, error), repr(caught.value)
    message = str(caught.value)
    assert fragment in message and "\n" not in message, message


def test_bad_head_counts_fail_before_any_weights_are_read(synthetic_folders, tmp_path):
    folder = config_edit("llama-gqa", num_key_value_heads=3)(synthetic_folders, tmp_path)
    (folder / "model.safetensors").unlink()  # resolve reads the config only
    with pytest.raises(CheckpointError, match="does not divide"):
        resolve_checkpoint(str(folder))


def test_saving_onto_a_file_is_refused(synthetic_folders, tmp_path):
    target = tmp_path / "model.bin"
    target.write_text("keep me")
    with pytest.raises(CheckpointError, match="is a file"):
        load_adaptive_model(synthetic_folders("gpt2")).save_pretrained(target)
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool])
def test_a_float_weight_stored_as_integers_is_refused(synthetic_folders, tmp_path, dtype):
    folder = copied(synthetic_folders, tmp_path, "llama-gqa")
    weights = load_file(folder / "model.safetensors")
    name = next(k for k in weights if k.endswith("q_proj.weight"))
    weights[name] = weights[name].to(dtype)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=f"stores the weight {name} as"):
        load_adaptive_model(str(folder))
