"""Models larger than one device: the gated decoder's blocks placed across devices by accelerate, as HF's own
`device_map` places an HF model's.

`place(model, device_map, max_memory, offload_folder)` takes what `from_pretrained` takes: "auto" (or "balanced",
"balanced_low_0", "sequential") lets `accelerate.infer_auto_device_map` fill the devices in order within
`max_memory`, never splitting a block; a dict maps module names (`embed`, `layers.3`, `lm_head`, ...) to a GPU
index, "cuda:N", "cpu" (weights in host memory, computed on the main device) or "disk" (weights memory-mapped from
`offload_folder`). `accelerate.dispatch_model` then moves each block's inputs to where its weights are; the KV cache
of a layer is made by that layer, so it lives on that layer's device. The placement is `model.hf_device_map`, as on
HF's models.

What accelerate's hooks cannot see is moved here: a block's `AttentionMask` (a dataclass, not a tensor) and the
logits, which come back on the first device (where the ids are), so `generate` continues on one device.
"""

from __future__ import annotations

import dataclasses

import torch

from .errors import InputError, UnsupportedModelError

AUTO_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
NO_SPLIT = ["Block"]  # the gated decoder's block: attention and MLP stay on one device


def check_device_map(device_map, offload_folder) -> None:
    if isinstance(device_map, str):
        if device_map not in AUTO_MAPS:
            raise InputError(f"device_map={device_map!r}: pass one of {', '.join(map(repr, AUTO_MAPS))} or a dict of "
                             f"module name -> device (0, 'cuda:1', 'cpu', 'disk')")
        return
    if not isinstance(device_map, dict) or not device_map:
        raise InputError(f"device_map must be {' | '.join(map(repr, AUTO_MAPS))} or a dict of module name -> device, "
                         f"got {type(device_map).__name__}")
    for name, device in device_map.items():
        if device == "disk":
            continue
        try:
            torch.device(device)
        except (RuntimeError, TypeError):
            raise InputError(f"device_map[{name!r}] = {device!r}: use a GPU index, 'cuda:N', 'cpu' or 'disk'") from None
    if "disk" in device_map.values() and offload_folder is None:
        raise InputError("device_map puts modules on 'disk': pass offload_folder= (a folder for their weights)")


def place(model, device_map, max_memory: dict | None = None, offload_folder=None):
    """Dispatch a native gated decoder across devices (see the module's docstring); returns the model."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    from .decoder import AttentionMask, GatedDecoder

    if not isinstance(model, GatedDecoder):
        raise UnsupportedModelError(f"device_map places the native gated decoder's blocks; a {type(model).__name__} "
                                    f"is not split: load it on one device (device=...), or load HF's model with "
                                    f"load_baseline_model(..., device_map=...)")
    check_device_map(device_map, offload_folder)
    if isinstance(device_map, str):
        if device_map in ("balanced", "balanced_low_0"):
            max_memory = get_balanced_memory(model, max_memory=max_memory, no_split_module_classes=NO_SPLIT,
                                             low_zero=device_map == "balanced_low_0")
        device_map = infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=NO_SPLIT)
    device_map = dict(device_map)  # the caller's dict is theirs: the gates' entry is added to a copy
    if "" in device_map:  # the whole model on one device: named by its parts, so the gates can be placed apart
        whole = device_map.pop("")
        device_map = {**{name: whole for name, _ in model.named_children()},
                      **{name: whole for name, _ in model.named_parameters(recurse=False)}, **device_map}
    devices = set(device_map.values())
    if "disk" in devices and offload_folder is None:
        raise InputError(f"max_memory leaves no room on a device for {sum(d == 'disk' for d in device_map.values())} "
                         f"module(s), so they go to 'disk': pass offload_folder=, or more max_memory")
    gpus = [d for d in device_map.values() if d not in ("cpu", "disk")]
    main_device = _device(gpus[0]) if gpus else torch.device("cpu")
    # The gates are read on the host once per call and sliced per layer: never offloaded, beside the embedding.
    embed = device_map.get("embed", "cpu")
    device_map["gates"] = str(main_device if embed in ("cpu", "disk") else _device(embed))
    dispatch_model(model, device_map=device_map, main_device=main_device, offload_dir=offload_folder,
                   skip_keys="past_key_values")
    for block in model.layers:
        hook = getattr(block, "_hf_hook", None)
        target = getattr(hook, "execution_device", None)
        if target is not None:
            block.register_forward_pre_hook(_masks_to(_device(target), AttentionMask), with_kwargs=True)
    model.register_forward_hook(_logits_to_input_device, with_kwargs=True)
    model.hf_device_map = dict(device_map)
    return model


def _device(device) -> torch.device:
    return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)


def _masks_to(device: torch.device, mask_type):
    def hook(module, args, kwargs):
        def moved(value):
            if not isinstance(value, mask_type):
                return value
            return dataclasses.replace(value, **{f.name: getattr(value, f.name).to(device) for f in
                                                 dataclasses.fields(value)
                                                 if isinstance(getattr(value, f.name), torch.Tensor)})
        return tuple(moved(a) for a in args), {k: moved(v) for k, v in kwargs.items()}
    return hook


def _logits_to_input_device(module, args, kwargs, output):
    ids = args[0] if args else kwargs.get("input_ids")
    if isinstance(ids, torch.Tensor) and output.logits.device != ids.device:
        output.logits = output.logits.to(ids.device)
        if output.loss is not None:
            output.loss = output.loss.to(ids.device)
    return output


def is_split(model) -> bool:
    """Whether the model's modules sit on more than one device (or some are offloaded)."""
    device_map = getattr(model, "hf_device_map", None) or {}
    return len(set(device_map.values())) > 1 or "disk" in device_map.values()


def offloaded(model) -> bool:
    """Whether some weights live outside the model between forwards (accelerate's cpu or disk offload)."""
    return bool(getattr(model, "hf_device_map", None)) and any(p.device.type == "meta" for p in model.parameters())
