"""Marian (opus-mt): BART's post-LN blocks with fixed sinusoidal positions (a table from row 0, read from the HF
model as it built it), no layernorm_embedding, and the pad token as the decoder's start."""

from ..spec import Seq2SeqSpec
from . import Family, register
from .bart import bart_rules, bart_spec


def to_spec(c) -> Seq2SeqSpec:
    return bart_spec(c, pre_norm=False, position_offset=0, embedding_norm=False, final_norm=False)


register(Family("marian", to_spec, bart_rules))
