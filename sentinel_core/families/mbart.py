"""mBART: BART with pre-LN blocks and a final norm after each stack."""

from ..spec import Seq2SeqSpec
from . import Family, register
from .bart import BART_POSITION_OFFSET, bart_rules, bart_spec


def to_spec(c) -> Seq2SeqSpec:
    return bart_spec(c, pre_norm=True, position_offset=BART_POSITION_OFFSET, embedding_norm=True, final_norm=True)


register(Family("mbart", to_spec, bart_rules))
