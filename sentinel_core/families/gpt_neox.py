"""GPT-NeoX / Pythia: fused QKV interleaved per head, partial rotary, parallel or serial residual."""

from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXRotaryEmbedding

from ..spec import DecoderSpec
from . import Family, Rule, layers, linear, norm, per_head_qkv_to_blocks, register, rotary_frequencies


def to_spec(c) -> DecoderSpec:
    rotary = rotary_frequencies(c, GPTNeoXRotaryEmbedding)
    return DecoderSpec(
        family="gpt_neox",
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        num_layers=c.num_hidden_layers,
        num_heads=c.num_attention_heads,
        num_kv_heads=c.num_attention_heads,
        head_dim=c.hidden_size // c.num_attention_heads,
        intermediate_size=c.intermediate_size,
        norm_eps=c.layer_norm_eps,
        positions="rotary",
        **rotary,
        qkv_bias=getattr(c, "attention_bias", True),
        out_bias=getattr(c, "attention_bias", True),
        parallel_residual=c.use_parallel_residual,
        activation=c.hidden_act,
        tie_embeddings=c.tie_word_embeddings,
    )


def rules(s: DecoderSpec) -> list[Rule]:
    block = "gpt_neox.layers.{i}"
    qkv = per_head_qkv_to_blocks(s.num_heads, s.head_dim)
    return [
        Rule("embed.weight", ("gpt_neox.embed_in.weight",)),
        *layers(s, [
            *norm("layers.{i}.attn_norm", f"{block}.input_layernorm", s),
            *linear("layers.{i}.attn.qkv", f"{block}.attention.query_key_value", s.qkv_bias, qkv, qkv),
            *linear("layers.{i}.attn.out", f"{block}.attention.dense", s.out_bias),
            *norm("layers.{i}.mlp_norm", f"{block}.post_attention_layernorm", s),
            *linear("layers.{i}.mlp.up", f"{block}.mlp.dense_h_to_4h", True),
            *linear("layers.{i}.mlp.down", f"{block}.mlp.dense_4h_to_h", True),
        ]),
        *norm("final_norm", "gpt_neox.final_layer_norm", s),
        *([] if s.tie_embeddings else [Rule("lm_head.weight", ("lm_head.weight|embed_out.weight",))]),  # 5.x | 4.x
    ]


register(Family("gpt_neox", to_spec, rules))
