"""What a model call is given, checked once at the boundary: ids, masks, gates and prune plans.

Both paths (the native decoder and the generic wrapper) call these, so a bad input gets the same
message whichever path runs. Layout checks (type, shape, device) read no tensor values and run on
every forward, compiled and captured ones included. Value checks (ids inside the vocabulary, gates
finite, a pruned head's gate still 0) need one host sync, so they run once per forward a caller makes
and once per generate call, never per decode step: CUDA graphs stay capturable.

Gates may hold any finite value: 1 is the model as loaded, 0 removes the head, values in between
scale it, and values outside [0, 1] (negative, > 1) are allowed for experiments such as amplifying a head.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Mapping

import torch

from .errors import DeviceError, GateError, InputError, PruneError

_IDS_FIX = "pass token ids as an integer tensor [batch, length], e.g. tokenizer(text, return_tensors='pt').input_ids"


def check_ids(input_ids, device: torch.device) -> None:
    """input_ids: a 2-D integer tensor with at least one token, on the model's device (no values read)."""
    if not isinstance(input_ids, torch.Tensor):
        kind = "a ragged list" if _ragged(input_ids) else type(input_ids).__name__
        raise InputError(f"input_ids is {kind}, not a tensor: {_IDS_FIX} (padding=True for several texts)")
    if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
        raise InputError(f"input_ids has dtype {input_ids.dtype}: token ids are integers; {_IDS_FIX}")
    if input_ids.dtype not in (torch.int64, torch.int32):  # what an embedding takes; smaller ints wrap silently
        raise InputError(f"input_ids has dtype {input_ids.dtype}: token ids are torch.long (input_ids.long())")
    if input_ids.dim() != 2:
        fix = " (add the batch dimension: input_ids[None])" if input_ids.dim() == 1 else ""
        raise InputError(f"input_ids has shape {tuple(input_ids.shape)}: expected [batch, length]{fix}")
    if input_ids.numel() == 0:
        raise InputError(f"input_ids has shape {tuple(input_ids.shape)}: give at least one token in every row")
    if torch.device(device).type == "meta":
        raise DeviceError("the model is on the meta device, where tensors hold no values: load it again "
                          "(load_adaptive_model) and move it with model.to('cpu' or 'cuda')")
    if input_ids.device != device:
        raise DeviceError(f"input_ids are on {input_ids.device} but the model is on {device}: "
                          f"input_ids.to(model.device)")


def check_mask(attention_mask, input_ids: torch.Tensor, length: int) -> None:
    """attention_mask: None, or [batch, length] on the ids' device, where length counts every position it covers."""
    if attention_mask is None:
        return
    if not isinstance(attention_mask, torch.Tensor):
        raise InputError(f"attention_mask is a {type(attention_mask).__name__}, not a tensor: pass the tokenizer's "
                         f"attention_mask (return_tensors='pt')")
    expected = (input_ids.shape[0], length)
    if tuple(attention_mask.shape) != expected:
        raise InputError(f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids need {expected} "
                         f"(one entry per token, cached ones included): pass the mask that came with the ids")
    if attention_mask.device != input_ids.device:
        raise DeviceError(f"attention_mask is on {attention_mask.device} but input_ids are on {input_ids.device}: "
                          f"attention_mask.to(input_ids.device)")


def check_gates(gates: torch.Tensor, num_layers: int, num_heads: int, device: torch.device) -> None:
    """gates: exactly [layers, heads], floating point, on the model's device (no values read)."""
    if tuple(gates.shape) != (num_layers, num_heads):
        raise GateError(f"gates have shape {tuple(gates.shape)} but the model has {num_layers} layers of "
                        f"{num_heads} heads: write into them in place (model.gates[layer, head] = 0) rather than "
                        f"replacing them, or build a [{num_layers}, {num_heads}] tensor")
    if not gates.dtype.is_floating_point:
        raise GateError(f"gates have dtype {gates.dtype}: use a floating-point tensor")
    if gates.device != device:
        raise GateError(f"gates are on {gates.device} but the model is on {device}: keep them on the model's device "
                        f"(model.to(device) moves them)")


