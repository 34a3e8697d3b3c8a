"""GPT-2 (gpt2, distilgpt2, gpt2-medium/large/xl): Conv1D weights are stored [in, out]."""

from ..spec import DecoderSpec
from . import Family, Rule, layers, linear, norm, refuse, register, transpose


def to_spec(c) -> DecoderSpec:
    refuse(c, "add_cross_attention", "decoder-only models have no cross-attention", bool)
    return DecoderSpec(
        family="gpt2",
        vocab_size=c.vocab_size,
        hidden_size=c.n_embd,
        num_layers=c.n_layer,
        num_heads=c.n_head,
        num_kv_heads=c.n_head,
        head_dim=c.n_embd // c.n_head,
        intermediate_size=c.n_inner or 4 * c.n_embd,
        norm_eps=c.layer_norm_epsilon,
        positions="learned",
        max_positions=c.n_positions,
        attn_scale=None if c.scale_attn_weights else 1.0,
        # reorder_and_upcast_attn only changes the precision of the scores; SDPA keeps fp32 accumulators.
        scale_by_inverse_layer_idx=c.scale_attn_by_inverse_layer_idx,
        activation=c.activation_function,
        tie_embeddings=c.tie_word_embeddings,
    )


def rules(s: DecoderSpec) -> list[Rule]:
    block = "transformer.h.{i}"
    return [
        Rule("embed.weight", ("transformer.wte.weight",)),
        Rule("pos_embed.weight", ("transformer.wpe.weight",)),
        *layers(s, [
            *norm("layers.{i}.attn_norm", f"{block}.ln_1", s),
            *linear("layers.{i}.attn.qkv", f"{block}.attn.c_attn", True, transpose),
            *linear("layers.{i}.attn.out", f"{block}.attn.c_proj", True, transpose),
            *norm("layers.{i}.mlp_norm", f"{block}.ln_2", s),
            *linear("layers.{i}.mlp.up", f"{block}.mlp.c_fc", True, transpose),
            *linear("layers.{i}.mlp.down", f"{block}.mlp.c_proj", True, transpose),
        ]),
        *norm("final_norm", "transformer.ln_f", s),
        *([] if s.tie_embeddings else [Rule("lm_head.weight", ("lm_head.weight",))]),
    ]


register(Family("gpt2", to_spec, rules))
