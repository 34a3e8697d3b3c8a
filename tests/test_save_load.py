"""Pruned checkpoints: save_pretrained then load_adaptive_model gives the same model, bit for bit."""

import json

import pytest
import torch

from sentinel_core import (CheckpointError, UnsupportedModelError, load_adaptive_model, load_baseline_model)
from sentinel_core.saving import MANIFEST, WEIGHTS

# GQA (llama, gemma3_text: whole KV groups pruned, uneven groups left), biases and Conv1D (gpt2), OPT's
# projections and post-LN, ALiBi (per-head biases of a pruned layer), tied embeddings with sliding layers (qwen2).
NAMES = ["llama-gqa", "gemma3-sliding-global-linear-rope", "gpt2", "opt-350m-style", "falcon-rw-alibi-12-heads",
         "qwen2-qkv-bias-sliding-layer"]
PLAN = {0: [0, 1], 1: [2]}  # layer 0 loses a whole GQA group; layer 1 is left with uneven groups


def edited(model):
    """Pruned, and gates that are not 1 on heads that stay (0.5, 0, a negative one)."""
    model.prune_heads(PLAN)
    with torch.no_grad():
        model.gates[1, 0] = 0.5
        model.gates[0, 3] = 0.0
        model.gates[1, 1] = -1.25
    return model


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def assert_same(a, b, batch):
    ids, mask = batch
    assert a.pruned_heads == b.pruned_heads
    assert n_params(a) == n_params(b)
    assert torch.equal(a.gates, b.gates)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert (b.lm_head.weight is b.embed.weight) == (a.lm_head.weight is a.embed.weight)
    with torch.no_grad():
        assert torch.equal(a(ids, attention_mask=mask).logits, b(ids, attention_mask=mask).logits)
    assert torch.equal(a.generate(ids, attention_mask=mask, max_new_tokens=6, eos_token_id=[]),
                       b.generate(ids, attention_mask=mask, max_new_tokens=6, eos_token_id=[]))


@pytest.mark.parametrize("name", NAMES)
def test_pruned_gated_round_trip_is_bitwise(synthetic_folders, left_padded_batch, tmp_path, name):
    model = edited(load_adaptive_model(synthetic_folders(name)))
    model.save_pretrained(tmp_path)
    loaded = load_adaptive_model(tmp_path)
    assert loaded.adaptive_path == "native" and loaded.spec == model.spec
    assert loaded.config.model_type == model.config.model_type
    assert loaded.dtype == torch.float32 and loaded.device == torch.device("cpu")
    assert_same(model, loaded, left_padded_batch)
    assert loaded.pruned_heads == PLAN
    # As HF's from_pretrained: eval mode and trainable weights; the gates are set by hand, never trained.
    assert not loaded.training and not loaded.gates.requires_grad
    assert all(p.requires_grad for name, p in loaded.named_parameters() if p is not loaded.gates)


def test_unpruned_round_trip_and_manifest(synthetic_folders, left_padded_batch, tmp_path):
    model = load_adaptive_model(synthetic_folders("llama-gqa"))
    model.save_pretrained(tmp_path)
    loaded = load_adaptive_model(tmp_path)
    assert_same(model, loaded, left_padded_batch)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["format_version"] == 1 and manifest["model_type"] == "llama" and manifest["pruned_heads"] == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([MANIFEST, *manifest["files"]])
    # Saving again over a saved folder is fine, and the generation config's ids survive.
    loaded.save_pretrained(tmp_path)
    again = load_adaptive_model(tmp_path)
    assert again.generation_config.eos_token_id == model.generation_config.eos_token_id


def test_load_with_bfloat16_equals_a_bfloat16_conversion_pruned_alike(synthetic_folders, left_padded_batch, tmp_path):
    folder = synthetic_folders("gemma3-sliding-global-linear-rope")
    edited(load_adaptive_model(folder)).save_pretrained(tmp_path)
    loaded = load_adaptive_model(tmp_path, dtype=torch.bfloat16)
    reference = edited(load_adaptive_model(folder, dtype=torch.bfloat16))
    assert loaded.dtype == torch.bfloat16 and loaded.gates.dtype == torch.bfloat16
    assert loaded.inv_freq.dtype == torch.float32  # rebuilt from the spec, as a conversion builds it
    assert_same(reference, loaded, left_padded_batch)