def check_values(input_ids: torch.Tensor, vocab_size: int, gates: torch.Tensor, kept: torch.Tensor) -> bool:
    """ids inside the vocabulary, gates finite, every pruned head's gate 0; one host sync for all of them.

    Returns whether every kept head's gate is 1 (the caller may then skip the multiply). `kept`: [layers,
    heads] bool, False where a head was pruned.
    """
    with torch.no_grad():
        flags = torch.stack([input_ids.min() < 0, input_ids.max() >= vocab_size, ~torch.isfinite(gates).all(),
                             torch.where(kept, 0, gates).ne(0).any(), torch.where(kept, gates, 1).eq(1).all()])
        negative, too_large, not_finite, reopened, unit = flags.tolist()
    if negative or too_large:
        bad = int(input_ids.min()) if negative else int(input_ids.max())
        raise InputError(f"input_ids holds token id {bad}, outside the model's vocabulary 0..{vocab_size - 1}: "
                         f"use the checkpoint's own tokenizer (or resize the embeddings)")
    if not_finite:
        layer, head = (~torch.isfinite(gates)).nonzero()[0].tolist()
        raise GateError(f"gate [{layer}, {head}] is {gates[layer, head].item()}: gates must be finite numbers")
    if reopened:
        layer, head = (torch.where(kept, 0, gates) != 0).nonzero()[0].tolist()
        raise GateError(f"head {head} of layer {layer} was pruned (its weights are gone) but its gate was set to "
                        f"{gates[layer, head].item()}: keep it 0, or reload the model to have the head back")
    return bool(unit)


def warn_if_right_padded(attention_mask) -> None:
    """generate continues the last position of every row: a row padded on the right continues a pad. HF warns."""
    if attention_mask is not None and bool((attention_mask[:, -1] == 0).any()):
        warnings.warn("right padding detected in attention_mask: generated tokens would follow the padding, not the "
                      "text; pad on the left for generation (tokenizer.padding_side = 'left')", stacklevel=3)


def _index(value, what: str) -> int:
    """An int from an int-like value (int, numpy integer, 0-d integer tensor); floats, strings, bools refused."""
    if isinstance(value, bool):
        raise PruneError(f"prune_heads: {what} {value!r} is a bool; give an integer")
    try:
        return operator.index(value)
    except TypeError:
        raise PruneError(f"prune_heads: {what} {value!r} is not an integer; give integers "
                         f"({{layer: [head, ...]}})") from None


def prune_plan(heads, num_layers: int, num_heads: int) -> dict[int, set[int]]:
    """{layer: [head, ...]} as {int: {int}}, every layer and head an integer in range, no layer named twice."""
    if not isinstance(heads, Mapping):
        raise PruneError(f"prune_heads takes {{layer: [head, ...]}}, got a {type(heads).__name__}")
    plan: dict[int, set[int]] = {}
    for layer_key, head_list in heads.items():
        layer = _index(layer_key, "layer")
        if layer in plan:
            raise PruneError(f"prune_heads: layer {layer} is named twice ({layer_key!r} and another key): "
                             f"merge its heads into one list")
        if not 0 <= layer < num_layers:
            raise PruneError(f"prune_heads: no layer {layer}; the model has layers 0..{num_layers - 1}")
        if isinstance(head_list, (str, bytes)) or not hasattr(head_list, "__iter__"):
            raise PruneError(f"prune_heads: layer {layer}: give a list of head ids, got {head_list!r}")
        doomed = {_index(h, "head") for h in head_list}
        outside = sorted(h for h in doomed if not 0 <= h < num_heads)
        if outside:
            raise PruneError(f"prune_heads: no head {outside} in layer {layer}; heads are 0..{num_heads - 1}")
        plan[layer] = doomed
    return plan


def _ragged(value) -> bool:
    rows = value if isinstance(value, (list, tuple)) else []
    return len({len(row) for row in rows if isinstance(row, (list, tuple))}) > 1
