"""Synthetic weights: an entry's real config with random values (sentinel_core/synthetic.py), cached on disk."""

from __future__ import annotations

from pathlib import Path

from .cache import cache_dir


def synthetic_checkpoint(entry, full_depth: bool = False) -> Path:
    """The entry's real config with random weights, cached on disk; cut to entry.synthetic_layers
    unless `full_depth` (benchmarks time the real geometry, every layer, and need no calibrated
    distribution: timing does not depend on it, and calibrating a 7B model on a CPU takes minutes)."""
    from sentinel_core.synthetic import cached_synthetic_checkpoint

    config = entry.hf_config() if full_depth else entry.synthetic_config()
    return cached_synthetic_checkpoint(config, cache_dir() / "synthetic", calibrate=not full_depth)
