"""Phi-3 (and Phi-4-mini): Llama's layout with q|k|v and gate|up each stored as one fused linear,
already in the decoder's order, and an optional sliding window on every layer."""

from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding

from ..spec import DecoderSpec
from . import Family, Rule, layers, linear, norm, register
from . import llama


def to_spec(c) -> DecoderSpec:
    window = getattr(c, "sliding_window", None)
    # Phi3ForCausalLM.prepare_inputs_for_generation re-runs the prefix at original_max_position_embeddings + 1
    # (whatever the rope type); the matching generate does the same.
    original_max = getattr(c, "original_max_position_embeddings", None)
    return llama.to_spec(c, "phi3", Phi3RotaryEmbedding, qkv_bias=False, out_bias=False, mlp_bias=False,
                         sliding_window=window, sliding_layers=(True,) * c.num_hidden_layers if window else (),
                         rerun_at_length=original_max + 1 if original_max else 0)


def rules(s: DecoderSpec) -> list[Rule]:
    block = "model.layers.{i}"
    return [
        Rule("embed.weight", ("model.embed_tokens.weight",)),
        *layers(s, [
            *norm("layers.{i}.attn_norm", f"{block}.input_layernorm", s),
            *linear("layers.{i}.attn.qkv", f"{block}.self_attn.qkv_proj", False),
            *linear("layers.{i}.attn.out", f"{block}.self_attn.o_proj", False),
            *norm("layers.{i}.mlp_norm", f"{block}.post_attention_layernorm", s),
            *linear("layers.{i}.mlp.up", f"{block}.mlp.gate_up_proj", False),
            *linear("layers.{i}.mlp.down", f"{block}.mlp.down_proj", False),
        ]),
        *norm("final_norm", "model.norm", s),
        *([] if s.tie_embeddings else [Rule("lm_head.weight", ("lm_head.weight",))]),
    ]


register(Family("phi3", to_spec, rules))
