"""Gemma (gemma-2b/7b, CodeGemma): Llama's layout with embeddings scaled by sqrt(hidden_size),
RMSNorms that scale by (1 + weight), a GeGLU MLP (tanh GELU) and an explicit head_dim."""

from transformers.models.gemma.modeling_gemma import GemmaRotaryEmbedding

from ..spec import DecoderSpec
from . import Family, refuse, register
from . import llama


def to_spec(c) -> DecoderSpec:
    refuse(c, "use_bidirectional_attention", "embedding models attend both ways; the gated decoder is causal", bool)
    # HF's GemmaMLP runs hidden_act (4.57 and 5.x alike); official configs also carry hidden_activation,
    # which HF ignores, and so do we.
    return llama.to_spec(c, "gemma", GemmaRotaryEmbedding, norm_unit_offset=True,
                         embed_scale=c.hidden_size**0.5)


register(Family("gemma", to_spec, llama.rules))
