"""Bad inputs to the Python API, on both paths (native decoder, generic wrapper): each one a SentinelError
subclass whose message names the fix, raised before anything changes; nothing silently wrong."""

import warnings

import pytest
import torch
from torch import nn
from transformers import GenerationConfig, GPTBigCodeConfig

from sentinel_core import GateError, InputError, PruneError, SentinelError, load_adaptive_model
from sentinel_core.errors import DeviceError
from sentinel_core.synthetic import make_synthetic_checkpoint

VOCAB = 512


@pytest.fixture(scope="module")
def models(synthetic_folders, tmp_path_factory):
    wrapper = GPTBigCodeConfig(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64, multi_query=True,
                               bos_token_id=1, eos_token_id=2)
    folder = make_synthetic_checkpoint(wrapper, tmp_path_factory.mktemp("gpt_bigcode"), seed=1234)
    return {"native": load_adaptive_model(synthetic_folders("llama-gqa")), "wrapper": load_adaptive_model(folder)}


@pytest.fixture(params=["native", "wrapper"])
def model(request, models):
    model = models[request.param]
    yield model
    with torch.no_grad():  # every case leaves the shared model as it found it
        if tuple(model.gates.shape) != (model.num_layers, model.num_heads):
            model.gates = nn.Parameter(torch.ones(model.num_layers, model.num_heads))
        model.gates.data.fill_(1.0)


IDS = torch.tensor([[5, 6, 7, 8]])


def wrong_gates(shape_of):
    def act(model):
        model.gates = nn.Parameter(torch.ones(*shape_of(model)))
        model(IDS)
    return act


def gate_value(value):
    def act(model):
        with torch.no_grad():
            model.gates.data[0, 1] = value  # through .data: no version counter sees it
        model(IDS)
    return act


def generate_with_gate(value):
    def act(model):
        with torch.no_grad():
            model.gates[1, 0] = value
        model.generate(IDS, max_new_tokens=2)
    return act


