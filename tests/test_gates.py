"""Gates change the computation: gate 0 == HF with that head's context zeroed; prune == gate 0."""

import pytest
import torch

from sentinel_core import CheckpointError, load_adaptive_model, load_baseline_model
from sentinel_core.convert import hf_module_name
from variants import hf_attention, variants

TOL = 1e-4
# (layer, head) pairs to switch off: a head in the middle of layer 0 and the last head of layer 1.
OFF = {0: [1], 1: [0, 2]}


@pytest.fixture(scope="module", params=list(variants()))
def pair(request, synthetic_folders):
    folder = synthetic_folders(request.param)
    hf = load_baseline_model(folder, attn_implementation=hf_attention(request.param))
    return request.param, hf, load_adaptive_model(folder, baseline_model=hf)


def zero_heads_in_hf(hf, adaptive, off):
    """Forward pre-hooks that zero each head's context slice before HF's own output projection."""
    hd = adaptive.spec.head_dim
    handles = []
    for layer, heads in off.items():
        module = hf.get_submodule(hf_module_name(hf, f"layers.{layer}.attn.out"))

        def hook(mod, args, heads=heads):
            (x, *rest) = args
            x = x.clone()
            for h in heads:
                x[..., h * hd:(h + 1) * hd] = 0
            return (x, *rest)

        handles.append(module.register_forward_pre_hook(hook))
    return handles


@torch.no_grad()
def test_zero_gate_equals_hf_with_head_context_zeroed(pair, left_padded_batch):
    name, hf, adaptive = pair
    ids, mask = left_padded_batch
    for layer, heads in OFF.items():
        adaptive.gates[layer, heads] = 0
    handles = zero_heads_in_hf(hf, adaptive, OFF)
    try:
        theirs = hf(ids, attention_mask=mask).logits.log_softmax(-1)
        ours = adaptive(ids, attention_mask=mask).logits.log_softmax(-1)
    finally:
        for h in handles:
            h.remove()
        adaptive.gates.fill_(1)
    real = mask.bool()
    assert (ours - theirs).abs()[real].max().item() <= TOL, name
    # ...and the gate really changed something.
    unchanged = hf(ids, attention_mask=mask).logits.log_softmax(-1)
    assert (ours - unchanged).abs()[real].max().item() > 1e-2, f"{name}: zero gates changed nothing"


@torch.no_grad()
def test_fractional_gate_scales_head_context(pair, left_padded_batch):
    name, hf, adaptive = pair
    ids, mask = left_padded_batch
    hd = adaptive.spec.head_dim
    module = hf.get_submodule(hf_module_name(hf, "layers.0.attn.out"))

    def half(mod, args):
        x = args[0].clone()
        x[..., hd:2 * hd] *= 0.5
        return (x, *args[1:])

    handle = module.register_forward_pre_hook(half)
    adaptive.gates[0, 1] = 0.5
    try:
        theirs = hf(ids, attention_mask=mask).logits.log_softmax(-1)
        ours = adaptive(ids, attention_mask=mask).logits.log_softmax(-1)
    finally:
        handle.remove()
        adaptive.gates.fill_(1)
    assert (ours - theirs).abs()[mask.bool()].max().item() <= TOL, name


@torch.no_grad()
def test_prune_heads_equals_zero_gates_with_fewer_parameters(pair, left_padded_batch, synthetic_folders):
    name, hf, _ = pair
    ids, mask = left_padded_batch
    gated = load_adaptive_model(name, baseline_model=hf)
    pruned = load_adaptive_model(name, baseline_model=hf)
    for layer, heads in OFF.items():
        gated.gates[layer, heads] = 0
    n_before = sum(p.numel() for p in pruned.parameters())
    pruned.prune_heads(OFF)
    n_after = sum(p.numel() for p in pruned.parameters())
    assert n_after < n_before, name
    assert pruned.pruned_heads == {0: [1], 1: [0, 2]}
    assert torch.equal(pruned.gates[0, 1], torch.tensor(0.0))
    a = gated(ids, attention_mask=mask).logits.log_softmax(-1)
    b = pruned(ids, attention_mask=mask).logits.log_softmax(-1)
    assert (a - b).abs()[mask.bool()].max().item() <= TOL, name
    # Decoding with the cache works on the pruned model and agrees with the gated one.
    assert torch.equal(gated.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=[]),
                       pruned.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=[]))


