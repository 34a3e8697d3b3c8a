"""A checkpoint is read once: resolve_checkpoint's config and spec feed both loaders, which read neither again; a
saved adaptive folder resolves to its own saved spec (pruned heads included); a folder saved before the spec said
which fused matrices HF multiplies apart gets that from the family's rules."""

import json

import pytest
import torch

import sentinel_core.loader as loader
from sentinel_core import load_adaptive_model, load_baseline_model, resolve_checkpoint
from sentinel_core.saving import MANIFEST


@pytest.fixture
def folder(synthetic_folders):
    return synthetic_folders("llama-gqa")


def test_the_loaders_read_the_config_once(folder, monkeypatch):
    checkpoint = resolve_checkpoint(folder)
    fresh = resolve_checkpoint(folder).config.to_dict()
    assert checkpoint.spec.family == "llama" and not checkpoint.saved
    calls = []
    monkeypatch.setattr(loader, "load_config", lambda *a, **k: calls.append(a) or pytest.fail("config read again"))
    model = load_adaptive_model(checkpoint)
    baseline = load_baseline_model(checkpoint)
    ids = torch.randint(3, 100, (1, 7))
    assert torch.equal(model(ids).logits.argmax(-1), baseline(ids).logits.argmax(-1)) and not calls
    assert checkpoint.config.to_dict() == fresh  # the loaders left it as it was


def test_a_saved_folder_resolves_to_its_saved_spec(folder, tmp_path):
    model = load_adaptive_model(folder)
    model.prune_heads({0: [1]})
    model.save_pretrained(tmp_path / "saved")
    checkpoint = resolve_checkpoint(tmp_path / "saved")
    assert checkpoint.saved and checkpoint.spec == model.spec
    assert load_adaptive_model(checkpoint).pruned_heads == {0: [1]}


def test_an_old_saved_folder_takes_hf_separate_from_the_rules(folder, tmp_path):
    model = load_adaptive_model(folder)
    assert model.spec.hf_separate_qkv and model.spec.hf_separate_gate_up  # Llama's q, k, v and gate, up are apart in HF
    model.save_pretrained(tmp_path / "old")
    manifest = json.loads((tmp_path / "old" / MANIFEST).read_text())
    for key in ("hf_separate_qkv", "hf_separate_gate_up"):
        del manifest["spec"][key]  # as a folder saved before these fields existed
    (tmp_path / "old" / MANIFEST).write_text(json.dumps(manifest))
    assert load_adaptive_model(tmp_path / "old").spec == model.spec
