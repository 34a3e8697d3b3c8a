"""Hugging Face model -> gated decoder, through a family's declarative rules.

Loud by design: an HF parameter no rule reads, or a rule whose HF key is absent, is an error naming
the key. With `consume=True` (the loader owns the HF model) every HF tensor is released as soon as
its canonical tensor exists, so the weights are never held twice.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .errors import CheckpointError
from .families import get_family
from .spec import DecoderSpec


def hf_ties_embeddings(hf_model) -> bool:
    out, inp = hf_model.get_output_embeddings(), hf_model.get_input_embeddings()
    return out is not None and out.weight is inp.weight


def spec_for(hf_model) -> DecoderSpec:
    family = get_family(hf_model.config.model_type)
    spec = family.to_spec(hf_model.config)
    # The loaded model is the truth about tying (configs of some checkpoints disagree with it).
    return dataclasses.replace(spec, tie_embeddings=hf_ties_embeddings(hf_model),
                               **hf_separate_from_rules(spec.family, spec))


def hf_separate_from_rules(family_name: str, spec: DecoderSpec) -> dict:
    """Which fused matrices HF multiplies as separate linears: those the family's rules stack from several HF
    weights (the spec's hf_separate_qkv and hf_separate_gate_up)."""
    sources = {rule.target: len(rule.sources) for rule in get_family(family_name).rules(spec)}
    return {"hf_separate_qkv": sources.get("layers.0.attn.qkv.weight", 1) > 1,
            "hf_separate_gate_up": sources.get("layers.0.mlp.up.weight", 1) > 1}


def hf_module_name(hf_model, target: str) -> str:
    """The HF module that a canonical parameter comes from, e.g. layers.3.attn.out -> model.layers.3.self_attn.o_proj.

    Used to check gates against HF itself: zeroing a head's slice of the input of HF's output
    projection must equal a zero gate.
    """
    spec = spec_for(hf_model)
    names = dict(hf_model.named_modules())
    for rule in get_family(spec.family).rules(spec):
        if rule.target == f"{target}.weight":
            for key in rule.sources[0].split("|"):
                module = key.rsplit(".", 1)[0]
                if module in names:
                    return module
    raise KeyError(f"no HF module maps to {target}")


def _shares_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _pick(alternatives: str, hf_params: dict, spec: DecoderSpec, rule) -> str:
    """A rule source "a|b" names one parameter that transformers versions call differently."""
    for key in alternatives.split("|"):
        if key in hf_params:
            return key
    raise CheckpointError(
        f"{spec.family}: parameter {alternatives!r} (needed for {rule.target}) is missing from the HF model")


@torch.no_grad()
def convert_weights(hf_model, spec: DecoderSpec, consume: bool) -> dict[str, torch.Tensor]:
    family = get_family(spec.family)
    hf_params = dict(hf_model.named_parameters())  # tied parameters appear once
    weights: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for rule in family.rules(spec):
        keys = [_pick(alternatives, hf_params, spec, rule) for alternatives in rule.sources]
        sources = [hf_params[k].detach() for k in keys]
        tensor = rule.combine(*sources) if rule.combine else sources[0]
        if not consume and any(_shares_storage(tensor, s) for s in sources):
            tensor = tensor.clone()  # the caller keeps its model; ours must not alias it
        weights[rule.target] = tensor.contiguous()
        used.update(keys)
        if consume:
            for key in keys:  # release HF's reference; ours may still hold the storage
                hf_params[key].data = torch.empty(0, dtype=sources[0].dtype, device=sources[0].device)
    unused = sorted(set(hf_params) - used)
    if unused:
        raise CheckpointError(f"{spec.family}: HF parameter(s) left unused by the converter: {', '.join(unused[:5])}"
                              + (f" and {len(unused) - 5} more" if len(unused) > 5 else ""))
    return weights


def build_decoder(cls, hf_model, consume: bool, **init_kwargs):
    """Build `cls` (a GatedDecoder subclass) from an HF model without allocating random weights first."""
    spec = spec_for(hf_model)
    some_param = next(hf_model.parameters())
    device, dtype = some_param.device, some_param.dtype
    weights = convert_weights(hf_model, spec, consume)
    with torch.device("meta"):
        model = cls(spec, **init_kwargs)
    expected = {name for name, _ in model.named_parameters() if name != "gates"}
    if spec.tie_embeddings:
        expected.discard("lm_head.weight")
    if expected != set(weights):
        missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise CheckpointError(f"{spec.family} converter is incomplete: no rule for {missing}, unknown targets {extra}")
    model.load_state_dict(weights, strict=False, assign=True)
    model.gates = nn.Parameter(torch.ones(spec.num_layers, spec.num_heads, device=device, dtype=dtype),
                               requires_grad=False)
    model.tie_weights()
    model.init_buffers(device)
    return model.eval()


def build_seq2seq(cls, hf_model, consume: bool, **init_kwargs):
    """Build `cls` (AdaptiveSeq2SeqLM) from an HF encoder-decoder, as build_decoder does a causal model."""
    spec = dataclasses.replace(get_family(hf_model.config.model_type).to_spec(hf_model.config),
                               tie_embeddings=hf_ties_embeddings(hf_model))
    some_param = next(hf_model.parameters())
    device, dtype = some_param.device, some_param.dtype
    weights = convert_weights(hf_model, spec, consume)
    if spec.final_logits_bias:  # a buffer in HF's model, so no rule reads it
        weights["final_logits_bias"] = hf_model.final_logits_bias.detach().clone()
    with torch.device("meta"):
        model = cls(spec, **init_kwargs)
    expected = {name for name, _ in model.named_parameters() if not name.startswith("gates.")}
    expected |= {"final_logits_bias"} if spec.final_logits_bias else set()
    if spec.tie_embeddings:
        expected.discard("lm_head.weight")
    if expected != set(weights):
        missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise CheckpointError(f"{spec.family} converter is incomplete: no rule for {missing}, unknown targets {extra}")
    model.load_state_dict(weights, strict=False, assign=True)
    for kind, gates in model.gates.items():
        model.gates[kind] = nn.Parameter(torch.ones(gates.shape, device=device, dtype=dtype), requires_grad=False)
    model.tie_weights()
    model.init_buffers(device)
    return model.eval()