def test_bfloat16_model_round_trip_keeps_its_dtype(synthetic_folders, left_padded_batch, tmp_path):
    model = edited(load_adaptive_model(synthetic_folders("llama-gqa"), dtype="bf16"))
    model.save_pretrained(tmp_path)
    loaded = load_adaptive_model(tmp_path)
    assert loaded.dtype == torch.bfloat16
    assert_same(model, loaded, left_padded_batch)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_is_honoured(synthetic_folders, left_padded_batch, tmp_path):
    model = edited(load_adaptive_model(synthetic_folders("llama-gqa")))
    model.save_pretrained(tmp_path)
    loaded = load_adaptive_model(tmp_path, device="cuda")
    assert loaded.device.type == "cuda" and all(t.is_cuda for t in [*loaded.parameters(), *loaded.buffers()])
    assert_same(model.to("cuda"), loaded, [t.cuda() for t in left_padded_batch])


@pytest.fixture(scope="module")
def bigcode_folder(tmp_path_factory):
    """A model_type with no converter: loads through the generic gated wrapper."""
    from transformers import GPTBigCodeConfig

    from sentinel_core.synthetic import make_synthetic_checkpoint

    config = GPTBigCodeConfig(vocab_size=512, n_embd=64, n_layer=2, n_head=4, n_positions=64, multi_query=True)
    return make_synthetic_checkpoint(config, tmp_path_factory.mktemp("bigcode"), seed=3)


def test_generic_wrapper_refuses_to_save(bigcode_folder, tmp_path):
    model = load_adaptive_model(bigcode_folder)
    assert model.adaptive_path == "generic-wrapper"
    with pytest.raises(UnsupportedModelError, match="generic gated wrapper.*cannot save.*model.hf.save_pretrained"):
        model.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.fixture
def saved(synthetic_folders, tmp_path):
    edited(load_adaptive_model(synthetic_folders("gpt2"))).save_pretrained(tmp_path)
    return tmp_path


def _edit_manifest(folder, change):
    manifest = json.loads((folder / MANIFEST).read_text())
    change(manifest)
    (folder / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("corrupt, message", [
    (lambda f: (f / MANIFEST).write_text("{not json"),
     "sentinel.json is unreadable.*re-save it with model.save_pretrained"),
    (lambda f: _edit_manifest(f, lambda m: m.update(format_version=99)),
     "saved in Sentinel checkpoint format 99.*reads format 1 at most: upgrade sentinel"),
    (lambda f: _edit_manifest(f, lambda m: m.update(format_version="1")), "not a Sentinel manifest"),
    (lambda f: _edit_manifest(f, lambda m: m.pop("spec")), "not a Sentinel manifest"),
    (lambda f: (f / MANIFEST).write_text("[]"), "not a Sentinel manifest"),
    (lambda f: _edit_manifest(f, lambda m: m["spec"].update(new_knob=True)), "fields this sentinel.*new_knob.*upgrade"),
    (lambda f: _edit_manifest(f, lambda m: m["spec"].update(norm="batchnorm")), "saved spec is invalid"),
    (lambda f: _edit_manifest(f, lambda m: m.update(pruned_heads={})), "are not the manifest's"),
    (lambda f: (f / WEIGHTS).unlink(), f"lacks {WEIGHTS}, which sentinel.json lists.*re-save"),
    (lambda f: (f / "config.json").unlink(), "lacks config.json"),
    (lambda f: (f / "config.json").write_text("{"), "does not hold a loadable checkpoint"),
    (lambda f: (f / WEIGHTS).write_bytes((f / WEIGHTS).read_bytes()[:100]), f"{WEIGHTS} is unreadable"),
])
def test_a_broken_folder_is_one_clear_error(saved, corrupt, message):
    corrupt(saved)
    with pytest.raises(CheckpointError, match=message):
        load_adaptive_model(saved)


def test_a_saved_folder_is_not_an_hf_checkpoint(saved, synthetic_folders):
    with pytest.raises(CheckpointError, match="saved by Sentinel.*load it with load_adaptive_model"):
        load_baseline_model(saved)
    # ...and saving into an HF checkpoint's folder is refused, so the two are never mixed.
    model = load_adaptive_model(saved)
    with pytest.raises(CheckpointError, match="holds a Hugging Face checkpoint"):
        model.save_pretrained(synthetic_folders("gpt2"))
