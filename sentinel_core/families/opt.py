"""OPT: positions from the attention mask with an offset of 2; opt-350m is post-LN and projects 512 <-> 1024."""

from ..spec import DecoderSpec
from . import Family, Rule, fused, layers, linear, norm, register

OPT_POSITION_OFFSET = 2


def to_spec(c) -> DecoderSpec:
    head_dim = c.hidden_size // c.num_attention_heads
    return DecoderSpec(
        family="opt",
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        num_layers=c.num_hidden_layers,
        num_heads=c.num_attention_heads,
        num_kv_heads=c.num_attention_heads,
        head_dim=head_dim,
        intermediate_size=c.ffn_dim,
        norm_affine=c.layer_norm_elementwise_affine,
        positions="learned",
        max_positions=c.max_position_embeddings,
        learned_position_offset=OPT_POSITION_OFFSET,
        positions_from_mask=True,
        qkv_bias=c.enable_bias,
        out_bias=c.enable_bias,
        mlp_bias=c.enable_bias,
        pre_norm=c.do_layer_norm_before,
        activation=c.activation_function,
        word_embed_dim=c.word_embed_proj_dim,
        final_norm=c.do_layer_norm_before and not getattr(c, "_remove_final_layer_norm", False),
        tie_embeddings=c.tie_word_embeddings,
    )


def rules(s: DecoderSpec) -> list[Rule]:
    block = "model.decoder.layers.{i}"
    projected = s.embed_dim != s.hidden_size
    return [
        Rule("embed.weight", ("model.decoder.embed_tokens.weight",)),
        Rule("pos_embed.weight", ("model.decoder.embed_positions.weight",)),
        *(linear("project_in", "model.decoder.project_in", False) if projected else []),
        *(linear("project_out", "model.decoder.project_out", False) if projected else []),
        *layers(s, [
            *norm("layers.{i}.attn_norm", f"{block}.self_attn_layer_norm", s),
            *fused("layers.{i}.attn.qkv", [f"{block}.self_attn.{p}_proj" for p in "qkv"], s.qkv_bias),
            *linear("layers.{i}.attn.out", f"{block}.self_attn.out_proj", s.out_bias),
            *norm("layers.{i}.mlp_norm", f"{block}.final_layer_norm", s),
            *linear("layers.{i}.mlp.up", f"{block}.fc1", s.mlp_bias),
            *linear("layers.{i}.mlp.down", f"{block}.fc2", s.mlp_bias),
        ]),
        *(norm("final_norm", "model.decoder.final_layer_norm", s) if s.final_norm else []),
        *([] if s.tie_embeddings else [Rule("lm_head.weight", ("lm_head.weight",))]),
    ]


register(Family("opt", to_spec, rules))
