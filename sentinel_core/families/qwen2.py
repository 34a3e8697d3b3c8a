"""Qwen2: Llama's layout with biases on q, k and v (not on o), and sliding windows on the layers
`layer_types` names (only with use_sliding_window)."""

from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

from ..spec import DecoderSpec
from . import Family, register, UnsupportedConfigError
from . import llama


def to_spec(c) -> DecoderSpec:
    layer_types = getattr(c, "layer_types", None)
    if layer_types is None and getattr(c, "use_sliding_window", False):
        raise UnsupportedConfigError("qwen2: use_sliding_window without layer_types is not supported "
                                     "(upgrade transformers to a version whose Qwen2Config has layer_types)")
    sliding = tuple(t == "sliding_attention" for t in layer_types) if layer_types else ()
    window = getattr(c, "sliding_window", None) if any(sliding) else None
    return llama.to_spec(c, "qwen2", Qwen2RotaryEmbedding, qkv_bias=True, out_bias=False, mlp_bias=False,
                         sliding_window=window, sliding_layers=sliding if window else ())


register(Family("qwen2", to_spec, llama.rules))
