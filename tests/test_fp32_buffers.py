"""Rotary frequencies and ALiBi slopes stay fp32 whatever the model's dtype, as HF keeps them.

Rounded to bf16 with the weights, TinyLlama's frequencies put the angle at position 124 0.17 rad off and
the adaptive model's mean KL to HF fp32 at 3.15x HF bf16's own; every bf16 row let it through.
"""

import pytest
import torch

from sentinel_core import load_adaptive_model, load_baseline_model
from sentinel_core.synthetic import make_synthetic_checkpoint
from variants import hf_attention, variants

FP32_BUFFERS = ("inv_freq", "long_inv_freq", "local_inv_freq", "alibi_slopes")
POSITIONS = 512
KL_WITHIN = 1.25  # the adaptive model's mean KL to HF fp32, as a multiple of HF bf16's own

# One variant per family with rotary positions (and BLOOM's ALiBi), widened to 64-dim heads (as in the real
# checkpoints: the more frequencies, the more of them bf16 rounds) and 1,024 positions.
WIDE = {
    "llama-gqa": {}, "mistral-sliding-window": {}, "qwen2-qkv-bias-sliding-layer": {},
    "gemma-multi-query-wide-heads": {}, "gemma3-softcap-mqa-bias-untied": {}, "phi-partial-rotary-parallel": {},
    "phi3-fused-gqa-sliding-window": {}, "stablelm-qkv-bias": {}, "neox-serial": {},
    "gptj-interleaved-rotary": {"n_embd": 256, "n_head": 4, "rotary_dim": 64},
    "falcon-serial-multi-head": {},
    "bloom": {"hidden_size": 256, "n_head": 16},  # 16 heads: slopes 2^(-k/2), which bf16 cannot hold
}


def wide_config(name: str):
    config = variants()[name]
    for key, value in (WIDE[name] or {"hidden_size": 256, "num_attention_heads": 4}).items():
        setattr(config, key, value)
    if getattr(config, "head_dim", None) is not None and not isinstance(type(config).__dict__.get("head_dim"), property):
        config.head_dim = 64
    for key in ("max_position_embeddings", "n_positions"):
        if hasattr(config, key):
            setattr(config, key, 2 * POSITIONS)
    return config


def mean_kl(reference: torch.Tensor, other: torch.Tensor) -> float:
    p = reference.float().log_softmax(-1)
    return (p.exp() * (p - other.float().log_softmax(-1))).sum(-1).mean().item()


@pytest.mark.parametrize("name", list(WIDE))
def test_bf16_error_is_hf_bf16s_own(name, tmp_path):
    folder = make_synthetic_checkpoint(wide_config(name), tmp_path, seed=5)
    ids = torch.randint(3, 500, (2, POSITIONS), generator=torch.Generator().manual_seed(0))
    attention = hf_attention(name)
    with torch.no_grad():
        reference = load_baseline_model(folder, dtype="float32", attn_implementation=attention)(ids).logits
        hf = load_baseline_model(folder, dtype="bfloat16", attn_implementation=attention)
        hf_bf16 = hf(ids).logits
        # The matrix's path (converted from HF's bf16 model), where the frequencies used to be rounded.
        ours = load_adaptive_model(folder, baseline_model=hf, dtype="bfloat16")(ids).logits
    ratio = mean_kl(reference, ours) / mean_kl(reference, hf_bf16)
    assert ratio <= KL_WITHIN, f"{name}: adaptive bf16 sits {ratio:.2f}x HF bf16's mean KL from HF fp32"


def _fp32_buffers(model) -> dict:
    return {name: buf for name, buf in model.named_buffers() if name.split(".")[-1] in FP32_BUFFERS}


@pytest.mark.parametrize("name", ["llama-gqa", "phi3-longrope-partial-rotary", "gemma3-sliding-global-linear-rope",
                                  "bloom-post-ln-residual-6-heads"])
def test_buffers_stay_fp32_through_every_cast(name, synthetic_folders, tmp_path):
    folder = synthetic_folders(name)
    exact = {k: v.clone() for k, v in _fp32_buffers(load_adaptive_model(folder)).items()}
    assert exact
    hf = load_baseline_model(folder, dtype="bfloat16")
    models = {
        "dtype=": load_adaptive_model(folder, dtype="bfloat16"),
        "baseline_model=": load_adaptive_model(folder, baseline_model=hf, dtype="bfloat16"),
        ".to(bf16)": load_adaptive_model(folder).to(torch.bfloat16),
        ".half()": load_adaptive_model(folder).half(),
        ".to(cpu, fp16)": load_adaptive_model(folder).to("cpu", torch.float16),
    }
    models[".half()"].save_pretrained(tmp_path / "saved")
    models["saved fp16"] = load_adaptive_model(tmp_path / "saved")
    models["saved, dtype=bf16"] = load_adaptive_model(tmp_path / "saved", dtype="bfloat16")
    for how, model in models.items():
        assert model.embed.weight.dtype != torch.float32, how
        buffers = _fp32_buffers(model)
        assert set(buffers) == set(exact), how
        for key, value in buffers.items():
            assert value.dtype == torch.float32 and torch.equal(value, exact[key]), f"{how}: {key} is {value.dtype}"


def test_generic_wrapper_keeps_hf_rotary_in_fp32(tmp_path):
    from transformers import CodeGenConfig

    config = CodeGenConfig(vocab_size=512, n_embd=64, n_layer=2, n_head=4, rotary_dim=8, n_positions=64)
    folder = make_synthetic_checkpoint(config, tmp_path, seed=3, calibrate=False)
    wrapped = load_adaptive_model(folder)
    fp32 = {name for name, buf in wrapped.named_buffers() if buf.dtype == torch.float32}
    assert fp32, "CodeGen keeps its sin/cos table as an fp32 buffer"
    wrapped = wrapped.to(torch.bfloat16)
    assert all(dict(wrapped.named_buffers())[name].dtype == torch.float32 for name in fp32)
