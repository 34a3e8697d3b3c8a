"""GPT-Neo: GPT-2's layout with separate q/k/v (no bias), unscaled attention, and local layers that
see only the last `window_size` positions."""

from ..spec import DecoderSpec
from . import Family, Rule, fused, layers, linear, norm, register


def to_spec(c) -> DecoderSpec:
    local = tuple(kind == "local" for kind in c.attention_layers)
    return DecoderSpec(
        family="gpt_neo",
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        num_layers=c.num_layers,
        num_heads=c.num_heads,
        num_kv_heads=c.num_heads,
        head_dim=c.hidden_size // c.num_heads,
        intermediate_size=c.intermediate_size or 4 * c.hidden_size,
        norm_eps=c.layer_norm_epsilon,
        positions="learned",
        max_positions=c.max_position_embeddings,
        attn_scale=1.0,  # GPT-Neo does not scale QK^T
        qkv_bias=False,
        out_bias=True,
        sliding_window=c.window_size if any(local) else None,
        sliding_layers=local if any(local) else (),
        activation=c.activation_function,
        tie_embeddings=c.tie_word_embeddings,
    )


def rules(s: DecoderSpec) -> list[Rule]:
    block = "transformer.h.{i}"
    attn = f"{block}.attn.attention"
    return [
        Rule("embed.weight", ("transformer.wte.weight",)),
        Rule("pos_embed.weight", ("transformer.wpe.weight",)),
        *layers(s, [
            *norm("layers.{i}.attn_norm", f"{block}.ln_1", s),
            *fused("layers.{i}.attn.qkv", [f"{attn}.{p}_proj" for p in "qkv"], False),
            *linear("layers.{i}.attn.out", f"{attn}.out_proj", True),
            *norm("layers.{i}.mlp_norm", f"{block}.ln_2", s),
            *linear("layers.{i}.mlp.up", f"{block}.mlp.c_fc", True),
            *linear("layers.{i}.mlp.down", f"{block}.mlp.c_proj", True),
        ]),
        *norm("final_norm", "transformer.ln_f", s),
        *([] if s.tie_embeddings else [Rule("lm_head.weight", ("lm_head.weight",))]),
    ]


register(Family("gpt_neo", to_spec, rules))