CASES = {
    # gates
    "gates one layer short": (wrong_gates(lambda m: (m.num_layers - 1, m.num_heads)), GateError, "model.gates[layer, head] = 0"),
    "gates one layer too many": (wrong_gates(lambda m: (m.num_layers + 1, m.num_heads)), GateError, "layers of"),
    "gates one head short": (wrong_gates(lambda m: (m.num_layers, m.num_heads - 1)), GateError, "have shape"),
    "gates replaced via .data": (lambda m: (setattr(m.gates, "data", torch.ones(1, m.num_heads)), m(IDS)), GateError,
                                 "have shape"),
    "NaN gate": (gate_value(float("nan")), GateError, "must be finite"),
    "inf gate": (gate_value(float("inf")), GateError, "must be finite"),
    "NaN gate in generate": (generate_with_gate(float("nan")), GateError, "must be finite"),
    # ids
    "ids at the vocabulary size": (lambda m: m(torch.tensor([[1, VOCAB]])), InputError, "outside the model's vocabulary"),
    "negative id": (lambda m: m(torch.tensor([[1, -1]])), InputError, "outside the model's vocabulary"),
    "ids past the vocabulary in generate": (lambda m: m.generate(torch.tensor([[1, VOCAB + 3]]), max_new_tokens=1),
                                            InputError, "own tokenizer"),
    "empty ids": (lambda m: m(torch.zeros(1, 0, dtype=torch.long)), InputError, "at least one token"),
    "1-D ids": (lambda m: m(torch.tensor([5, 6, 7])), InputError, "input_ids[None]"),
    "3-D ids": (lambda m: m(torch.ones(1, 2, 3, dtype=torch.long)), InputError, "[batch, length]"),
    "float ids": (lambda m: m(torch.tensor([[5.0, 6.0]])), InputError, "integers"),
    "a list of ids": (lambda m: m([[5, 6, 7]]), InputError, "return_tensors='pt'"),
    "a ragged list": (lambda m: m.generate([[5, 6, 7], [5]], max_new_tokens=1), InputError, "ragged"),
    # masks
    "mask shorter than the ids": (lambda m: m(IDS, attention_mask=torch.ones(1, 3, dtype=torch.long)), InputError,
                                  "attention_mask has shape"),
    "mask of another batch": (lambda m: m.generate(IDS, attention_mask=torch.ones(2, 4, dtype=torch.long),
                                                   max_new_tokens=1), InputError, "need (1, 4)"),
    "mask as a list": (lambda m: m(IDS, attention_mask=[[1, 1, 1, 1]]), InputError, "not a tensor"),
    "int16 ids": (lambda m: m(IDS.to(torch.int16)), InputError, "input_ids.long()"),
    "uint8 ids": (lambda m: m(IDS.to(torch.uint8)), InputError, "input_ids.long()"),
    # devices
    "ids on another device": (lambda m: m(IDS.to("meta")), DeviceError, "input_ids.to(model.device)"),
    # generate's settings: each refused by name, never rounded, clamped or ignored
    **{f"generate {name}={value!r}": (lambda m, kw={name: value}: m.generate(IDS, **kw), InputError, fix)
       for name, value, fix in [
           ("max_new_tokens", -3, "max_new_tokens=-3"), ("max_new_tokens", 2.5, "an integer"),
           ("max_new_tokens", "3", "an integer"), ("max_new_tokens", True, "an integer"),
           ("max_length", 4, "leaves no room"), ("max_length", 0, "max_length=0"),
           ("top_k", -1, "top_k=-1"), ("min_new_tokens", -1, "min_new_tokens=-1"),
           ("repetition_penalty", 0, "must be > 0"), ("repetition_penalty", float("nan"), "finite number"),
           ("top_p", 2, "(0, 1]"), ("top_p", 0, "(0, 1]"), ("do_sample", "yes", "True or False"),
           ("num_beams", 4, "does not take"), ("output_scores", True, "does not take"),
       ]},
    "generate temperature 0 when sampling": (lambda m: m.generate(IDS, do_sample=True, temperature=0.0),
                                             InputError, "do_sample=False"),
    "generate max_length and max_new_tokens": (lambda m: m.generate(IDS, max_length=9, max_new_tokens=2),
                                               InputError, "give one"),
    "generate with a dict as generation_config": (lambda m: m.generate(IDS, generation_config={"max_new_tokens": 2}),
                                                  InputError, "transformers.GenerationConfig"),
    "generate with a beam-search generation_config": (
        lambda m: m.generate(IDS, generation_config=GenerationConfig(num_beams=3)), InputError, "num_beams=3"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_sentinel_error_naming_the_fix(model, case):
    act, error, fragment = CASES[case]
    with pytest.raises(error, match=None) as caught:
        act(model)
    assert isinstance(caught.value, SentinelError)
    message = str(caught.value)
    assert fragment in message, message
    assert "\n" not in message


def test_gates_outside_zero_one_are_allowed_and_scale_the_head(model):
    with torch.no_grad():
        base = model(IDS).logits
        model.gates[0, 1] = 2.0
        doubled = model(IDS).logits
        model.gates[0, 1] = -1.0
        negated = model(IDS).logits
    assert (doubled - base).abs().max() > 1e-4 and (negated - base).abs().max() > 1e-4


def test_a_gate_written_through_data_is_seen_by_forward_and_generate(model):
    """The wrapper used to cache "all gates are 1" by the tensor's version counter, which `.data` writes skip."""
    with torch.no_grad():
        before = model(IDS).logits
        model.gates.data[1, :] = 0
        after = model(IDS).logits
        assert (after - before).abs().max() > 1e-4
        model.gates.data.fill_(1)
        assert torch.equal(model(IDS).logits, before)
        model.gates.data[1, :] = 0
        gated = model.generate(IDS, max_new_tokens=4, eos_token_id=[])
        model.gates.data.fill_(1)
        ungated = model.generate(IDS, max_new_tokens=4, eos_token_id=[])
    assert torch.equal(gated[:, :4], ungated[:, :4])  # same prompt; the continuation is checked by the logits above


def test_right_padding_warns_as_hf_does(model):
    ids = torch.tensor([[5, 6, 7, 8], [5, 6, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with pytest.warns(UserWarning, match="padding_side = 'left'"):
        model.generate(ids, attention_mask=mask, max_new_tokens=1, eos_token_id=[])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.generate(ids.flip(1), attention_mask=mask.flip(1), max_new_tokens=1, eos_token_id=[])


# prune plans: the native decoder (the wrapper refuses prune_heads with its own one-line reason)
PRUNE_CASES = {
    "float head": ({0: [1.7]}, "is not an integer"),
    "string layer": ({"0": [1]}, "is not an integer"),
    "layer named twice": ({0: [1], torch.tensor(0): [2]}, "named twice"),
    "bool head": ({0: [True]}, "is a bool"),
    "head out of range": ({0: [99]}, "no head [99]"),
    "negative layer": ({-1: [0]}, "no layer -1"),
    "layer out of range": ({7: [0]}, "no layer 7"),
    "heads not a list": ({0: 1}, "list of head ids"),
    "not a mapping": ([[0, 1]], "{layer: [head, ...]}"),
    "every head of a layer": ({0: range(4)}, "no heads left"),
}


@pytest.mark.parametrize("case", list(PRUNE_CASES))
def test_bad_prune_plan_is_refused_before_anything_changes(synthetic_folders, case):
    model = load_adaptive_model(synthetic_folders("gpt2"))
    plan, fragment = PRUNE_CASES[case]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PruneError) as caught:
        model.prune_heads({1: [0], **plan} if isinstance(plan, dict) else plan)
    assert fragment in str(caught.value), str(caught.value)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_int_like_prune_plans_are_taken(synthetic_folders):
    import numpy as np
    model = load_adaptive_model(synthetic_folders("gpt2"))
    model.prune_heads({np.int64(0): [torch.tensor(1)], 1: torch.tensor([0, 2])})
    assert model.pruned_heads == {0: [1], 1: [0, 2]}


def test_a_pruned_heads_gate_reopened_is_refused(synthetic_folders):
    model = load_adaptive_model(synthetic_folders("gpt2"))
    model.prune_heads({0: [1]})
    assert model.gates[0, 1].item() == 0
    with torch.no_grad():
        model.gates[0, 1] = 1.0
    with pytest.raises(GateError, match="head 1 of layer 0 was pruned"):
        model(IDS)
    with pytest.raises(GateError, match="reload the model"):
        model.generate(IDS, max_new_tokens=1)


def test_cuda_graph_on_cpu_is_an_error(synthetic_folders):
    model = load_adaptive_model(synthetic_folders("gpt2"))
    with pytest.raises(DeviceError, match="CUDA device"):
        model.generate(IDS, max_new_tokens=1, cuda_graph=True)


def test_a_static_cache_larger_than_memory_is_refused_before_allocating(synthetic_folders):
    model = load_adaptive_model(synthetic_folders("llama-gqa"))
    with pytest.raises(InputError, match="static KV cache of .* GiB free: pass a smaller max_new_tokens"):
        model.generate(IDS, max_new_tokens=10**9, static_cache=True)
