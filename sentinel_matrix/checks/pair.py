"""A loaded model pair (HF's reference and the adaptive model, each through its public loader) and what a
check raises: CheckFailed with the numbers, or CheckInconclusive."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sentinel_core import load_adaptive_model, load_baseline_model
from sentinel_core.families import reference_attention
from sentinel_core.loader import load_config

from ..timing import timed_load


class CheckFailed(AssertionError):
    """A measured difference, with its numbers in the message and in `metrics` (the record keeps them)."""

    def __init__(self, message: str, metrics: dict | None = None):
        super().__init__(message)
        self.metrics = metrics or {}


class CheckInconclusive(Exception):
    """The check ran but its reference cannot tell right from wrong (a degenerate HF distribution): no pass, no failure."""

    def __init__(self, message: str, metrics: dict | None = None):
        super().__init__(message)
        self.metrics = metrics or {}


@dataclass
class ModelPair:
    hf: object
    adaptive: object
    tokenizer: object | None
    device: str
    dtype: str
    real_weights: bool
    metrics: dict = field(default_factory=dict)  # load-time measurements
    # Loads HF's model in fp32 on the same device: the reference a half-precision row's rounding is
    # measured against (None: no reference, e.g. a pair built by hand in a test).
    load_fp32_reference: object = None
    # HF's side of the comparisons (hf_reference), computed once: every mutant of the mutation check reuses it.
    cache: dict = field(default_factory=dict)
    load_fp32_adaptive: object = None  # the adaptive model in fp32: mutants' effects are measured on it

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


def load_pair(folder, device: str, dtype: str, tokenizer=None, real_weights=False, hf_kwargs=None,
              device_map=None) -> ModelPair:
    """HF's reference (eager attention, or what the family names: Falcon-RW's ALiBi is SDPA's) and the adaptive
    model, each loaded through its own public path and timed. `device_map` ("auto"): each placed across the devices by
    accelerate (HF's model by from_pretrained, the adaptive one by sentinel_core/placement.py)."""
    hf_kwargs = dict(hf_kwargs or {})
    hf_kwargs.setdefault("attn_implementation", reference_attention(load_config(str(folder))))
    placed = {"device_map": device_map, "device": None} if device_map else {"device": device}
    hf, hf_s, hf_mb = timed_load(lambda: load_baseline_model(folder, dtype=dtype, **placed, **hf_kwargs), device)
    loader = (lambda: load_adaptive_model(folder, baseline_model=hf, device=device, dtype=dtype)) \
        if set(hf_kwargs) - {"attn_implementation"} else (lambda: load_adaptive_model(folder, dtype=dtype, **placed))
    adaptive, ad_s, ad_mb = timed_load(loader, device)
    metrics = {"load_s": round(ad_s, 3), "baseline_load_s": round(hf_s, 3), "peak_mem_mb": round(ad_mb, 1),
               "baseline_peak_mem_mb": round(hf_mb, 1)}
    if device_map:
        # HF sets hf_device_map only when the model is split: a model that fits one device has none
        metrics.update(placement=layers_per_device(adaptive.hf_device_map),
                       baseline_placement=layers_per_device(getattr(hf, "hf_device_map", None) or {"": str(hf.device)}))
    fp32_reference = lambda: load_baseline_model(folder, device=device, dtype="float32", **hf_kwargs)  # noqa: E731
    fp32_adaptive = lambda: load_adaptive_model(folder, device=device, dtype="float32")  # noqa: E731
    return ModelPair(hf, adaptive, tokenizer, device, dtype, real_weights, metrics, load_fp32_reference=fp32_reference,
                     load_fp32_adaptive=fp32_adaptive)


def layers_per_device(device_map: dict) -> dict[str, int]:
    """How many modules of the map sit on each device ("0", "cpu", "disk")."""
    counts: dict[str, int] = {}
    for device in device_map.values():
        counts[str(device)] = counts.get(str(device), 0) + 1
    return counts
