"""CUDA: bf16 adaptive vs HF eager, and the CUDA-graph decode path equal to eager decode (skipped without a GPU)."""

import pytest
import torch

from sentinel_core import load_adaptive_model, load_baseline_model
from variants import variants

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


@pytest.mark.parametrize("name", list(variants()))
@torch.no_grad()
def test_bf16_matches_hf_and_graph_decode_matches_eager(name, synthetic_folders, left_padded_batch):
    folder = synthetic_folders(name)
    hf = load_baseline_model(folder, device="cuda", dtype="bfloat16", attn_implementation="eager")
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
