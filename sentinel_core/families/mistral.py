"""Mistral: Llama's layout with a sliding attention window on every layer."""

from transformers.models.mistral.modeling_mistral import MistralRotaryEmbedding

from ..spec import DecoderSpec
from . import Family, register
from . import llama


def to_spec(c) -> DecoderSpec:
    window = getattr(c, "sliding_window", None)
    return llama.to_spec(c, "mistral", MistralRotaryEmbedding, qkv_bias=False, out_bias=False, mlp_bias=False,
                         sliding_window=window, sliding_layers=(True,) * c.num_hidden_layers if window else ())


register(Family("mistral", to_spec, llama.rules))
