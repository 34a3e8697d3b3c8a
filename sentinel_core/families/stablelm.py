"""StableLM (stablelm-2, stablelm-3b-4e1t): LayerNorm, partial rotary, SwiGLU, optional q/k/v biases and
an optional parallel block with one shared norm. Per-head q/k LayerNorms (qk_layernorm) are refused."""

from transformers.models.stablelm.modeling_stablelm import StableLmRotaryEmbedding

from ..spec import DecoderSpec
from . import Family, Rule, fused, layers, linear, norm, refuse, register, rotary_frequencies


def to_spec(c) -> DecoderSpec:
    refuse(c, "qk_layernorm", "per-head LayerNorms on q and k are not in the gated decoder", bool)
    rotary = rotary_frequencies(c, StableLmRotaryEmbedding)
    return DecoderSpec(
        family="stablelm",
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        num_layers=c.num_hidden_layers,
        num_heads=c.num_attention_heads,
        num_kv_heads=c.num_key_value_heads or c.num_attention_heads,
        head_dim=c.hidden_size // c.num_attention_heads,
        intermediate_size=c.intermediate_size,
        norm_eps=c.layer_norm_eps,
        positions="rotary",
        **rotary,
        qkv_bias=c.use_qkv_bias,
        out_bias=False,
        parallel_residual=c.use_parallel_residual,
        shared_norm=c.use_parallel_residual,
        parallel_sum="x+attn+mlp",
        mlp="gated",
        activation=c.hidden_act,
        mlp_bias=False,
        tie_embeddings=c.tie_word_embeddings,
    )


def rules(s: DecoderSpec) -> list[Rule]:
    block = "model.layers.{i}"
    return [
        Rule("embed.weight", ("model.embed_tokens.weight",)),
        *layers(s, [
            *norm("layers.{i}.attn_norm", f"{block}.input_layernorm", s),
            *fused("layers.{i}.attn.qkv", [f"{block}.self_attn.{p}_proj" for p in "qkv"], s.qkv_bias),
            *linear("layers.{i}.attn.out", f"{block}.self_attn.o_proj", False),
            *([] if s.shared_norm else norm("layers.{i}.mlp_norm", f"{block}.post_attention_layernorm", s)),
            *fused("layers.{i}.mlp.up", [f"{block}.mlp.gate_proj", f"{block}.mlp.up_proj"], False),
            *linear("layers.{i}.mlp.down", f"{block}.mlp.down_proj", False),
        ]),
        *norm("final_norm", "model.norm", s),
        *([] if s.tie_embeddings else [Rule("lm_head.weight", ("lm_head.weight",))]),
    ]


register(Family("stablelm", to_spec, rules))
