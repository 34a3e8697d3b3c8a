"""Gemma (gemma-2b/7b, CodeGemma): Llama's layout with embeddings scaled by sqrt(hidden_size),
RMSNorms that scale by (1 + weight), a GeGLU MLP (tanh GELU) and an explicit head_dim."""

from transformers.models.gemma.modeling_gemma import GemmaRotaryEmbedding

from ..spec import DecoderSpec
from . import Family, refuse, register
from . import llama


def to_spec(c) -> DecoderSpec:
    refuse(c, "use_bidirectional_attention", "embedding models attend both ways; the gated decoder is causal", bool)
    # transformers 4.x kept Gemma's activation under hidden_activation when set; 5.x has hidden_act only.
    act = getattr(c, "hidden_activation", None) or c.hidden_act
    return llama.to_spec(c, "gemma", GemmaRotaryEmbedding, activation=act, norm_unit_offset=True,
                         embed_scale=c.hidden_size**0.5)


register(Family("gemma", to_spec, llama.rules))
