"""T5 (v1.0, v1.1, flan-T5): relative position buckets in each stack's first layer, no score scaling, an RMS norm
without mean or bias, ReLU or gated-GELU feed-forward, and a tied head that rescales by d_model ** -0.5."""

from ..spec import Seq2SeqSpec
from . import Family, Rule, register


def to_spec(c) -> Seq2SeqSpec:
    # transformers 5 keeps the head's rescaling as scale_decoder_outputs; 4.x reads tie_word_embeddings.
    rescale = getattr(c, "scale_decoder_outputs", None)
    rescale = c.tie_word_embeddings if rescale is None else rescale
    return Seq2SeqSpec(
        family="t5", vocab_size=c.vocab_size, hidden_size=c.d_model, head_dim=c.d_kv,
        encoder_layers=c.num_layers, decoder_layers=c.num_decoder_layers,
        encoder_heads=c.num_heads, decoder_heads=c.num_heads, encoder_ffn=c.d_ff, decoder_ffn=c.d_ff,
        norm="rms", norm_eps=c.layer_norm_epsilon, pre_norm=True, activation=c.dense_act_fn,
        gated_mlp=c.is_gated_act, bias=False, positions="relative",
        relative_buckets=c.relative_attention_num_buckets, relative_max_distance=c.relative_attention_max_distance,
        final_norm=True, logits_scale=c.d_model ** -0.5 if rescale else 1.0,
        decoder_start_token_id=getattr(c, "decoder_start_token_id", None) or c.pad_token_id or 0,
    )


def attention(target: str, source: str) -> list[Rule]:
    return [Rule(f"{target}.{p}.weight", (f"{source}.{p}.weight",)) for p in "qkvo"]


def rules(s: Seq2SeqSpec) -> list[Rule]:
    mlp = ([("gate", "wi_0"), ("up", "wi_1")] if s.gated_mlp else [("up", "wi")]) + [("down", "wo")]
    out = [Rule("shared.weight", ("shared.weight",))]
    for stack, count in (("encoder", s.encoder_layers), ("decoder", s.decoder_layers)):
        out.append(Rule(f"{stack}.relative_bias.weight",
                        (f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",)))
        ff = 2 if stack == "decoder" else 1  # the decoder's feed-forward comes after its cross-attention
        for i in range(count):
            ours, theirs = f"{stack}.layers.{i}", f"{stack}.block.{i}.layer"
            out += attention(f"{ours}.self_attn", f"{theirs}.0.SelfAttention")
            out.append(Rule(f"{ours}.self_norm.weight", (f"{theirs}.0.layer_norm.weight",)))
            if stack == "decoder":
                out += attention(f"{ours}.cross_attn", f"{theirs}.1.EncDecAttention")
                out.append(Rule(f"{ours}.cross_norm.weight", (f"{theirs}.1.layer_norm.weight",)))
            out += [Rule(f"{ours}.mlp.{a}.weight", (f"{theirs}.{ff}.DenseReluDense.{b}.weight",)) for a, b in mlp]
            out.append(Rule(f"{ours}.mlp_norm.weight", (f"{theirs}.{ff}.layer_norm.weight",)))
        out.append(Rule(f"{stack}.final_norm.weight", (f"{stack}.final_layer_norm.weight",)))
    return out + ([] if s.tie_embeddings else [Rule("lm_head.weight", ("lm_head.weight",))])


register(Family("t5", to_spec, rules))
