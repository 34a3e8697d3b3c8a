"""Head importance against each method's definition computed the slow way, and the pruning plans it gives."""

import pytest
import torch

from sentinel_core import (InputError, PruneError, UnsupportedModelError, head_importance, importance_prune_plan,
                           load_adaptive_model)
from sentinel_core.importance import METHODS

NATIVE = ["llama-gqa", "gpt2"]
FEW_HEADS = [(0, 0), (0, 3), (1, 2)]  # heads checked one by one against the slow way


@pytest.fixture(scope="module")
def bigcode_folder(synthetic_folders):
    """A model_type with no converter: loads through the generic gated wrapper (multi-query attention)."""
    from transformers import GPTBigCodeConfig

    from sentinel_core.synthetic import make_synthetic_checkpoint

    config = GPTBigCodeConfig(vocab_size=512, n_embd=64, n_layer=2, n_head=4, n_positions=64, multi_query=True)
    return make_synthetic_checkpoint(config, synthetic_folders("gpt2").parent / "bigcode", seed=3)


@pytest.fixture(scope="module")
def folder(synthetic_folders, bigcode_folder):
    return lambda name: bigcode_folder if name == "bigcode" else synthetic_folders(name)


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(11)
    ids = torch.randint(3, 500, (2, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding: those positions predict nothing and are predicted by nothing
    return ids.masked_fill(mask == 0, 0), mask


def loss_by_hand(model, ids, mask) -> float:
    """Mean next-token NLL over positions whose token and target are both real, written out longhand."""
    with torch.no_grad():
        logprobs = model(ids, attention_mask=mask).logits.double().log_softmax(-1)
    total, n = 0.0, 0
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1] - 1):
            if mask[b, t] and mask[b, t + 1]:
                total -= logprobs[b, t, ids[b, t + 1]].item()
                n += 1
    return total / n


def assert_left_clean(model, gates_before):
    assert torch.equal(model.gates.detach(), gates_before), "gates not restored exactly"
    assert all(p.grad is None for p in model.parameters()), "a parameter was left with a .grad"
    assert not model.training


@pytest.mark.parametrize("name", NATIVE + ["bigcode"])
def test_ablation_is_the_loss_difference_computed_directly(folder, batch, name):
    model = load_adaptive_model(folder(name))
    ids, mask = batch
    scores = head_importance(model, ids, attention_mask=mask, method="ablation")
    assert scores.shape == (model.num_layers, model.num_heads)
    base = loss_by_hand(model, ids, mask)
    for layer, head in FEW_HEADS:
        with torch.no_grad():
            model.gates[layer, head] = 0
        ablated = loss_by_hand(model, ids, mask)
        with torch.no_grad():
            model.gates[layer, head] = 1
        assert abs(scores[layer, head].item() - (ablated - base)) < 1e-5, (name, layer, head)
    assert (scores != 0).all()  # every head of a random model changes the loss somewhat


@pytest.mark.parametrize("name", NATIVE + ["bigcode"])
def test_gradient_is_the_central_difference_on_the_gate(folder, batch, name):
    """float64, one row (one example: E|g| = |g|): (L(gate + eps) - L(gate - eps)) / 2 eps, error O(eps^2)."""
    model = load_adaptive_model(folder(name), dtype=torch.float64)
    ids, mask = batch[0][1:], batch[1][1:]  # the left-padded row
    scores = head_importance(model, ids, attention_mask=mask, method="gradient")
    assert scores.dtype == torch.float64
    eps = 1e-5
    for layer, head in FEW_HEADS:
        with torch.no_grad():
            model.gates[layer, head] = 1 + eps
            up = loss_by_hand(model, ids, mask)
            model.gates[layer, head] = 1 - eps
            down = loss_by_hand(model, ids, mask)
            model.gates[layer, head] = 1
        slope = abs(up - down) / (2 * eps)
        # float64 rounding of the loss (~1e-16) over 2 eps is ~1e-11; eps^2 * L''' is smaller still
        assert scores[layer, head].item() == pytest.approx(slope, rel=1e-6, abs=1e-9), (name, layer, head)


