"""BART: learned positions two rows into the table, post-LN blocks, `layernorm_embedding`, a final logits bias.
mBART and Marian (their own files) differ in where they normalise and how they place positions."""

import math

from ..errors import UnsupportedConfigError
from ..spec import Seq2SeqSpec
from . import Family, Rule, linear, register

BART_POSITION_OFFSET = 2


def bart_spec(c, *, pre_norm: bool, position_offset: int, embedding_norm: bool, final_norm: bool) -> Seq2SeqSpec:
    """The BART family's spec; the keyword arguments are what each member fixes."""
    if c.d_model % c.encoder_attention_heads or c.d_model // c.encoder_attention_heads != \
            c.d_model // c.decoder_attention_heads:
        raise UnsupportedConfigError(f"{c.model_type}: encoder and decoder heads of different widths "
                                     f"({c.encoder_attention_heads} and {c.decoder_attention_heads} heads of "
                                     f"d_model={c.d_model}) are not supported")
    if getattr(c, "share_encoder_decoder_embeddings", True) is False:
        raise UnsupportedConfigError(f"{c.model_type}: separate encoder and decoder embeddings "
                                     f"(share_encoder_decoder_embeddings=False) are not supported")
    head_dim = c.d_model // c.encoder_attention_heads
    return Seq2SeqSpec(
        family=c.model_type, vocab_size=c.vocab_size, hidden_size=c.d_model, head_dim=head_dim,
        encoder_layers=c.encoder_layers, decoder_layers=c.decoder_layers,
        encoder_heads=c.encoder_attention_heads, decoder_heads=c.decoder_attention_heads,
        encoder_ffn=c.encoder_ffn_dim, decoder_ffn=c.decoder_ffn_dim, norm="layernorm", norm_eps=1e-5,
        pre_norm=pre_norm, activation=c.activation_function, gated_mlp=False, bias=True, positions="table",
        max_positions=c.max_position_embeddings, position_offset=position_offset, score_scale=head_dim ** -0.5,
        embed_scale=math.sqrt(c.d_model) if c.scale_embedding else 1.0, embedding_norm=embedding_norm,
        final_norm=final_norm, final_logits_bias=True,
        # mBART names none: HF's generate then starts from bos
        decoder_start_token_id=c.decoder_start_token_id if c.decoder_start_token_id is not None else c.bos_token_id,
    )


def norm(target: str, source: str) -> list[Rule]:
    return [Rule(f"{target}.weight", (f"{source}.weight",)), Rule(f"{target}.bias", (f"{source}.bias",))]


def attention(target: str, source: str) -> list[Rule]:
    return [rule for ours, theirs in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "out_proj"))
            for rule in linear(f"{target}.{ours}", f"{source}.{theirs}", bias=True)]


def bart_rules(s: Seq2SeqSpec) -> list[Rule]:
    out = [Rule("shared.weight", ("model.shared.weight",))]
    for stack, count in (("encoder", s.encoder_layers), ("decoder", s.decoder_layers)):
        theirs = f"model.{stack}"
        out.append(Rule(f"{stack}.pos.weight", (f"{theirs}.embed_positions.weight",)))
        if s.embedding_norm:
            out += norm(f"{stack}.embed_norm", f"{theirs}.layernorm_embedding")
        for i in range(count):
            ours, layer = f"{stack}.layers.{i}", f"{theirs}.layers.{i}"
            out += attention(f"{ours}.self_attn", f"{layer}.self_attn") + norm(f"{ours}.self_norm",
                                                                              f"{layer}.self_attn_layer_norm")
            if stack == "decoder":
                out += attention(f"{ours}.cross_attn", f"{layer}.encoder_attn") + norm(
                    f"{ours}.cross_norm", f"{layer}.encoder_attn_layer_norm")
            out += linear(f"{ours}.mlp.up", f"{layer}.fc1", bias=True) + linear(f"{ours}.mlp.down", f"{layer}.fc2",
                                                                                bias=True)
            out += norm(f"{ours}.mlp_norm", f"{layer}.final_layer_norm")
        if s.final_norm:
            out += norm(f"{stack}.final_norm", f"{theirs}.layer_norm")
    return out + ([] if s.tie_embeddings else [Rule("lm_head.weight", ("lm_head.weight",))])


def to_spec(c) -> Seq2SeqSpec:
    return bart_spec(c, pre_norm=False, position_offset=BART_POSITION_OFFSET, embedding_norm=True, final_norm=False)


register(Family("bart", to_spec, bart_rules))
