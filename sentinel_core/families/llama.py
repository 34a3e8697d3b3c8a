"""Llama (TinyLlama, Llama-2/3, SmolLM2, open_llama): RMSNorm, rotary with scaling, GQA, SwiGLU."""

from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from ..spec import DecoderSpec
from . import Family, Rule, fused, layers, linear, norm, register, rotary_frequencies


def to_spec(c, family: str = "llama", rotary_cls=LlamaRotaryEmbedding, **overrides) -> DecoderSpec:
    """Llama's spec; Llama-shaped families (Mistral, Qwen2) pass their rotary class and differences."""
    rotary = rotary_frequencies(c, rotary_cls)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    fields = dict(
        family=family,
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        num_layers=c.num_hidden_layers,
        num_heads=c.num_attention_heads,
        num_kv_heads=c.num_key_value_heads or c.num_attention_heads,
        head_dim=head_dim,
        intermediate_size=c.intermediate_size,
        norm="rmsnorm",
        norm_eps=c.rms_norm_eps,
        positions="rotary",
        **rotary,
        qkv_bias=getattr(c, "attention_bias", False),
        out_bias=getattr(c, "attention_bias", False),
        mlp="gated",
        activation=c.hidden_act,
        mlp_bias=getattr(c, "mlp_bias", False),
        tie_embeddings=c.tie_word_embeddings,
    )
    return DecoderSpec(**{**fields, **overrides})


def rules(s: DecoderSpec) -> list[Rule]:
    block = "model.layers.{i}"
    return [
        Rule("embed.weight", ("model.embed_tokens.weight",)),
        *layers(s, [
            *norm("layers.{i}.attn_norm", f"{block}.input_layernorm", s),
            *fused("layers.{i}.attn.qkv", [f"{block}.self_attn.{p}_proj" for p in "qkv"], s.qkv_bias),
            *linear("layers.{i}.attn.out", f"{block}.self_attn.o_proj", s.out_bias),
            *norm("layers.{i}.mlp_norm", f"{block}.post_attention_layernorm", s),
            *fused("layers.{i}.mlp.up", [f"{block}.mlp.gate_proj", f"{block}.mlp.up_proj"], s.mlp_bias),
            *linear("layers.{i}.mlp.down", f"{block}.mlp.down_proj", s.mlp_bias),
        ]),
        *norm("final_norm", "model.norm", s),
        *([] if s.tie_embeddings else [Rule("lm_head.weight", ("lm_head.weight",))]),
    ]


register(Family("llama", to_spec, rules))
