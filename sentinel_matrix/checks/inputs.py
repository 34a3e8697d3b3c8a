"""The inputs every check feeds both models: a left-padded batch, half precision's statistics inputs, the
positions HF takes, log-probs."""

from __future__ import annotations

import inspect

import torch

from sentinel_core.names import NATIVE

from .. import grading
from .pair import ModelPair

PROMPTS = [
    "The history of the city begins in the twelfth century, when a small market grew up beside the river",
    "Water boils at a lower temperature",
    "In mathematics, a prime number is",
]


def input_batch(pair: ModelPair) -> tuple[torch.Tensor, torch.Tensor]:
    """A left-padded batch of three rows of different lengths: real text with a tokenizer, else random ids."""
    if pair.tokenizer is not None:
        rows = [pair.tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    else:
        g = torch.Generator().manual_seed(0)
        vocab = pair.adaptive.spec.vocab_size
        rows = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in (13, 9, 5)]
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    return ids.to(pair.device), mask.to(pair.device)


def max_positions(pair: ModelPair) -> int | None:
    """How many positions the model was built for (None: no limit, as with ALiBi)."""
    config = pair.hf.config
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    return None


def statistics_inputs(pair: ModelPair) -> dict[str, tuple[torch.Tensor, None]]:
    """Half precision's inputs beside the padded batch: grading.STATISTICS_BATCH rows of many positions and,
    where the device has a LONG_CONTEXT and the config allows it, one long row (rope precision shows far out).
    Real weights read the shipped Wikipedia text; synthetic ones seeded random ids. No padding: called as
    `model(ids)`, the way HF users call a model on one text."""
    if pair.dtype == "float32":
        return {}
    device = "cuda" if pair.device.startswith("cuda") else "cpu"
    limit = max_positions(pair) or 1 << 30
    rows, length = grading.STATISTICS_BATCH[device]
    length = min(length, limit)
    long = grading.LONG_CONTEXT.get(device)
    needed = max(rows * length, long if long and long <= limit else 0)
    if pair.real_weights and pair.tokenizer is not None:
        from ..sources import wikipedia_text

        tokens = pair.tokenizer(wikipedia_text(), return_tensors="pt")["input_ids"][0, :needed]
    else:
        tokens = torch.randint(3, pair.adaptive.spec.vocab_size, (needed,), generator=torch.Generator().manual_seed(1))
    inputs = {"statistics": (tokens[:rows * length].view(rows, length).to(pair.device), None)}
    if long and long <= limit and len(tokens) >= long:
        inputs["long"] = (tokens[None, :long].to(pair.device), None)
    return inputs


def hf_position_kwargs(pair: ModelPair, positions: torch.Tensor) -> dict:
    """position_ids for the HF baseline where it takes them: not for ALiBi models (BLOOM, MPT).

    A wrapped model (no native spec) is asked through its HF forward's signature."""
    if pair.adaptive.adaptive_path == NATIVE:
        takes = pair.adaptive.spec.positions != "alibi"
    else:
        takes = "position_ids" in inspect.signature(pair.hf.forward).parameters
    return {"position_ids": positions} if takes else {}


def _logprobs(model, ids, mask, **kw) -> torch.Tensor:
    return model(ids, attention_mask=mask, **kw).logits.float().log_softmax(-1)
