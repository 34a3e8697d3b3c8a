"""GPT-J: one LayerNorm feeding attention and MLP in parallel, interleaved rotary on the first
rotary_dim dims, no attention biases, and an LM head with a bias."""

import torch

from ..spec import DecoderSpec
from . import Family, Rule, fused, layers, linear, norm, refuse, register

GPTJ_ROPE_BASE = 10000


def rotary_frequencies(dim: int) -> tuple[float, ...]:
    # transformers' create_sinusoidal_positions, expression for expression (int64 arange, fp32 result)
    inv_freq = 1.0 / (GPTJ_ROPE_BASE ** (torch.arange(0, dim, 2, dtype=torch.int64) / dim))
    return tuple(inv_freq.float().tolist())


def to_spec(c) -> DecoderSpec:
    refuse(c, "rotary_dim", "GPT-J without rotary_dim rotates whole hidden states; not implemented",
           lambda v: v is None)
    return DecoderSpec(
        family="gptj",
        vocab_size=c.vocab_size,
        hidden_size=c.n_embd,
        num_layers=c.n_layer,
        num_heads=c.n_head,
        num_kv_heads=c.n_head,
        head_dim=c.n_embd // c.n_head,
        intermediate_size=c.n_inner or 4 * c.n_embd,
        norm_eps=c.layer_norm_epsilon,
        positions="rotary",
        rotary_inv_freq=rotary_frequencies(c.rotary_dim),
        rotary_interleaved=True,
        qkv_bias=False,
        out_bias=False,
        parallel_residual=True,
        shared_norm=True,
        parallel_sum="attn+mlp+x",
        activation=c.activation_function,
        tie_embeddings=c.tie_word_embeddings,
        lm_head_bias=True,
    )


def rules(s: DecoderSpec) -> list[Rule]:
    block = "transformer.h.{i}"
    return [
        Rule("embed.weight", ("transformer.wte.weight",)),
        *layers(s, [
            *norm("layers.{i}.attn_norm", f"{block}.ln_1", s),
            *fused("layers.{i}.attn.qkv", [f"{block}.attn.{p}_proj" for p in "qkv"], False),
            *linear("layers.{i}.attn.out", f"{block}.attn.out_proj", False),
            *linear("layers.{i}.mlp.up", f"{block}.mlp.fc_in", True),
            *linear("layers.{i}.mlp.down", f"{block}.mlp.fc_out", True),
        ]),
        *norm("final_norm", "transformer.ln_f", s),
        *([] if s.tie_embeddings else [Rule("lm_head.weight", ("lm_head.weight",))]),
        Rule("lm_head.bias", ("lm_head.bias",)),
    ]


register(Family("gptj", to_spec, rules))
