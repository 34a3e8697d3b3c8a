"""The load check: the adaptive model builds, every weight mapped, parameters = HF + one gate per head, and the
gates reach the heads."""

from __future__ import annotations

import torch

from .inputs import _logprobs, input_batch
from .pair import CheckFailed, ModelPair


def check_load(pair: ModelPair) -> dict:
    n_hf = sum(p.numel() for p in pair.hf.parameters())
    n_ad = sum(p.numel() for p in pair.adaptive.parameters())
    gates = pair.adaptive.num_layers * pair.adaptive.num_heads
    metrics = {**pair.metrics, "params_hf": n_hf, "params_adaptive": n_ad, "gates": gates,
               "load_ratio": round(pair.metrics["load_s"] / max(pair.metrics["baseline_load_s"], 1e-9), 3)}
    if n_ad != n_hf + gates:
        raise CheckFailed(f"parameter count {n_ad:,} != HF {n_hf:,} + {gates} gates", metrics)
    metrics["first_and_last_layer_gate_effect"] = gate_effect(pair)
    if metrics["first_and_last_layer_gate_effect"] == 0.0:
        # At gates = 1 the generic wrapper is HF by construction; this is where it can fail.
        raise CheckFailed("closing the first and last layers' gates changed no log-prob: the gates reach no head",
                          metrics)
    return metrics


@torch.no_grad()
def gate_effect(pair: ModelPair) -> float:
    """Max |Δ log p| when every gate of the first and last layer is set to 0 (then restored)."""
    ids, mask = input_batch(pair)
    model, saved = pair.adaptive, pair.adaptive.gates.detach().clone()
    try:
        before = _logprobs(model, ids, mask)
        model.gates[0] = 0
        model.gates[-1] = 0
        return (_logprobs(model, ids, mask) - before).abs()[mask.bool()].max().item()
    finally:
        model.gates.copy_(saved)
