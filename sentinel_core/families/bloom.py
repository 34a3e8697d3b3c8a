"""BLOOM: ALiBi, embedding LayerNorm, fused QKV interleaved per head, optional residual from the LN output."""

from ..spec import DecoderSpec
from . import Family, Rule, layers, linear, norm, per_head_qkv_to_blocks, refuse, register


def to_spec(c) -> DecoderSpec:
    refuse(c, "slow_but_exact", "with pretraining_tp > 1 HF drops the attention and MLP output biases",
           lambda value: bool(value) and c.pretraining_tp > 1)
    return DecoderSpec(
        family="bloom",
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        num_layers=c.n_layer,
        num_heads=c.n_head,
        num_kv_heads=c.n_head,
        head_dim=c.hidden_size // c.n_head,
        intermediate_size=4 * c.hidden_size,
        norm_eps=c.layer_norm_epsilon,
        positions="alibi",
        residual_from_norm=c.apply_residual_connection_post_layernorm,
        activation="bloom_gelu",
        embed_norm=True,
        tie_embeddings=c.tie_word_embeddings,
    )


def rules(s: DecoderSpec) -> list[Rule]:
    block = "transformer.h.{i}"
    qkv = per_head_qkv_to_blocks(s.num_heads, s.head_dim)
    return [
        Rule("embed.weight", ("transformer.word_embeddings.weight",)),
        *norm("embed_norm", "transformer.word_embeddings_layernorm", s),
        *layers(s, [
            *norm("layers.{i}.attn_norm", f"{block}.input_layernorm", s),
            *linear("layers.{i}.attn.qkv", f"{block}.self_attention.query_key_value", True, qkv, qkv),
            *linear("layers.{i}.attn.out", f"{block}.self_attention.dense", True),
            *norm("layers.{i}.mlp_norm", f"{block}.post_attention_layernorm", s),
            *linear("layers.{i}.mlp.up", f"{block}.mlp.dense_h_to_4h", True),
            *linear("layers.{i}.mlp.down", f"{block}.mlp.dense_4h_to_h", True),
        ]),
        *norm("final_norm", "transformer.ln_f", s),
        *([] if s.tie_embeddings else [Rule("lm_head.weight", ("lm_head.weight",))]),
    ]


register(Family("bloom", to_spec, rules))