def test_gradient_averages_the_absolute_gradient_of_each_row(folder, batch):
    """Michel 2019's E_x |dL(x)/d gate|: rows scored alone and averaged, not |gradient of the batch loss|."""
    model = load_adaptive_model(folder("llama-gqa"))
    ids, mask = batch
    both = head_importance(model, ids, attention_mask=mask, method="gradient")
    alone = [head_importance(model, ids[b:b + 1], attention_mask=mask[b:b + 1], method="gradient") for b in range(2)]
    torch.testing.assert_close(both, (alone[0] + alone[1]) / 2, rtol=1e-6, atol=1e-9)
    normalized = head_importance(model, ids, attention_mask=mask, method="gradient", normalize=True)
    torch.testing.assert_close(normalized, both / both.norm(dim=1, keepdim=True))
    torch.testing.assert_close(normalized.norm(dim=1), torch.ones(model.num_layers))


@pytest.mark.parametrize("name", NATIVE)
def test_magnitude_is_the_norm_of_each_heads_output_columns(folder, name):
    model = load_adaptive_model(folder(name))
    hd = model.spec.head_dim
    scores = head_importance(model, None, method="magnitude")
    for layer in range(model.num_layers):
        w = model.layers[layer].attn.out.weight
        for head in range(model.num_heads):
            expected = w[:, head * hd:(head + 1) * hd].double().pow(2).sum().sqrt().item()
            assert scores[layer, head].item() == pytest.approx(expected, rel=1e-6)
    # after pruning, the remaining heads keep their scores (their columns moved, not changed); the pruned score 0
    model.prune_heads({0: [1], 1: [0, 3]})
    pruned = head_importance(model, None, method="magnitude")
    kept = torch.ones_like(scores, dtype=torch.bool)
    kept[0, 1] = kept[1, 0] = kept[1, 3] = False
    assert torch.equal(pruned[kept], scores[kept]) and (pruned[~kept] == 0).all()


def test_magnitude_on_the_wrapper_reads_the_hf_output_projection(folder):
    model = load_adaptive_model(folder("bigcode"))
    hd = model.spec.head_dim
    scores = head_importance(model, None, method="magnitude")
    for layer, block in enumerate(model.hf.transformer.h):
        w = block.attn.c_proj.weight  # nn.Linear in GPTBigCode: [out, in]
        for head in range(model.num_heads):
            expected = w[:, head * hd:(head + 1) * hd].double().norm().item()
            assert scores[layer, head].item() == pytest.approx(expected, rel=1e-6)


def test_magnitude_on_an_unknown_projection_layout_says_so(folder):
    model = load_adaptive_model(folder("bigcode"))
    model._projections = [torch.nn.Identity() for _ in range(model.num_layers)]  # no weight to slice
    with pytest.raises(UnsupportedModelError, match="layout of gpt_bigcode .* is unknown.*'gradient' or 'ablation'"):
        head_importance(model, None, method="magnitude")


