"""fp32 on CUDA multiplies in HF's matrix shapes (sentinel_core.decoder.hf_shapes): q, k, v and gate, up as
separate linears where HF has separate ones. Which families that is comes from their rules; the split
path must compute what the fused one does (here on CPU, forced on), pruned heads and biases included."""

import pytest
import torch

import sentinel_core.decoder as decoder
from sentinel_core import load_adaptive_model

FLAGS = {  # variant: (HF multiplies q, k, v separately; gate and up separately)
    "gpt2": (False, False), "opt-pre-ln": (True, False), "neox-parallel": (False, False), "bloom": (False, False),
    "llama-gqa": (True, True), "qwen2-qkv-bias-sliding-layer": (True, True), "phi3-fused-gqa-sliding-window": (False, False),
    "gemma-multi-query-wide-heads": (True, True), "gemma3-sliding-global-linear-rope": (True, True),
    "falcon-7b-style-multi-query-parallel": (False, False), "gptj-interleaved-rotary": (True, False),
}


@pytest.mark.parametrize("name", list(FLAGS))
def test_separate_projections_are_read_from_the_rules(name, synthetic_folders):
    spec = load_adaptive_model(synthetic_folders(name)).spec
    assert (spec.hf_separate_qkv, spec.hf_separate_gate_up) == FLAGS[name]


@pytest.mark.parametrize("name", ["llama-gqa", "qwen2-qkv-bias-sliding-layer", "gemma-multi-query-wide-heads", "opt-pre-ln"])
@torch.no_grad()
def test_split_linears_compute_the_fused_ones(name, synthetic_folders, left_padded_batch, monkeypatch):
    model = load_adaptive_model(synthetic_folders(name))
    model.prune_heads({0: [0], 1: list(range(model.num_heads // 2))})  # uneven layers, a whole KV group gone
    ids, mask = left_padded_batch
    fused = model(ids, attention_mask=mask).logits
    calls = []
    real_split = decoder.split_linear
    monkeypatch.setattr(decoder, "hf_shapes", lambda x: True)
    monkeypatch.setattr(decoder, "split_linear", lambda *a: calls.append(a[2]) or real_split(*a))
    split = model(ids, attention_mask=mask).logits
    hd = model.spec.head_dim
    for layer in model.layers:  # HF's q, k and v shapes, as each layer has them after pruning
        a = layer.attn
        assert [a.num_heads * hd, a.num_kv_heads * hd, a.num_kv_heads * hd] in calls
    torch.testing.assert_close(split, fused, rtol=0, atol=1e-4)
    cached = model.generate(ids, attention_mask=mask, max_new_tokens=4, eos_token_id=[], static_cache=True)
    monkeypatch.undo()
    assert torch.equal(cached, model.generate(ids, attention_mask=mask, max_new_tokens=4, eos_token_id=[],
                                              static_cache=True))


def test_half_precision_and_cpu_stay_fused():
    assert not decoder.hf_shapes(torch.zeros(1))
    assert not decoder.hf_shapes(torch.zeros(1, dtype=torch.bfloat16))
