"""Hub weights: the real checkpoint where the HF cache holds it or the hub can be reached; a row skips, saying
why, where it cannot be had."""

from __future__ import annotations

from pathlib import Path


def hub_checkpoint(hub_id: str, gated: bool = False) -> str:
    """The hub id when its files are in the HF cache or the hub can be reached. The row skips where it cannot be
    had here (offline and not cached, gated without a token: no answer either way) and fails, saying so, when
    no such model exists."""
    import pytest
    from huggingface_hub import constants, get_token, try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(hub_id, "config.json"), str)
    if not cached and constants.HF_HUB_OFFLINE:
        pytest.skip(f"hub: {hub_id} is not in the HF cache and HF_HUB_OFFLINE=1 (download it once with "
                    f"`hf download {hub_id}` where the hub is reachable)")
    if not cached and gated and get_token() is None:
        pytest.skip(f"hub: {hub_id} is gated: accept its licence and set HF_TOKEN")
    from sentinel_core.errors import GatedModelError
    from sentinel_core.loader import load_config

    try:
        load_config(hub_id)  # downloads config.json where the hub is reachable
    except GatedModelError as exc:
        pytest.skip(f"hub: {exc}")
    return hub_id


def hub_revision(hub_id: str) -> str:
    """The commit of the hub checkpoint in the HF cache (its snapshot folder's name), or "" when not cached."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(hub_id, "config.json")
    return Path(cached).parent.name if isinstance(cached, str) else ""  # .../snapshots/<commit>/config.json


def tokenizer_for(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)
