"""Generation defaults, in one place: which ids end and pad a sequence, and where each token sits.

Shared by the native decoder's `generate` (model.py), the generic wrapper's (generic.py), the command
line and the matrix's checks, so that all of them mean the same by the same arguments, and HF's.
"""

from __future__ import annotations

import torch


def checkpoint_token(model, name: str):
    """A token id setting (`eos_token_id`, `pad_token_id`, ...) as HF generate defaults it: the checkpoint's
    generation_config first, then its model config; None when neither has it. An eos may be a list."""
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        value = getattr(source, name, None) if source is not None else None
        if value is not None:
            return value
    return None


def generation_tokens(model, max_new_tokens: int, eos_token_id, pad_token_id) -> tuple[list[int], int]:
    """generate's eos ids and pad id: None takes the checkpoint's (`checkpoint_token`); eos_token_id=[]
    means no eos at all; a pad id nobody gives is the first eos, else 0."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if eos_token_id is None:
        eos_token_id = checkpoint_token(model, "eos_token_id")
    eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
    if pad_token_id is None:
        pad_token_id = checkpoint_token(model, "pad_token_id")
        pad_token_id = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
    return eos, pad_token_id


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions of a (left-)padded batch as HF generate derives them from the attention mask: cumsum(mask) - 1.

    Padding slots get 1, as in transformers 4.x (5.x fills them with 0). They are masked out of every
    real token's attention, so their value never reaches a real token; 1 keeps our outputs bitwise as
    they were recorded.
    """
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
