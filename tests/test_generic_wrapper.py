"""The generic gated wrapper, on architectures with no native converter: HF exactly at gates = 1, a zero
gate == that head's input columns of the output projection zeroed, clear errors where it cannot gate."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import CodeGenConfig, GPTBigCodeConfig, MptConfig
from transformers.pytorch_utils import Conv1D

from sentinel_core import UnsupportedModelError, load_adaptive_model, load_baseline_model
from sentinel_core.families import FAMILIES
from sentinel_core.generic import GenericGatedLM, output_projections
from sentinel_core.synthetic import make_synthetic_checkpoint

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 512
OFF = {0: [1], 1: [0, 2]}  # heads switched off: one in layer 0, two in layer 1


def wrapper_variants() -> dict:
    return {
        # multi-query attention, learned positions, Linear attn.c_proj next to the MLP's own c_proj
        "gpt_bigcode": GPTBigCodeConfig(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                        multi_query=True, bos_token_id=1, eos_token_id=2),
        # ALiBi, no position_ids in its forward, attn.out_proj
        "mpt": MptConfig(vocab_size=VOCAB, d_model=64, n_layers=2, n_heads=4, expansion_ratio=2, max_seq_len=64,
                         bos_token_id=1, eos_token_id=2),
        # partial rotary, fused qkv in model-parallel blocks, parallel attention and MLP, attn.out_proj
        "codegen": CodeGenConfig(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, rotary_dim=8, n_ctx=64,
                                 n_positions=64, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
    }


@pytest.fixture(scope="module", params=list(wrapper_variants()))
def folder(request, tmp_path_factory):
    assert request.param not in FAMILIES, f"{request.param} has a native converter now: pick another architecture"
    return make_synthetic_checkpoint(wrapper_variants()[request.param], tmp_path_factory.mktemp(request.param),
                                     seed=1234)


@pytest.fixture(scope="module")
def pair(folder):
    hf = load_baseline_model(folder, attn_implementation="eager")
    return hf, load_adaptive_model(folder, baseline_model=hf)


def logits(model, ids, mask) -> torch.Tensor:
    return model(ids, attention_mask=mask).logits


def head_columns_scaled(hf, adaptive, scale: dict[int, dict[int, float]]):
    """A copy of the HF model with head h's input columns of layer l's output projection times scale[l][h]."""
    other = copy.deepcopy(hf)
    hd = adaptive.spec.head_dim
    with torch.no_grad():
        for layer, proj in enumerate(output_projections(other)[0]):
            for h, factor in scale.get(layer, {}).items():
                cols = slice(h * hd, (h + 1) * hd)
                weight = proj.weight[cols] if isinstance(proj, Conv1D) else proj.weight[:, cols]  # Conv1D: [in, out]
                weight.mul_(factor)
    return other


@torch.no_grad()
def test_gates_at_one_give_hf_logits_exactly(pair, left_padded_batch):
    hf, adaptive = pair
    ids, mask = left_padded_batch
    assert adaptive.adaptive_path == "generic-wrapper"
    assert isinstance(adaptive.gates, torch.nn.Parameter)
    assert adaptive.gates.shape == (adaptive.num_layers, adaptive.num_heads) == (2, 4)
    n_hf = sum(p.numel() for p in hf.parameters())
    assert sum(p.numel() for p in adaptive.parameters()) == n_hf + adaptive.gates.numel()
    assert torch.equal(logits(adaptive, ids, mask), logits(hf, ids, mask))


@torch.no_grad()
def test_loading_by_name_is_hf_exactly(folder, left_padded_batch):
    ids, mask = left_padded_batch
    hf = load_baseline_model(folder)
    adaptive = load_adaptive_model(folder)
    assert isinstance(adaptive, GenericGatedLM) and adaptive.spec.family == hf.config.model_type
    assert torch.equal(logits(adaptive, ids, mask), logits(hf, ids, mask))


@torch.no_grad()
def test_greedy_generate_equals_hf_generate(pair, left_padded_batch):
    hf, adaptive = pair
    ids, mask = left_padded_batch
    theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=8, min_new_tokens=8, do_sample=False,
                         eos_token_id=None, pad_token_id=0)
    ours = adaptive.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=[], pad_token_id=0)
    assert ours.shape == (3, ids.shape[1] + 8) and torch.equal(ours, theirs)
    no_cache = adaptive.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=[], use_cache=False)
    assert torch.equal(no_cache, ours)
    with pytest.raises(ValueError, match="max_new_tokens"):
        adaptive.generate(ids, max_new_tokens=0)


@torch.no_grad()
def test_sampling_with_a_generator_draws_as_hf_with_that_seed(pair, left_padded_batch):
    hf, adaptive = pair
    ids, mask = left_padded_batch
    ours = adaptive.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=[], pad_token_id=0,
                             do_sample=True, temperature=2.0, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(3)
    theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=8, min_new_tokens=8, do_sample=True,
                         temperature=2.0, top_k=0, eos_token_id=None, pad_token_id=0)
    assert torch.equal(ours, theirs)


@torch.no_grad()
def test_zero_gates_equal_zeroed_output_projection_columns(pair, left_padded_batch):
    hf, adaptive = pair
    ids, mask = left_padded_batch
    real = mask.bool()
    reference = head_columns_scaled(hf, adaptive, {layer: {h: 0.0 for h in heads} for layer, heads in OFF.items()})
    for layer, heads in OFF.items():
        adaptive.gates[layer, heads] = 0
    try:
        ours = logits(adaptive, ids, mask)
    finally:
        adaptive.gates.fill_(1)
    assert (ours - logits(reference, ids, mask))[real].abs().max().item() <= 1e-5
    assert (ours - logits(hf, ids, mask))[real].abs().max().item() > 1e-2, "zero gates changed nothing"


def test_a_gate_written_in_place_takes_effect_on_the_next_forward(pair, left_padded_batch):
    """Gates all at 1 are not multiplied, and whether they are is re-read only when the gates change:
    an in-place write must be seen, and restoring 1 must give HF's logits exactly again."""
    hf, adaptive = pair
    ids, mask = left_padded_batch
    projections = output_projections(adaptive.hf)[0]
    hooks_before = [len(proj._forward_pre_hooks) for proj in projections]
    # generate at all-ones gates runs without the hooks and puts them back, once each
    adaptive.generate(ids, attention_mask=mask, max_new_tokens=2, eos_token_id=[], pad_token_id=0)
    assert [len(proj._forward_pre_hooks) for proj in projections] == hooks_before == [1] * adaptive.num_layers
    with torch.no_grad():
        at_one = logits(adaptive, ids, mask)
        assert adaptive.gates_are_one() and torch.equal(at_one, logits(hf, ids, mask))
        adaptive.gates[1, 2] = 0.0
        closed = logits(adaptive, ids, mask)
        adaptive.gates[1, 2] = 1.0
        reopened = logits(adaptive, ids, mask)
    assert (closed - at_one)[mask.bool()].abs().max().item() > 1e-3
    assert torch.equal(reopened, at_one)
    # Gates take no gradient unless asked (so writes need no torch.no_grad()); asked, gates at 1 are multiplied.
    assert not adaptive.gates.requires_grad
    adaptive.gates.requires_grad_(True)
    try:
        adaptive.zero_grad(set_to_none=True)
        logits(adaptive, ids, mask)[mask.bool()].logsumexp(-1).sum().backward()
        assert adaptive.gates.grad is not None and adaptive.gates.grad.abs().min().item() > 0
    finally:
        adaptive.gates.requires_grad_(False)
        adaptive.zero_grad(set_to_none=True)