@torch.no_grad()
def test_gqa_kv_head_stays_until_its_whole_group_is_pruned(synthetic_folders, left_padded_batch):
    hf = load_baseline_model(synthetic_folders("llama-gqa"), attn_implementation="eager")
    model = load_adaptive_model("llama-gqa", baseline_model=hf)  # 4 query heads, 2 KV heads: groups {0,1}, {2,3}
    attn = model.layers[0].attn
    hd, hidden = model.spec.head_dim, model.spec.hidden_size
    model.prune_heads({0: [0]})
    assert (attn.num_heads, attn.num_kv_heads) == (3, 2)
    assert attn.qkv.weight.shape == ((3 + 2 * 2) * hd, hidden)
    model.prune_heads({0: [1]})  # group 0 now empty: its KV head goes
    assert (attn.num_heads, attn.num_kv_heads) == (2, 1)
    assert attn.qkv.weight.shape == ((2 + 2 * 1) * hd, hidden)
    assert attn.kv_of_head.tolist() == [0, 0]
    # Uneven groups after pruning: head 2 of group 1 alone goes; logits still equal the gated model.
    model.prune_heads({1: [2]})
    gated = load_adaptive_model("llama-gqa", baseline_model=hf)
    gated.gates[0, [0, 1]] = 0
    gated.gates[1, 2] = 0
    ids, mask = left_padded_batch
    a = gated(ids, attention_mask=mask).logits
    b = model(ids, attention_mask=mask).logits
    assert (a - b).abs()[mask.bool()].max().item() <= TOL


def test_gates_are_one_writable_tensor(synthetic_folders):
    model = load_adaptive_model(synthetic_folders("bloom"))
    assert model.gates.shape == (model.num_layers, model.num_heads)
    with torch.no_grad():
        model.gates[1, 3] = 0.25
    assert model.gates[1, 3].item() == 0.25


def test_prune_is_checked_whole_before_anything_changes(synthetic_folders):
    model = load_adaptive_model(synthetic_folders("gpt2"))
    shape = model.layers[0].attn.qkv.weight.shape
    with pytest.raises(ValueError, match="no layer 7"):
        model.prune_heads({0: [1], 7: [0]})
    with pytest.raises(ValueError, match="layer 1 would have no heads left"):
        model.prune_heads({0: [1], 1: [0, 1, 2, 3]})
    assert model.layers[0].attn.qkv.weight.shape == shape and model.pruned_heads == {}
    assert torch.equal(model.gates, torch.ones_like(model.gates))
    model.prune_heads({0: torch.tensor([1, 2])})  # tensor ids compare by value
    assert model.pruned_heads == {0: [1, 2]}


@torch.no_grad()
@pytest.mark.parametrize("name", ["gpt2", "bloom", "llama-gqa"])
def test_pruned_state_dict_round_trip(name, synthetic_folders, left_padded_batch):
    ids, mask = left_padded_batch
    folder = synthetic_folders(name)
    pruned = load_adaptive_model(folder)
    pruned.prune_heads({0: [1], 1: [0, 2]})
    fresh = load_adaptive_model(folder)
    fresh.load_state_dict(pruned.state_dict())  # prunes itself the same way first
    assert fresh.pruned_heads == pruned.pruned_heads
    assert torch.equal(fresh(ids, attention_mask=mask).logits, pruned(ids, attention_mask=mask).logits)
    other = load_adaptive_model(folder)
    other.prune_heads({0: [2]})
    with pytest.raises(CheckpointError, match="already pruned"):
        other.load_state_dict(pruned.state_dict())


def test_a_state_dict_that_does_not_fit_changes_nothing(synthetic_folders):
    """One wrong shape in a pruned state dict: refused before the model prunes itself or copies a value."""
    folder = synthetic_folders("llama-gqa")
    pruned = load_adaptive_model(folder)
    pruned.prune_heads({0: [1], 1: [0, 2]})
    state = pruned.state_dict()
    name = "layers.1.attn.out.weight"
    state[name] = state[name][:, :-1]
    fresh = load_adaptive_model(folder)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"nothing was loaded: layers\.1\.attn\.out\.weight \(64, 31\)"):
        fresh.load_state_dict(state)
    assert fresh.pruned_heads == {}
    after = fresh.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@torch.no_grad()
@pytest.mark.parametrize("name", ["llama-gqa", "bloom"])
def test_a_pruned_decode_step_gathers_by_indexing_not_index_select(name, synthetic_folders, left_padded_batch):
    """A pruned layer reads its KV heads (GQA) and its ALiBi rows by indexing. On CUDA, index_select of 16 or fewer
    indices runs a kernel looping over them on a few blocks: two such calls a layer made half-pruned TinyLlama's
    decode step slower than the unpruned one (H100 profile). The values are the same either way."""
    from torch.profiler import ProfilerActivity, profile

    ids, mask = left_padded_batch
    model = load_adaptive_model(synthetic_folders(name))
    model.prune_heads({0: [0]})  # uneven groups (llama-gqa), a pruned ALiBi layer (bloom)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        model.generate(ids, attention_mask=mask, max_new_tokens=3, eos_token_id=[], static_cache=True)
    gathers = [e.name for e in prof.events() if e.name in ("aten::index", "aten::index_select")
               and len(e.input_shapes[0]) == 4]  # of [batch, heads, ...]: keys, values, an ALiBi bias
    assert gathers and set(gathers) == {"aten::index"}
