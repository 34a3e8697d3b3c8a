"""Conversion bugs of an encoder-decoder (sentinel_core/seq2seq.py), injected on purpose: the encoder-decoder
mutation check (sentinel_matrix/checks/seq2seq.py) runs quality and infer on each and records which were caught.
As in mutants.py, each changes a loaded model in place and returns its undo, or why it does not apply; a third of
them are cross-attention's (its keys and values, its heads, its source mask)."""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from transformers.activations import ACT2FN

from .mutants import ACTIVATION_TWINS, Mutant, _always_applicable, _bf16_row, _restoring, _setting, _undo_all

SEQ2SEQ_MUTANTS: dict[str, Mutant] = {}


def mutant(name: str, description: str, inapplicable=_always_applicable):
    def register(apply):
        SEQ2SEQ_MUTANTS[name] = Mutant(name, description, apply, inapplicable)
        return apply
    return register


def _attention(model, kind: str):
    return model.attentions(kind)[0]


# Heads -------------------------------------------------------------------------------------------------------

def _out_columns_flipped(model, kind: str):
    attention = _attention(model, kind)
    undo = _restoring(attention.o.weight)
    with torch.no_grad():
        block = attention.o.weight[:, :attention.head_dim]
        block.copy_(block.flip(1))
    return undo


def _query_heads_swapped(model, kind: str):
    attention = _attention(model, kind)
    if attention.num_heads < 2:
        return "one head only"
    d = attention.head_dim
    tensors = [t for t in (attention.q.weight, attention.q.bias) if t is not None]
    undo = _restoring(*tensors)
    with torch.no_grad():
        for t in tensors:
            first, second = t[:d].clone(), t[d:2 * d].clone()
            t[:d], t[d:2 * d] = second, first
    return undo


for _kind, _name in (("encoder", "encoder self-attention"), ("decoder", "decoder self-attention"),
                     ("cross", "cross-attention")):
    mutant(f"{_kind}_head_out_permuted", f"layer 0's {_name}: one head's columns of the output projection reversed")(
        lambda model, kind=_kind: _out_columns_flipped(model, kind))
    mutant(f"{_kind}_query_heads_swapped", f"layer 0's {_name}: the first two heads' query rows swapped")(
        lambda model, kind=_kind: _query_heads_swapped(model, kind))


@mutant("cross_keys_values_swapped", "layer 0's cross-attention reads its keys through v and its values through k")
def _cross_keys_values_swapped(model):
    attention = _attention(model, "cross")
    return _undo_all([_setting(attention, "k", attention.v), _setting(attention, "v", attention.k)])


@mutant("cross_attends_padding", "cross-attention ignores the source mask (padding attended)")
def _cross_attends_padding(model):
    decode = model.decode

    def unmasked(decoder_input_ids, encoder_states, attention_mask=None, *args, **kwargs):
        return decode(decoder_input_ids, encoder_states, None, *args, **kwargs)
    return _setting(model, "decode", unmasked)


@mutant("encoder_attends_padding", "the encoder's self-attention ignores the source mask (padding attended)")
def _encoder_attends_padding(model):
    encode = model.encode
    return _setting(model, "encode", lambda input_ids, attention_mask=None: encode(input_ids, None))


@mutant("encoder_final_norm_skipped", "the encoder's final norm left out: cross-attention reads unnormed states")
def _encoder_final_norm_skipped(model):
    if model.encoder.final_norm is None:
        return "no final encoder norm (post-norm layers end normed)"
    return _setting(model.encoder, "final_norm", torch.nn.Identity())


# Scales, positions, norms ------------------------------------------------------------------------------------

@mutant("score_scale_swapped", "attention scores scaled as the other convention does (T5: by d^-0.5; BART: not at all)")
def _score_scale_swapped(model):
    scale = 1.0 if model.spec.score_scale != 1.0 else model.spec.head_dim ** -0.5
    return _undo_all([_setting(a, "scale", scale) for kind in ("encoder", "decoder", "cross")
                      for a in model.attentions(kind)])


@mutant("embed_scale_swapped", "embeddings scaled by sqrt(d_model) where they are not, or not where they are")
def _embed_scale_swapped(model):
    spec = model.spec
    scale = 1.0 if spec.embed_scale != 1.0 else math.sqrt(spec.hidden_size)
    return _setting(model, "spec", replace(spec, embed_scale=scale))


