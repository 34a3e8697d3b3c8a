"""Phi (phi-1, phi-1.5, phi-2): one LayerNorm feeding attention and a dense GELU MLP in parallel,
partial rotary, biases everywhere, an LM head with a bias. Per-head q/k LayerNorms are refused."""

from transformers.models.phi.modeling_phi import PhiRotaryEmbedding

from ..spec import DecoderSpec
from . import Family, Rule, fused, layers, linear, norm, refuse, register, rotary_frequencies


def to_spec(c) -> DecoderSpec:
    refuse(c, "qk_layernorm", "per-head LayerNorms on q and k are not in the gated decoder", bool)
    rotary = rotary_frequencies(c, PhiRotaryEmbedding)
    return DecoderSpec(
        family="phi",
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        num_layers=c.num_hidden_layers,
        num_heads=c.num_attention_heads,
        num_kv_heads=c.num_key_value_heads or c.num_attention_heads,
        head_dim=getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
        intermediate_size=c.intermediate_size,
        norm_eps=c.layer_norm_eps,
        positions="rotary",
        **rotary,
        parallel_residual=True,
        shared_norm=True,
        parallel_sum="attn+mlp+x",
        activation=c.hidden_act,
        tie_embeddings=c.tie_word_embeddings,
        lm_head_bias=True,
    )


def rules(s: DecoderSpec) -> list[Rule]:
    block = "model.layers.{i}"
    return [
        Rule("embed.weight", ("model.embed_tokens.weight",)),
        *layers(s, [
            *norm("layers.{i}.attn_norm", f"{block}.input_layernorm", s),
            *fused("layers.{i}.attn.qkv", [f"{block}.self_attn.{p}_proj" for p in "qkv"], True),
            *linear("layers.{i}.attn.out", f"{block}.self_attn.dense", True),
            *linear("layers.{i}.mlp.up", f"{block}.mlp.fc1", True),
            *linear("layers.{i}.mlp.down", f"{block}.mlp.fc2", True),
        ]),
        *norm("final_norm", "model.final_layernorm", s),
        *([] if s.tie_embeddings else [Rule("lm_head.weight", ("lm_head.weight",))]),
        Rule("lm_head.bias", ("lm_head.bias",)),
    ]


register(Family("phi", to_spec, rules))
