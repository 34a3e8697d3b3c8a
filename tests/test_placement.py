"""Models placed across devices with accelerate (sentinel_core/placement.py), on the CPU: layers offloaded to disk
force the split. The adaptive model placed so equals HF's own model placed the same way, and equals itself unsplit;
gates act on a split model; what cannot work split is refused by name."""

import pytest
import torch
from transformers import BartConfig, LlamaConfig

from sentinel_core import InputError, PruneError, UnsupportedModelError, load_adaptive_model, load_baseline_model
from sentinel_core.synthetic import make_synthetic_checkpoint

HF_SPLIT = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.layers.2": "disk",
            "model.layers.3": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
OUR_SPLIT = {"embed": "cpu", "layers.0": "cpu", "layers.1": "disk", "layers.2": "disk", "layers.3": "cpu",
             "final_norm": "cpu", "lm_head": "cpu"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return make_synthetic_checkpoint(config, tmp_path_factory.mktemp("llama"), seed=7)


@pytest.fixture(scope="module")
def batch():
    ids = torch.randint(3, 128, (2, 11), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding, as generate pads
    return ids, mask


def logprobs(model, ids, mask):
    with torch.no_grad():
        return model(ids, attention_mask=mask).logits.float().log_softmax(-1)


@pytest.fixture(scope="module")
def split_pair(folder, tmp_path_factory):
    hf = load_baseline_model(folder, attn_implementation="eager", device_map=HF_SPLIT,
                             offload_folder=tmp_path_factory.mktemp("hf-offload"))
    ours = load_adaptive_model(folder, device_map=OUR_SPLIT, offload_folder=tmp_path_factory.mktemp("offload"))
    assert "gates" not in OUR_SPLIT  # the caller's map is left as given
    return hf, ours


def test_a_split_model_equals_hfs_split_the_same_way(split_pair, batch):
    hf, ours = split_pair
    assert ours.hf_device_map["layers.1"] == "disk" and hf.hf_device_map["model.layers.1"] == "disk"
    assert any(p.device.type == "meta" for p in ours.parameters())  # the offloaded layers' weights are not held
    real = batch[1].bool()
    assert (logprobs(ours, *batch) - logprobs(hf, *batch))[real].abs().max().item() <= 1e-4
    theirs = hf.generate(batch[0], attention_mask=batch[1], max_new_tokens=6, do_sample=False)
    assert torch.equal(ours.generate(batch[0], attention_mask=batch[1], max_new_tokens=6), theirs)


def test_split_and_unsplit_are_one_model(folder, split_pair, batch):
    _, ours = split_pair
    whole = load_adaptive_model(folder)
    assert torch.equal(logprobs(ours, *batch), logprobs(whole, *batch))
    ours.gates[2, 1] = 0  # a gate of a disk-offloaded layer
    whole.gates[2, 1] = 0
    try:
        moved = (logprobs(ours, *batch) - logprobs(whole, *batch)).abs().max().item()
        assert moved == 0.0
        assert (logprobs(ours, *batch) - logprobs(load_adaptive_model(folder), *batch)).abs().max().item() > 1e-3
    finally:
        ours.gates[2, 1] = 1


def test_cached_decoding_on_a_split_model_equals_a_full_forward(split_pair, batch):
    _, ours = split_pair
    ids, mask = batch
    with torch.no_grad():
        full = ours(ids, attention_mask=mask).logits
        first = ours(ids[:, :6], attention_mask=mask[:, :6], use_cache=True)
        rest = ours(ids[:, 6:], attention_mask=mask, past_key_values=first.past_key_values, use_cache=True)
    assert (torch.cat([first.logits, rest.logits], dim=1) - full)[mask.bool()].abs().max().item() <= 1e-5


def test_auto_placement_within_max_memory_offloads_what_does_not_fit(folder, tmp_path, batch):
    ours = load_adaptive_model(folder, device_map="auto", max_memory={"cpu": 300_000}, offload_folder=tmp_path)
    assert "disk" in ours.hf_device_map.values() and ours.hf_device_map["gates"] == "cpu"
    assert not any(name.startswith("layers.0.") for name in ours.hf_device_map)  # blocks are never split
    assert torch.equal(logprobs(ours, *batch), logprobs(load_adaptive_model(folder), *batch))


def test_a_model_split_without_offload_prunes_as_the_whole_model_does(folder, batch):
    split = {"embed": "cpu", "layers.0": "cpu", "layers.1": "cpu", "layers.2": "cpu", "layers.3": "cpu",
             "final_norm": "cpu", "lm_head": "cpu"}
    ours, whole = load_adaptive_model(folder, device_map=split), load_adaptive_model(folder)
    for model in (ours, whole):
        model.prune_heads({1: [0, 1], 3: [2]})
    assert torch.equal(logprobs(ours, *batch), logprobs(whole, *batch))


def test_what_a_split_model_cannot_do_is_refused_by_name(split_pair, folder, tmp_path, batch):
    _, ours = split_pair
    with pytest.raises(PruneError, match="offloaded layers"):
        ours.prune_heads({1: [0]})
    with pytest.raises(UnsupportedModelError, match="offloaded layers"):
        ours.save_pretrained(tmp_path / "saved")
    with pytest.raises(InputError, match="dynamic cache"):
        ours.generate(batch[0], attention_mask=batch[1], max_new_tokens=2, static_cache=True)


@pytest.mark.parametrize("kwargs, error, says", [
    ({"device_map": "everywhere"}, InputError, "'auto'"),
    ({"device_map": {"embed": "gpu7"}}, InputError, "GPU index"),
    ({"device_map": OUR_SPLIT}, InputError, "offload_folder"),
    ({"device_map": "auto", "device": "cuda"}, InputError, "give one"),
    ({"device_map": "auto", "max_memory": {"cpu": 10_000}}, InputError, "offload_folder"),
])
def test_bad_placements_are_one_line(folder, kwargs, error, says):
    with pytest.raises(error, match=says):
        load_adaptive_model(folder, **kwargs)


def test_an_encoder_decoder_is_not_split(tmp_path):
    config = BartConfig(vocab_size=64, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32)
    folder = make_synthetic_checkpoint(config, tmp_path / "bart", seed=1, calibrate=False)
    with pytest.raises(UnsupportedModelError, match="AdaptiveSeq2SeqLM is not split"):
        load_adaptive_model(folder, device_map="auto")


@pytest.mark.end_to_end
def test_matrix_rows_with_device_map_record_the_placement(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    results = tmp_path / "rows.jsonl"
    done = subprocess.run([sys.executable, "-m", "pytest", "matrix/", "--models", "tiny/llama", "--checks",
                           "load,infer,quality", "--device-map", "auto", "--results", str(results), "-q",
                           "-p", "no:randomly", "-p", "no:cacheprovider"],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-1500:]
    rows = {r["check"]: r for r in map(json.loads, results.read_text().splitlines())}
    assert {check: r["outcome"] for check, r in rows.items()} == dict.fromkeys(("load", "infer", "quality"), "passed")
    assert set(rows["load"]["metrics"]["placement"]) == {"cpu"}  # one CPU: every module there, none offloaded
