"""Pytest plugin for tests: loading tiny/opt-post-ln (the OPT checkpoint with post-LN blocks) raises a CUDA
out-of-memory error."""

import json
from pathlib import Path

import torch

import sentinel_matrix.checks as checks

_original = checks.load_pair


def load_pair(folder, *args, **kwargs):
    config = json.loads((Path(folder) / "config.json").read_text())
    if config.get("do_layer_norm_before") is False:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    return _original(folder, *args, **kwargs)


checks.load_pair = load_pair
