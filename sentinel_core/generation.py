"""Generation defaults, in one place: which ids end and pad a sequence, and where each token sits.

Shared by the native decoder's `generate` (model.py), the generic wrapper's (generic.py), the command
line and the matrix's checks, so that all of them mean the same by the same arguments, and HF's.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch

from .errors import InputError


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
    _count("max_new_tokens", max_new_tokens, least=1)
    if eos_token_id is None:
        eos_token_id = checkpoint_token(model, "eos_token_id")
    eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
    if pad_token_id is None:
        pad_token_id = checkpoint_token(model, "pad_token_id")
        pad_token_id = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
    return eos, pad_token_id


# generate's own defaults: greedy, 20 new tokens. A checkpoint's generation_config gives eos and pad (as HF's
# does) but never turns sampling on by itself; pass generation_config=model.generation_config for all of it.
DEFAULTS = dict(max_new_tokens=20, do_sample=False, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0,
                min_new_tokens=0)
# Settings of HF's GenerationConfig that change what generate computes and that this generate does not implement.
_UNSUPPORTED = {"num_beams": 1, "num_return_sequences": 1, "no_repeat_ngram_size": 0, "typical_p": 1.0,
                "min_p": None, "bad_words_ids": None, "begin_suppress_tokens": None, "suppress_tokens": None,
                "forced_bos_token_id": None, "forced_eos_token_id": None, "penalty_alpha": None}


@dataclass(frozen=True)
class GenerateSettings:
    max_new_tokens: int
    do_sample: bool
    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float
    min_new_tokens: int
    eos: list[int]
    pad_token_id: int


def generate_settings(model, prompt_length: int, generation_config=None, max_length=None, unsupported=None,
                      **given) -> GenerateSettings:
    """What one generate call does, as HF resolves it: an argument given explicitly, else `generation_config`'s
    value (when one is passed), else DEFAULTS. `max_length` counts the prompt, as HF's does. Every value is
    checked here, so a bad one is one InputError naming it, on both paths, before any forward runs."""
    if unsupported:
        name = sorted(unsupported)[0]
        raise InputError(f"generate() got {name}=, which this model's generate does not take: use HF's model "
                         f"(load_baseline_model) for it, or drop it")
    if generation_config is not None:
        if not hasattr(generation_config, "to_dict"):
            raise InputError(f"generation_config is a {type(generation_config).__name__}: pass a "
                             f"transformers.GenerationConfig")
        for name, inert in _UNSUPPORTED.items():
            value = getattr(generation_config, name, None)
            if value is not None and value != inert and value != []:
                raise InputError(f"generation_config sets {name}={value!r}, which this "
                                 f"model's generate does not implement: set it to {inert!r}, or use HF's model")
        from_config = {name: getattr(generation_config, name, None) for name in (*DEFAULTS, "eos_token_id",
                                                                                  "pad_token_id")}
        if max_length is None and given.get("max_new_tokens") is None and from_config["max_new_tokens"] is None:
            max_length = generation_config.max_length
        given = {**{k: v for k, v in from_config.items() if v is not None}, **{k: v for k, v in given.items()
                                                                              if v is not None}}
    else:
        given = {k: v for k, v in given.items() if v is not None}
    if max_length is not None:
        if given.get("max_new_tokens") is not None:
            raise InputError("generate() got both max_length and max_new_tokens: give one (max_new_tokens counts "
                             "new tokens only, max_length the prompt too)")
        total = _count("max_length", max_length, least=1)
        if total <= prompt_length:
            raise InputError(f"max_length={total} leaves no room after the {prompt_length}-token prompt: raise it, or "
                             f"pass max_new_tokens")
        given["max_new_tokens"] = total - prompt_length
    settings = {**DEFAULTS, **given}
    max_new = _count("max_new_tokens", settings["max_new_tokens"], least=1)
    min_new = _count("min_new_tokens", settings["min_new_tokens"], least=0)
    top_k = _count("top_k", settings["top_k"], least=0)
    do_sample = settings["do_sample"]
    if not isinstance(do_sample, bool):
        raise InputError(f"do_sample={do_sample!r}: pass True or False")
    temperature, top_p, penalty = (_number(name, settings[name]) for name in ("temperature", "top_p",
                                                                            "repetition_penalty"))
    if do_sample and temperature <= 0:
        raise InputError(f"temperature={temperature} with do_sample=True: a temperature must be > 0 (for the most "
                         f"likely token every step, pass do_sample=False)")
    if not 0 < top_p <= 1:
        raise InputError(f"top_p={top_p}: it must be in (0, 1]; 1 keeps every token")
    if penalty <= 0:
        raise InputError(f"repetition_penalty={penalty}: it must be > 0; 1 means no penalty")
    eos, pad = generation_tokens(model, max_new, settings.get("eos_token_id"), settings.get("pad_token_id"))
    return GenerateSettings(max_new_tokens=max_new, do_sample=do_sample, temperature=temperature, top_k=top_k,
                            top_p=top_p, repetition_penalty=penalty, min_new_tokens=min_new, eos=eos,
                            pad_token_id=pad)


def _count(name: str, value, least: int) -> int:
    """An integer argument of generate, at least `least`; a float, string or bool is refused, not rounded."""
    try:
        number = operator.index(value) if not isinstance(value, bool) else None
    except TypeError:
        number = None
    if number is None or number < least:
        raise InputError(f"{name}={value!r}: pass an integer of at least {least}")
    return number


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name}={value!r}: pass a finite number")
    return float(value)


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions of a (left-)padded batch as HF generate derives them from the attention mask: cumsum(mask) - 1.

    Padding slots get 1, as in transformers 4.x (5.x fills them with 0). They are masked out of every
    real token's attention, so their value never reaches a real token; 1 keeps our outputs bitwise as
    they were recorded.
    """
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