def test_random_is_reproducible_by_seed(folder):
    model = load_adaptive_model(folder("gpt2"))
    a, b = (head_importance(model, None, method="random", seed=5) for _ in range(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, head_importance(model, None, method="random", seed=6))
    state = torch.get_rng_state()
    head_importance(model, None, method="random", seed=5)
    assert torch.equal(state, torch.get_rng_state()), "the global RNG was used"


@pytest.mark.parametrize("name", ["llama-gqa", "bigcode"])
def test_every_method_restores_gates_exactly_and_leaves_no_grad(folder, batch, name):
    model = load_adaptive_model(folder(name))
    ids, mask = batch
    with torch.no_grad():  # gates that are not all 1: scoring runs at 1 and must give these back bit for bit
        model.gates[0, 1] = 0.3
        model.gates[1, 2] = 1.7
    model.gates.requires_grad_(False)
    before = model.gates.detach().clone()
    for method in METHODS:
        model.train()
        head_importance(model, ids, attention_mask=mask, method=method)
        assert_left_clean(model, before)
        assert not model.gates.requires_grad


def test_the_batch_is_scored_at_unit_gates(folder, batch):
    """A gate the user set elsewhere does not change the scores: they describe the model at gates = 1."""
    model = load_adaptive_model(folder("gpt2"))
    ids, mask = batch
    at_one = head_importance(model, ids, attention_mask=mask, method="ablation")
    with torch.no_grad():
        model.gates[0, 0] = 0.5
    assert torch.equal(head_importance(model, ids, attention_mask=mask, method="ablation"), at_one)


def test_unknown_method_and_missing_text_are_refused(folder):
    model = load_adaptive_model(folder("gpt2"))
    with pytest.raises(ValueError, match="gradient, ablation, magnitude, random"):
        head_importance(model, None, method="taylor")
    with pytest.raises(InputError, match="pass input_ids"):
        head_importance(model, None, method="ablation")


# --- pruning plans ---------------------------------------------------------------------------------------

SCORES = torch.tensor([[0.1, 0.2, 0.9, 0.8],
                       [0.05, 0.06, 0.07, 0.5],
                       [1.0, 2.0, 3.0, 4.0]])


def test_plan_global_takes_the_lowest_scores_across_layers():
    assert importance_prune_plan(SCORES, count=4) == {0: [0], 1: [0, 1, 2]}
    assert importance_prune_plan(SCORES, fraction=0.25) == {1: [0, 1, 2]}  # 0.25 * 12 = 3 heads
    assert importance_prune_plan(SCORES, count=0) == {}


def test_plan_global_never_empties_a_layer_below_the_minimum():
    # the sixth lowest score is layer 1's last head: it stays unless a layer may be emptied
    assert importance_prune_plan(SCORES, count=6) == {0: [0, 1, 3], 1: [0, 1, 2]}
    assert importance_prune_plan(SCORES, count=6, min_heads_per_layer=0) == {0: [0, 1], 1: [0, 1, 2, 3]}
    # two per layer at least: layers 0 and 1 stop at two heads each, the rest comes from layer 2
    assert importance_prune_plan(SCORES, count=5, min_heads_per_layer=2) == {0: [0, 1], 1: [0, 1], 2: [0]}


def test_plan_per_layer_takes_the_same_number_from_every_layer():
    assert importance_prune_plan(SCORES, count=1, per_layer=True) == {0: [0], 1: [0], 2: [0]}
    assert importance_prune_plan(SCORES, fraction=0.5, per_layer=True) == {0: [0, 1], 1: [0, 1], 2: [0, 1]}


def test_plan_skips_heads_already_pruned():
    plan = importance_prune_plan(SCORES, count=2, already_pruned={1: [0, 1]})
    assert plan == {0: [0], 1: [2]}  # layer 1 keeps head 3 only after this
    assert sum(map(len, importance_prune_plan(SCORES, count=7, already_pruned={1: [0, 1]}).values())) == 7
    with pytest.raises(PruneError, match="only 7 of 10"):
        importance_prune_plan(SCORES, count=8, already_pruned={1: [0, 1]})


@pytest.mark.parametrize("kwargs, message", [
    (dict(fraction=1.0), r"fraction must be a number in \[0, 1\)"),
    (dict(fraction=-0.1), r"fraction must be a number in \[0, 1\)"),
    (dict(fraction=0.3, count=2), "exactly one of fraction"),
    (dict(), "exactly one of fraction"),
    (dict(count=10), "asks for 10 heads, but only 9 of 12 can go"),
    (dict(count=-1), "count must be an integer >= 0"),
    (dict(count=2.0), "count must be an integer >= 0"),
    (dict(count=4, per_layer=True), "4 heads of layer 0, but only 3"),
    (dict(fraction=0.9), "asks for 11 heads"),
    (dict(count=1, min_heads_per_layer=-1), "min_heads_per_layer must be an integer >= 0"),
])
def test_plan_refuses_bad_requests_with_a_prune_error(kwargs, message):
    with pytest.raises(PruneError, match=message):
        importance_prune_plan(SCORES, **kwargs)


def test_plan_refuses_scores_that_are_not_finite_or_not_a_matrix():
    with pytest.raises(PruneError, match="NaN or inf"):
        importance_prune_plan(torch.tensor([[0.1, float("nan")]]), count=1)
    with pytest.raises(PruneError, match=r"\[layers, heads\] tensor"):
        importance_prune_plan(torch.ones(4), count=1)


def test_a_plan_from_importance_prunes_the_model(folder, batch):
    model = load_adaptive_model(folder("llama-gqa"))  # GQA: 4 query heads over 2 KV heads per layer
    ids, mask = batch
    scores = head_importance(model, ids, attention_mask=mask, method="ablation")
    plan = importance_prune_plan(scores, fraction=0.5)
    assert sum(map(len, plan.values())) == 4
    model.prune_heads(plan)
    assert model.pruned_heads == plan
    after = head_importance(model, ids, attention_mask=mask, method="gradient")
    pruned = torch.zeros_like(after, dtype=torch.bool)
    for layer, heads in plan.items():
        pruned[layer, heads] = True
    assert (after[pruned] == 0).all() and (after[~pruned] > 0).all()
    # a second round counts only the heads still there, and never empties a layer
    more = importance_prune_plan(after, count=2, already_pruned=model.pruned_heads)
    model.prune_heads(more)
    assert all(layer.attn.num_heads >= 1 for layer in model.layers)
    assert torch.isfinite(model(ids, attention_mask=mask).logits).all()
