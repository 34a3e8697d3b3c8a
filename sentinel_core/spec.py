"""The architecture as data.

A `DecoderSpec` says everything the gated decoder needs to know about a model: which norm, which
positions, which MLP, which residual layout, which biases; a `Seq2SeqSpec` the same for the gated
encoder-decoder (seq2seq.py). Family converters
(`sentinel_core/families/`) turn a Hugging Face config into a spec; the decoder never asks which
family it is running.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass


@dataclass(frozen=True)
class DecoderSpec:
    family: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int

    # Norms: "layernorm" (torch LayerNorm) or "rmsnorm" (Llama's, computed in fp32).
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    norm_affine: bool = True  # OPT can have LayerNorms without weight and bias
    norm_bias: bool = True
    norm_unit_offset: bool = False  # Gemma's RMSNorm scales by (1 + weight), in fp32

    # Positions: "learned" (absolute table), "rotary" or "alibi".
    positions: str = "learned"
    max_positions: int = 0
    learned_position_offset: int = 0  # OPT stores two extra rows before position 0
    positions_from_mask: bool = False  # OPT: position = cumsum(mask) - 1 when none are given
    # ALiBi as Falcon-RW computes it (HF's SDPA path): slope · key position rounded through bf16, divided by
    # sqrt(head_dim), masked keys exactly finfo.min. False: BLOOM's, in fp32 and added to the mask.
    falcon_alibi: bool = False
    rotary_inv_freq: tuple[float, ...] = ()  # from transformers' own rope code, any scaling type
    rotary_scaling: float = 1.0  # multiplies cos and sin (yarn's attention factor)
    rotary_interleaved: bool = False  # GPT-J rotates pairs (0,1), (2,3)... instead of the two halves
    rotary_long_inv_freq: tuple[float, ...] = ()  # LongRoPE: used by a forward whose largest position ...
    rotary_long_after: int = 0  # ... is at least this (original_max_position_embeddings)
    # Phi-3's generate: when the sequence (padding included) first reaches this length, the KV cache is
    # dropped and the whole sequence runs again, so LongRoPE's long factors reach every key. 0: never.
    rerun_at_length: int = 0
    # Dynamic NTK rope: a forward whose length L (largest position + 1) is past rotary_dynamic_after
    # (config.max_position_embeddings) rotates with base · (factor · L / after - (factor - 1)) ^ (d / (d - 2))
    # instead of rotary_inv_freq's base, recomputed per forward as HF does. Factor 0: not dynamic.
    rotary_base: float = 0.0
    rotary_dynamic_factor: float = 0.0
    rotary_dynamic_after: int = 0

    # Attention.
    qkv_bias: bool = True
    out_bias: bool = True
    sliding_window: int | None = None  # a query sees at most this many keys (itself included) ...
    sliding_layers: tuple[bool, ...] = ()  # ... in the layers flagged here (Mistral: all; Qwen2: per layer_types)
    # Gemma 3: the sliding layers rotate with their own (local base, unscaled) frequencies; the others with
    # rotary_inv_freq and its scaling. Empty: every layer rotates with rotary_inv_freq.
    rotary_local_inv_freq: tuple[float, ...] = ()
    qk_norm: bool = False  # Gemma 3: each head's query and key normalised over head_dim (one weight each) before rope
    attn_scale: float | None = None  # None: head_dim ** -0.5
    scale_by_inverse_layer_idx: bool = False  # GPT-2: an extra 1 / (layer + 1)

    # Block layout.
    pre_norm: bool = True  # False: post-LN (x = LN(x + f(x)), opt-350m)
    parallel_residual: bool = False  # x + attn(ln1(x)) + mlp(ln2(x)) (GPT-NeoX)
    shared_norm: bool = False  # parallel blocks with one norm: x + attn(ln(x)) + mlp(ln(x)) (StableLM)
    # The order a parallel block sums its three terms in, as HF writes it (float addition does not
    # associate): "x+attn+mlp" StableLM, "attn+mlp+x" Phi and GPT-J, "mlp+attn+x" GPT-NeoX and Falcon.
    parallel_sum: str = "mlp+attn+x"
    residual_from_norm: bool = False  # BLOOM's apply_residual_connection_post_layernorm
    sandwich_norms: bool = False  # Gemma 3: attention and MLP outputs each normalised again before the residual add

    # MLP: "dense" is down(act(up(x))), "gated" is down(act(gate(x)) * up(x)).
    mlp: str = "dense"
    activation: str = "gelu_new"
    mlp_bias: bool = True

    # Embeddings and head.
    word_embed_dim: int = 0  # 0: hidden_size; OPT-350m projects 512 -> 1024 and back
    embed_norm: bool = False  # BLOOM's word_embeddings_layernorm
    embed_scale: float = 1.0  # Gemma multiplies embeddings by sqrt(hidden_size), cast to the activations' dtype
    final_norm: bool = True
    tie_embeddings: bool = True
    lm_head_bias: bool = False  # GPT-J, Phi
    final_logit_softcap: float | None = None  # logits = cap · tanh(logits / cap) (Gemma 3's final_logit_softcapping)

    # The row blocks of the fused q|k|v and gate|up matrices that HF multiplies as separate linears (empty:
    # HF's matrix is fused too). Read from the family's rules, not written by hand (convert.spec_for).
    hf_separate_qkv: bool = False
    hf_separate_gate_up: bool = False

    def __post_init__(self):
        _check_field_types(self)
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                     "intermediate_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"spec.{name}={getattr(self, name)}; it must be at least 1")
        if self.sliding_layers and len(self.sliding_layers) != self.num_layers:
            raise ValueError(f"sliding_layers has {len(self.sliding_layers)} entries for {self.num_layers} layers")
        if self.rotary_local_inv_freq and len(self.rotary_local_inv_freq) != len(self.rotary_inv_freq):
            raise ValueError("rotary_local_inv_freq and rotary_inv_freq must rotate the same dimensions")
        if self.sandwich_norms and (not self.pre_norm or self.parallel_residual):
            raise ValueError("sandwich_norms is defined for serial pre-norm blocks only")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        for name, value, allowed in (
            ("norm", self.norm, ("layernorm", "rmsnorm")),
            ("positions", self.positions, ("learned", "rotary", "alibi")),
            ("mlp", self.mlp, ("dense", "gated")),
            ("parallel_sum", self.parallel_sum, ("x+attn+mlp", "attn+mlp+x", "mlp+attn+x")),
        ):
            if value not in allowed:
                raise ValueError(f"spec.{name}={value!r}; expected one of {allowed}")

    @property
    def embed_dim(self) -> int:
        return self.word_embed_dim or self.hidden_size

    @property
    def rotary_dim(self) -> int:
        return 2 * len(self.rotary_inv_freq)

    @property
    def scale(self) -> float:
        return self.head_dim**-0.5 if self.attn_scale is None else self.attn_scale


def _is(value, kind) -> bool:
    """Whether `value` fits the annotation `kind` (str, bool, int, float, X | None, tuple[X, ...])."""
    origin = typing.get_origin(kind)
    if origin is tuple:
        return isinstance(value, tuple) and all(_is(item, typing.get_args(kind)[0]) for item in value)
    if origin is not None:  # X | None
        return any(_is(value, option) for option in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if kind is float:  # an int is a float here (a config's eps of 1); a bool is not
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


KINDS = ("encoder", "decoder", "cross")  # an encoder-decoder's three attentions, as gates and plans name them


@dataclass(frozen=True)
class Seq2SeqSpec:
    family: str
    vocab_size: int
    hidden_size: int
    head_dim: int
    encoder_layers: int
    decoder_layers: int
    encoder_heads: int
    decoder_heads: int  # decoder self-attention and cross-attention alike
    encoder_ffn: int
    decoder_ffn: int
    norm: str  # "rms" (T5: no mean, no bias, variance in fp32) or "layernorm"
    norm_eps: float
    pre_norm: bool  # T5, mBART; BART and Marian normalise after each residual add
    activation: str
    gated_mlp: bool  # T5 v1.1 / flan-T5: act(wi_0 x) * wi_1 x
    bias: bool  # attention and MLP biases (the BART family)
    positions: str  # "relative" (T5's buckets) or "table" (BART's learned rows, Marian's fixed sinusoids)
    max_positions: int = 0
    position_offset: int = 0  # BART's learned table starts 2 rows in
    relative_buckets: int = 0
    relative_max_distance: int = 0
    score_scale: float = 1.0  # T5 scales no scores; the BART family by head_dim ** -0.5
    embed_scale: float = 1.0  # sqrt(D) where scale_embedding is set
    embedding_norm: bool = False  # BART and mBART's layernorm_embedding, per stack
    final_norm: bool = False  # T5 and mBART: one norm after each stack
    tie_embeddings: bool = True
    logits_scale: float = 1.0  # T5 with a tied head: D ** -0.5 before the head
    final_logits_bias: bool = False
    decoder_start_token_id: int = 0
    architecture: str = dataclasses.field(default="seq2seq", init=False)

    def __post_init__(self):
        _check_field_types(self)
        for name in ("vocab_size", "hidden_size", "head_dim", "encoder_layers", "decoder_layers", "encoder_heads",
                     "decoder_heads", "encoder_ffn", "decoder_ffn"):
            if getattr(self, name) < 1:
                raise ValueError(f"spec.{name}={getattr(self, name)}; it must be at least 1")

    def heads(self, kind: str) -> int:
        return self.encoder_heads if kind == "encoder" else self.decoder_heads

    def layers(self, kind: str) -> int:
        return self.encoder_layers if kind == "encoder" else self.decoder_layers


def _check_field_types(spec) -> None:
    # A spec read from a hand-edited manifest ("max_positions": "x") would otherwise fail deep inside the
    # decoder, or compare wrongly and run.
    hints = typing.get_type_hints(type(spec))
    for field in dataclasses.fields(spec):
        value = getattr(spec, field.name)
        if not _is(value, hints[field.name]):
            raise TypeError(f"spec.{field.name}={value!r} is a {type(value).__name__}; expected {hints[field.name]}")