def _table_positions(model, *, longest: int, dtype: str) -> str | None:
    return None if model.spec.positions == "table" else "relative position buckets: no position table"


def _relative_positions(model, *, longest: int, dtype: str) -> str | None:
    return None if model.spec.positions == "relative" else "a position table: no relative buckets"


def _row_beyond_fits(model, *, longest: int, dtype: str) -> str | None:
    """A table read one row further needs that row: inputs that reach the table's last row (half precision's
    statistics inputs run to the model's positions) would index past it, a crash (on CUDA a device-side assert that
    ends the process's CUDA context), not a measurement."""
    reason = _table_positions(model, longest=longest, dtype=dtype)
    if reason:
        return reason
    rows = model.encoder.pos.num_embeddings
    if longest + model.spec.position_offset + 1 > rows:
        return f"inputs of {longest} positions reach the table's last row: one row further is outside the table"
    return None


@mutant("positions_offset_off_by_one", "the position table read one row further (BART's offset 2 taken as 3)",
        inapplicable=_row_beyond_fits)
def _positions_offset(model):
    return _undo_all([_setting(stack, "spec", replace(stack.spec, position_offset=stack.spec.position_offset + 1))
                      for stack in (model.encoder, model.decoder)])


@mutant("decoder_buckets_bidirectional", "the decoder's relative buckets computed as the encoder's (bidirectional)",
        inapplicable=_relative_positions)
def _decoder_buckets_bidirectional(model):
    return _setting(model.decoder, "kind", "encoder")


@mutant("bucket_distance_halved", "relative_attention_max_distance halved", inapplicable=_relative_positions)
def _bucket_distance_halved(model):
    return _undo_all([_setting(stack, "spec", replace(stack.spec, relative_max_distance=max(
        stack.spec.relative_max_distance // 2, stack.spec.relative_buckets // 2 + 1))) for stack in (model.encoder, model.decoder)])


@mutant("cache_positions_restart", "cached decoding gives each new token the positions of the first ones")
def _cache_positions_restart(model):
    stack = model.decoder
    embed, bias = stack.embed, stack.position_bias
    return _undo_all([_setting(stack, "embed", lambda tokens, past: embed(tokens, 0)),
                      _setting(stack, "position_bias", lambda queries, keys, past, device: bias(queries, keys, 0, device))])


@mutant("norm_order_swapped", "every sub-block normalised on the other side of its residual add (pre ↔ post)")
def _norm_order_swapped(model):
    return _undo_all([_setting(layer, "pre_norm", not layer.pre_norm)
                      for stack in (model.encoder, model.decoder) for layer in stack.layers])


@mutant("norm_eps_x100", "every norm's eps × 100")
def _norm_eps(model):
    from sentinel_core.seq2seq import Norm

    return _undo_all([_setting(m, "eps", m.eps * 100) for m in model.modules() if isinstance(m, Norm)])


@mutant("activation_twin", "the MLP activation swapped for its near twin (relu → leaky, gelu ↔ gelu_new, ...)")
def _activation_twin(model):
    twin = ACTIVATION_TWINS.get(model.spec.activation)
    if twin is None:
        return f"no twin listed for {model.spec.activation}"
    act = ACT2FN[twin] if isinstance(twin, str) else twin
    return _undo_all([_setting(layer.mlp, "act", act) for stack in (model.encoder, model.decoder)
                      for layer in stack.layers])


@mutant("final_logits_bias_dropped", "the LM head's final_logits_bias left out")
def _final_logits_bias_dropped(model):
    if not model.spec.final_logits_bias:
        return "no final_logits_bias"
    undo = _restoring(model.final_logits_bias)
    model.final_logits_bias.zero_()
    return undo


@mutant("tied_head_unscaled", "a tied LM head without T5's d_model^-0.5 rescale")
def _tied_head_unscaled(model):
    if model.spec.logits_scale == 1.0:
        return "no rescale before the head"
    return _setting(model, "spec", replace(model.spec, logits_scale=1.0))


@mutant("weights_through_bf16", "every weight rounded through bf16 on conversion", inapplicable=_bf16_row)
def _weights_through_bf16(model):
    params = [p for p in model.parameters() if p.is_floating_point()]
    undo = _restoring(*params)
    with torch.no_grad():
        for p in params:
            p.copy_(p.to(torch.bfloat16).to(p.dtype))
    return undo
