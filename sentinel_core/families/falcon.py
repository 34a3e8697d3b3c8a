"""Falcon: rotary or ALiBi, exact GELU, a fused query_key_value in one of three layouts, and three block forms.

- falcon-7b style (multi_query, parallel_attn): one K/V head, one LayerNorm feeding attention and
  MLP in parallel; fused rows are [all q heads | k | v].
- falcon-40b/180b style (new_decoder_architecture): grouped K/V, fused rows per K/V group
  [q heads of the group, k, v]; two LayerNorms (ln_attn, ln_mlp) or one (num_ln_in_parallel_attn=1).
- neither: multi-head, fused rows per head (q, k, v) like BLOOM; serial or parallel block.
All three are "per K/V group: the group's queries, its key, its value" with one or all heads per group.
Falcon-RW's ALiBi (alibi=True) matches HF's SDPA path, which adds the bias once, as the original
Falcon-RW code does: softmax((q·k + alibi) / sqrt(head_dim)), alibi = bf16(slope) · key position from the
mask, rounded to bf16. HF's eager path (transformers 5.24) adds it twice, in the attention and again
through the mask (measured: max |Δ log p| 1.1 between the two on a tiny random checkpoint), so the
reference for an ALiBi Falcon is HF loaded with attn_implementation="sdpa".
"""

import torch
from transformers.models.falcon.modeling_falcon import FalconRotaryEmbedding

from ..spec import DecoderSpec
from . import Family, Rule, layers, linear, norm, refuse, register, rotary_frequencies


def kv_groups(c) -> int:
    if c.new_decoder_architecture:
        return c.num_kv_heads
    return 1 if c.multi_query else c.num_attention_heads


def two_norms_in_parallel(c) -> bool:
    return c.new_decoder_architecture and (getattr(c, "num_ln_in_parallel_attn", None) or 2) == 2


def to_spec(c) -> DecoderSpec:
    if c.new_decoder_architecture:
        refuse(c, "parallel_attn", "HF's new decoder architecture is only defined with parallel attention",
               lambda v: not v)
    parallel = c.new_decoder_architecture or c.parallel_attn
    positions = dict(positions="alibi", falcon_alibi=True) if c.alibi else dict(
        positions="rotary", **rotary_frequencies(c, FalconRotaryEmbedding))
    return DecoderSpec(
        family="falcon",
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        num_layers=c.num_hidden_layers,
        num_heads=c.num_attention_heads,
        num_kv_heads=kv_groups(c),
        head_dim=c.hidden_size // c.num_attention_heads,
        intermediate_size=getattr(c, "ffn_hidden_size", None) or 4 * c.hidden_size,
        norm_eps=c.layer_norm_epsilon,
        **positions,
        qkv_bias=c.bias,
        out_bias=c.bias,
        parallel_residual=parallel,
        shared_norm=parallel and not two_norms_in_parallel(c),
        activation=c.activation,
        mlp_bias=c.bias,
        tie_embeddings=c.tie_word_embeddings,
    )


def grouped_qkv_to_blocks(num_kv_heads: int, group: int, head_dim: int):
    """Rows laid out per K/V group [q_0 .. q_{g-1}, k, v] -> all queries, then all keys, then all values."""

    def reorder(t: torch.Tensor) -> torch.Tensor:
        rest = t.shape[1:]
        t = t.reshape(num_kv_heads, group + 2, head_dim, *rest)
        q, k, v = t[:, :group], t[:, group], t[:, group + 1]
        return torch.cat([q.reshape(-1, *rest), k.reshape(-1, *rest), v.reshape(-1, *rest)])

    return reorder


def rules(s: DecoderSpec) -> list[Rule]:
    block = "transformer.h.{i}"
    # One rule covers the three layouts: multi-head is one query per group, multi-query one group.
    qkv = grouped_qkv_to_blocks(s.num_kv_heads, s.num_heads // s.num_kv_heads, s.head_dim)
    if s.shared_norm:
        norms = norm("layers.{i}.attn_norm", f"{block}.input_layernorm", s)
    elif s.parallel_residual:
        norms = [*norm("layers.{i}.attn_norm", f"{block}.ln_attn", s), *norm("layers.{i}.mlp_norm", f"{block}.ln_mlp", s)]
    else:
        norms = [*norm("layers.{i}.attn_norm", f"{block}.input_layernorm", s),
                 *norm("layers.{i}.mlp_norm", f"{block}.post_attention_layernorm", s)]
    return [
        Rule("embed.weight", ("transformer.word_embeddings.weight",)),
        *layers(s, [
            *norms,
            *linear("layers.{i}.attn.qkv", f"{block}.self_attention.query_key_value", s.qkv_bias, qkv, qkv),
            *linear("layers.{i}.attn.out", f"{block}.self_attention.dense", s.out_bias),
            *linear("layers.{i}.mlp.up", f"{block}.mlp.dense_h_to_4h", s.mlp_bias),
            *linear("layers.{i}.mlp.down", f"{block}.mlp.dense_4h_to_h", s.mlp_bias),
        ]),
        *norm("final_norm", "transformer.ln_f", s),
        *([] if s.tie_embeddings else [Rule("lm_head.weight", ("lm_head.weight",))]),
    ]


register(Family("falcon", to_spec, rules,
                reference_attention=lambda c: "sdpa" if getattr(c, "alibi", False) else "eager"))
