"""CUDA: bf16 adaptive vs HF eager, and the CUDA-graph decode path equal to eager decode (skipped without a GPU)."""

import pytest
import torch

from sentinel_core import load_adaptive_model, load_baseline_model
from variants import hf_attention, variants

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


@pytest.mark.parametrize("name", list(variants()))
@torch.no_grad()
def test_bf16_matches_hf_and_graph_decode_matches_eager(name, synthetic_folders, left_padded_batch):
    folder = synthetic_folders(name)
    hf = load_baseline_model(folder, device="cuda", dtype="bfloat16", attn_implementation=hf_attention(name))
    model = load_adaptive_model(folder, device="cuda", dtype="bfloat16")
    ids, mask = (t.cuda() for t in left_padded_batch)
    ours = model(ids, attention_mask=mask).logits.float().log_softmax(-1)
    theirs = hf(ids, attention_mask=mask).logits.float().log_softmax(-1)
    real = mask.bool()
    assert (ours.argmax(-1) == theirs.argmax(-1))[real].float().mean() >= 0.95
    eager = model.generate(ids, attention_mask=mask, max_new_tokens=16, eos_token_id=[])
    graphed = model.generate(ids, attention_mask=mask, max_new_tokens=16, eos_token_id=[], cuda_graph=True)
    assert torch.equal(graphed, eager)
    static = model.generate(ids, attention_mask=mask, max_new_tokens=16, eos_token_id=[], static_cache=True)
    assert torch.equal(static, eager)


@torch.no_grad()
def test_rms_norm_within_two_ulp_of_hf_on_cuda():
    # On CPU the fused F.rms_norm is bitwise HF's formula; CUDA's fused kernel sums in another order:
    # 1.96 ulp at worst, 6.3% of values differing, for Llama's norm in fp32 (torch 2.11, H200). The half
    # precision cases ran after that failure in no session yet: this bound is a claim they must meet.
    from test_parity import rms_norm_pairs

    for dtype, name, ours, theirs in rms_norm_pairs("cuda"):
        ulp = torch.finfo(dtype).eps * theirs.float().abs().clamp_min(torch.finfo(dtype).tiny)
        worst = ((ours.float() - theirs.float()).abs() / ulp).max().item()
        print(f"{name} {dtype}: {worst:.2f} ulp, {(ours != theirs).float().mean().item():.2%} differ")
        assert ours.dtype == theirs.dtype and worst <= 2.0, f"{name} {dtype}: {worst:.2f} ulp"


@pytest.mark.parametrize("name", ["llama-gqa", "gemma-multi-query-wide-heads", "falcon-40b-style-grouped-two-norms-bias",
                                  "llama-dynamic-rope", "falcon-rw-alibi-12-heads"])
@torch.no_grad()
def test_fp32_on_cuda_matches_hf(name, synthetic_folders, left_padded_batch):
    """The brief's fp32 bar holds on the GPU too (flash/efficient SDPA kernels, fused norms)."""
    folder = synthetic_folders(name)
    hf = load_baseline_model(folder, device="cuda", attn_implementation=hf_attention(name))
    model = load_adaptive_model(folder, device="cuda")
    ids, mask = (t.cuda() for t in left_padded_batch)
    ours = model(ids, attention_mask=mask).logits.log_softmax(-1)
    theirs = hf(ids, attention_mask=mask).logits.log_softmax(-1)
    assert (ours - theirs).abs()[mask.bool()].max().item() <= 1e-4


@pytest.mark.parametrize("name", ["llama-dynamic-rope", "neox-dynamic-rope-partial-rotary"])
@torch.no_grad()
def test_graph_decode_crosses_the_dynamic_rope_boundary(name, synthetic_folders, left_padded_batch):
    """A 5-token prompt past max_position_embeddings = 8 inside the captured step: the frequencies are picked
    on the device from the step's position, so the replayed graph must give HF's cached generate."""
    folder = synthetic_folders(name)
    hf = load_baseline_model(folder, device="cuda", attn_implementation="eager")
    model = load_adaptive_model(folder, device="cuda")
    ids = left_padded_batch[0][:, 8:].cuda()
    theirs = hf.generate(ids, max_new_tokens=16, min_new_tokens=16, do_sample=False, eos_token_id=None,
                         pad_token_id=0)
    for kwargs in ({}, {"static_cache": True}, {"cuda_graph": True}, {"compiled": True}):
        ours = model.generate(ids, max_new_tokens=16, eos_token_id=[], pad_token_id=0, **kwargs)
        assert torch.equal(ours, theirs), f"{name} {kwargs}"


@torch.no_grad()
def test_compiled_decode_runs_and_matches_eager_in_fp32(synthetic_folders, left_padded_batch):
    model = load_adaptive_model(synthetic_folders("llama-gqa"), device="cuda")
    ids, mask = (t.cuda() for t in left_padded_batch)
    eager = model.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=[], static_cache=True)
    compiled = model.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=[], compiled=True)
    assert compiled.shape == eager.shape
    assert torch.equal(compiled, eager)  # fp32: fused kernels' rounding stays far below the logit gaps


@pytest.mark.parametrize("name", ["t5", "t5-v1.1", "bart", "mbart", "marian"])
@torch.no_grad()
def test_encoder_decoders_on_cuda(name, tmp_path):
    """fp32 (TF32 off) within 1e-4 of HF eager in log-probs with HF's greedy tokens; bf16 with the causal rows'
    bar: the argmax of 95% of positions agrees with HF's bf16."""
    from test_seq2seq import seq2seq_variants

    from sentinel_core.synthetic import make_synthetic_checkpoint

    folder = make_synthetic_checkpoint(seq2seq_variants()[name], tmp_path / name, seed=1234)
    g = torch.Generator().manual_seed(0)
    source = torch.randint(3, 120, (3, 9), generator=g)
    mask = torch.ones_like(source)
    mask[1, 6:] = 0
    target = torch.randint(3, 120, (3, 7), generator=g)
    source, mask, target = source.cuda(), mask.cuda(), target.cuda()
    torch.backends.cuda.matmul.allow_tf32 = False
    for dtype in ("float32", "bfloat16"):
        hf = load_baseline_model(folder, device="cuda", dtype=dtype, attn_implementation="eager")
        model = load_adaptive_model(folder, device="cuda", dtype=dtype)
        ours = model(input_ids=source, attention_mask=mask, decoder_input_ids=target).logits.float().log_softmax(-1)
        theirs = hf(input_ids=source, attention_mask=mask, decoder_input_ids=target).logits.float().log_softmax(-1)
        if dtype == "float32":
            assert (ours - theirs).abs().max().item() <= 1e-4
            hf_cache = name != "t5"  # HF 5.x sizes T5's cache by the encoder's depth (the t5 variant's is smaller)
            assert torch.equal(model.generate(source, attention_mask=mask, max_new_tokens=8),
                               hf.generate(source, attention_mask=mask, max_new_tokens=8, num_beams=1,
                                           do_sample=False, use_cache=hf_cache))
        else:
            assert (ours.argmax(-1) == theirs.argmax(-1)).float().mean() >= 0.95