@torch.no_grad()
def test_fractional_gates_scale_each_head(pair, left_padded_batch):
    hf, adaptive = pair
    ids, mask = left_padded_batch
    scale = {0: {0: 0.5, 3: 0.25}, 1: {1: 1.5}}
    for layer, heads in scale.items():
        for h, factor in heads.items():
            adaptive.gates[layer, h] = factor
    try:
        ours = logits(adaptive, ids, mask)
    finally:
        adaptive.gates.fill_(1)
    theirs = logits(head_columns_scaled(hf, adaptive, scale), ids, mask)
    assert (ours - theirs)[mask.bool()].abs().max().item() <= 1e-5


@torch.no_grad()
def test_the_callers_hf_model_is_left_ungated(pair, left_padded_batch):
    hf, _ = pair
    ids, mask = left_padded_batch
    before = logits(hf, ids, mask)
    other = load_adaptive_model("label", baseline_model=hf)
    other.gates.zero_()
    assert torch.equal(logits(hf, ids, mask), before)


def test_prune_heads_asks_for_gates_instead(pair):
    _, adaptive = pair
    with pytest.raises(UnsupportedModelError, match="native converter.*gates to 0"):
        adaptive.prune_heads({0: [1]})
    assert adaptive.pruned_heads == {}
    with pytest.raises(ValueError, match="cuda_graph"):
        adaptive.generate(torch.tensor([[5, 6, 7]]), cuda_graph=True)


def test_generate_takes_the_native_arguments_and_defaults():
    import inspect

    from sentinel_core import AdaptiveCausalLM

    def params(fn):
        return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]

    assert params(GenericGatedLM.generate) == params(AdaptiveCausalLM.generate)


def test_dtype_and_device_follow_the_model(folder):
    model = load_adaptive_model(folder, dtype="bfloat16")
    assert model.dtype == model.gates.dtype == torch.bfloat16 and model.device == torch.device("cpu")
    out = model(torch.tensor([[5, 6, 7]]))  # logits in HF's dtype (CodeGen on transformers 4.57: fp32)
    assert torch.isfinite(out.logits.float()).all()


def test_a_head_count_that_does_not_split_the_projection_is_refused(pair):
    hf, _ = pair
    bad = copy.deepcopy(hf)
    bad.config.num_attention_heads = 3  # 64 features are not 3 equal heads
    with pytest.raises(UnsupportedModelError, match=r"64 features.*\(3\)"):
        GenericGatedLM(bad)


