"""Synthetic checkpoints: a real HF config with every parameter randomised, saved with save_pretrained.

HF's default init zeroes biases and sets norms to 1, which hides mapping bugs (a transposed bias or a
swapped norm looks right). Here every parameter, biases and norm weights included, gets random
values of a scale that keeps activations O(1), so logits are peaked enough for greedy decoding to be
a meaningful comparison.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM
from transformers.pytorch_utils import Conv1D


@torch.no_grad()
def randomise_(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)

    def normal(p: torch.Tensor, std: float, mean: float = 0.0) -> None:
        p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) * std + mean)

    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue  # tied weights are randomised once
            seen.add(id(p))
            if isinstance(module, nn.Embedding):
                # Logits of a tied head are h·E with |h| ~ sqrt(dim): this keeps their spread near a
                # trained model's (std ~4) instead of growing with the width.
                normal(p, 4.0 * p.shape[1] ** -0.5)
            elif p.dim() >= 2:
                fan_in = p.shape[0] if isinstance(module, Conv1D) else p.shape[1]
                normal(p, fan_in**-0.5)
            elif name == "weight":  # norm scales: around 1, never exactly 1
                normal(p, 0.2, 1.0)
            else:  # biases
                normal(p, 0.2)
    return model


def config_fingerprint(config, seed: int) -> str:
    import transformers

    payload = json.dumps({"config": config.to_dict(), "seed": seed, "transformers": transformers.__version__},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def make_synthetic_checkpoint(config, folder: str | Path, seed: int = 0) -> Path:
    """Randomised `config` model saved to `folder` (fp32 safetensors) for loading with from_pretrained."""
    folder = Path(folder)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    randomise_(model, seed)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    return folder


def cached_synthetic_checkpoint(config, cache_dir: str | Path, name: str, seed: int = 0) -> Path:
    """Like make_synthetic_checkpoint, reusing a folder made earlier for the same config, seed and transformers."""
    folder = Path(cache_dir) / f"{name.replace('/', '--')}-{config_fingerprint(config, seed)}"
    if not (folder / "config.json").exists():
        # A private folder renamed into place: concurrent makers (xdist workers) never see half a checkpoint.
        tmp = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        make_synthetic_checkpoint(config, tmp, seed)
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first; the checkpoints are identical
            shutil.rmtree(tmp, ignore_errors=True)
    return folder
