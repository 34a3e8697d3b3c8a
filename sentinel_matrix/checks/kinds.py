"""Which implementation of a check a pair gets: a decoder-only model's (load.py, infer.py, ...) or an
encoder-decoder's (seq2seq.py). The checks' names, rows and records are the same for both."""

from __future__ import annotations

import functools


def is_encoder_decoder(model) -> bool:
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


def by_architecture(causal, encoder_decoder):
    """One check: `encoder_decoder(pair, ...)` for an encoder-decoder pair, else `causal(pair, ...)`."""

    @functools.wraps(causal)
    def check(pair, *args, **kwargs):
        return (encoder_decoder if is_encoder_decoder(pair.adaptive) else causal)(pair, *args, **kwargs)

    return check