def test_a_layer_count_that_does_not_match_the_attention_modules_is_refused(pair):
    hf, _ = pair
    bad = copy.deepcopy(hf)
    bad.config.num_hidden_layers = 3
    with pytest.raises(UnsupportedModelError, match="2 attention output projections for 3 layers"):
        GenericGatedLM(bad)


def test_the_matrix_record_names_the_path(tmp_path):
    results = tmp_path / "rows.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SENTINEL_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "matrix/", "--models", "tiny/mpt,tiny/gpt2",
                           "--checks", "load", "--results", str(results), "-q"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:]
    paths = {r["model"]: r["metrics"]["adaptive_path"] for r in map(json.loads, results.read_text().splitlines())}
    assert paths == {"tiny/mpt": "generic-wrapper", "tiny/gpt2": "native"}


# The wrapper against the native decoder: two independent implementations of the same gates --------

from variants import hf_attention, variants  # noqa: E402


@pytest.mark.parametrize("name", list(variants()))
@torch.no_grad()
def test_wrapper_gates_equal_native_gates_on_every_native_family(name, synthetic_folders, left_padded_batch):
    """Wrapped around a model that also has a native converter, the wrapper must find the attention
    output projections and slice heads exactly as the converter maps them: the same fractional and
    zero gates give the same log-probs (fp32, 1e-4) through HF's modules and through the gated decoder."""
    hf = load_baseline_model(synthetic_folders(name), attn_implementation=hf_attention(name))
    native = load_adaptive_model(name, baseline_model=hf)
    wrapped = GenericGatedLM(copy.deepcopy(hf))
    assert (wrapped.num_layers, wrapped.num_heads) == (native.num_layers, native.num_heads)
    gates = torch.rand(native.gates.shape, generator=torch.Generator().manual_seed(5))
    gates[0, 0] = 0.0
    gates[-1, -1] = 0.0
    native.gates.copy_(gates)
    wrapped.gates.copy_(gates)
    ids, mask = left_padded_batch
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    ours = native(ids, attention_mask=mask, position_ids=pos).logits.log_softmax(-1)
    theirs = wrapped(ids, attention_mask=mask, position_ids=pos).logits.log_softmax(-1)
    ungated = hf(ids, attention_mask=mask).logits.log_softmax(-1)
    real = mask.bool()
    assert (ours - ungated).abs()[real].max().item() > 1e-2, "the gates changed nothing: the test would prove nothing"
    assert (ours - theirs).abs()[real].max().item() <= 1e-4, name


@torch.no_grad()
def test_matrix_load_check_fails_when_the_gates_reach_no_head(folder):
    """At gates = 1 a wrapper row matches HF by construction; the load check's gate test is what can fail."""
    from sentinel_matrix.checks import CheckFailed, ModelPair, check_load

    hf = load_baseline_model(folder, attn_implementation="eager")
    wrapped = load_adaptive_model(folder, baseline_model=hf)
    pair = ModelPair(hf, wrapped, None, "cpu", "float32", False, {"load_s": 1.0, "baseline_load_s": 1.0})
    assert check_load(pair)["first_and_last_layer_gate_effect"] > 1e-3
    for proj in output_projections(wrapped.hf)[0]:
        proj._forward_pre_hooks.clear()  # a wrapper whose hooks went nowhere
    with pytest.raises(CheckFailed, match="reach no head"):
        check_load(pair)


@torch.no_grad()
def test_gate_applies_when_the_projection_is_called_with_a_keyword(pair):
    _, adaptive = pair
    proj = output_projections(adaptive.hf)[0][0]
    width = proj.weight.shape[0] if isinstance(proj, Conv1D) else proj.weight.shape[1]
    x = torch.randn(2, 3, width)
    adaptive.gates[0] = 0
    try:  # every head of layer 0 closed: the projection sees zeros however it is called
        assert torch.equal(proj(input=x), proj.forward(torch.zeros_like(x)))
        assert torch.equal(proj(x), proj.forward(torch.zeros_like(x)))
    finally:
        adaptive.gates.fill_(1)


@pytest.mark.parametrize("name", ["llama-gqa", "gpt2", "falcon-7b-style-multi-query-parallel"])
@torch.no_grad()
def test_generate_with_closed_gates_equals_the_native_decoder(name, synthetic_folders, left_padded_batch):
    """Gates below 1 must act inside generate too (the all-ones shortcut must not swallow them)."""
    hf = load_baseline_model(synthetic_folders(name), attn_implementation="eager")
    native = load_adaptive_model(name, baseline_model=hf)
    wrapped = GenericGatedLM(copy.deepcopy(hf))
    for model in (native, wrapped):
        model.gates[0, :2] = 0
        model.gates[-1, 1] = 0.5
    ids, mask = left_padded_batch
    ours = native.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=[], pad_token_id=0)
    theirs = wrapped.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=[], pad_token_id=0)
    ungated = hf.generate(ids, attention_mask=mask, max_new_tokens=8, min_new_tokens=8, do_sample=False,
                          eos_token_id=None, pad_token_id=0)
    assert torch.equal(ours, theirs), name
    assert not torch.equal(ours, ungated), "closing these gates changed no token: the test proves nothing"
