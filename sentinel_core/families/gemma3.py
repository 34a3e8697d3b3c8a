"""Gemma 3 text models (`gemma3_text`, Gemma3ForCausalLM: gemma-3-270m, gemma-3-1b).

Facts, checked against transformers 5.24's modeling_gemma3.py / configuration_gemma3.py (the ground truth):
- Layer kinds come from `layer_types` ("sliding_attention" / "full_attention"); configs that only carry
  `sliding_window_pattern` (Hub configs, 4.5x) get them as HF derives them: layer i slides unless
  (i + 1) % pattern == 0 (pattern 6: five sliding layers, then one full). A sliding layer's query sees
  the keys with key > query - sliding_window, as in Mistral.
- Two rotary sets. Full layers: the global base (rope_theta, 1e6) with its scaling (linear factor 8
  on the 4b/12b/27b text configs; none on 270m and 1b). Sliding layers: the local base
  (rope_local_base_freq, 1e4), never scaled. 5.x keeps both in rope_parameters["full_attention"] /
  ["sliding_attention"]; 4.x has rope_theta + rope_scaling and rope_local_base_freq, and its
  Gemma3TextModel builds the local rotary from a config copy with rope_scaling {"rope_type": "default"}.
  Both are read here through HF's own rotary code. `dynamic` and `longrope` are refused.
- Attention: q_proj/k_proj/v_proj/o_proj (bias with attention_bias), then q_norm and k_norm, RMSNorms over
  head_dim with Gemma's (1 + w) in fp32, one weight each shared by all heads, applied before rope.
  Scale query_pre_attn_scalar ** -0.5, not head_dim ** -0.5.
- attn_logit_softcapping is read into the attention module but never passed to the attention function
  (5.24, and 4.5x likewise): HF Gemma 3 does not soft-cap attention logits, so neither does this converter.
  final_logit_softcapping (None in released configs) is applied: cap · tanh(logits / cap).
- Block: x + post_attention_layernorm(attn(input_layernorm(x))), then
  h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h))): four (1 + w) RMSNorms per block.
- MLP: down(act(gate(x)) · up(x)) with config.hidden_activation (gelu_pytorch_tanh), no biases.
- Embeddings multiplied by sqrt(hidden_size), a fp32 buffer cast to the weights' dtype (55.4256 becomes
  55.5 in bf16 for hidden 3072); LM head tied to the embeddings by default; final norm `model.norm`.
- use_bidirectional_attention (EmbeddingGemma) is refused: the gated decoder is causal.
- `gemma3` (Gemma3ForConditionalGeneration: a text_config next to a SigLIP vision tower and a projector)
  is refused: its checkpoint holds vision parameters no rule could use, and its text stack lives under
  model.language_model. Its text-only twin is a gemma3_text checkpoint.
"""

import copy

from transformers.models.gemma3.modeling_gemma3 import Gemma3RotaryEmbedding

from ..spec import DecoderSpec
from . import Family, Rule, UnsupportedConfigError, fused, layers, linear, norm, refuse, register

LAYER_KINDS = ("sliding_attention", "full_attention")
GLOBAL_ROPE_TYPES = ("default", "linear", "llama3", "yarn")  # static frequencies: one set for every forward


def layer_types(c) -> list[str]:
    types = getattr(c, "layer_types", None)
    if types is None:  # older configs: every pattern-th layer is full
        pattern = getattr(c, "sliding_window_pattern", None) or getattr(c, "_sliding_window_pattern", None) or 6
        types = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(c.num_hidden_layers)]
    unknown = sorted(set(types) - set(LAYER_KINDS))
    if unknown:
        raise UnsupportedConfigError(f"gemma3_text: layer types {unknown} are not supported (only {LAYER_KINDS})")
    return list(types)


def _checked(kind: str, which: str, allowed: tuple[str, ...]) -> None:
    if kind not in allowed:
        raise UnsupportedConfigError(f"gemma3_text: rope type {kind!r} on the {which} layers is not supported by the "
                                     f"gated decoder (supported: {', '.join(allowed)})")


def rotary_sets(c) -> tuple[tuple, float, tuple, float]:
    """(global inv_freq, its attention scaling, local inv_freq, its scaling), from HF's own rotary code."""
    params = getattr(c, "rope_parameters", None)
    if isinstance(params, dict) and "full_attention" in params:  # transformers 5.x: one rope per layer kind
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        def frequencies(layer_type: str, allowed):
            kind = (params.get(layer_type) or {}).get("rope_type", "default")
            _checked(kind, layer_type, allowed)
            init = Gemma3RotaryEmbedding.compute_default_rope_parameters if kind == "default" else ROPE_INIT_FUNCTIONS[kind]
            return init(c, None, layer_type=layer_type)

        global_freq, global_scaling = frequencies("full_attention", GLOBAL_ROPE_TYPES)
        local_freq, local_scaling = frequencies("sliding_attention", GLOBAL_ROPE_TYPES)
    else:  # transformers 4.x: rope_theta (+ rope_scaling) global; the local copy as Gemma3TextModel makes it
        scaling = getattr(c, "rope_scaling", None) or {}
        _checked(scaling.get("rope_type", scaling.get("type", "default")), "full_attention", GLOBAL_ROPE_TYPES)
        rotary = Gemma3RotaryEmbedding(config=c)
        global_freq, global_scaling = rotary.inv_freq, rotary.attention_scaling
        local_config = copy.deepcopy(c)
        local_config.rope_theta = c.rope_local_base_freq
        local_config.rope_scaling = {"rope_type": "default"}
        local = Gemma3RotaryEmbedding(config=local_config)
        local_freq, local_scaling = local.inv_freq, local.attention_scaling
    return (tuple(global_freq.float().tolist()), float(global_scaling),
            tuple(local_freq.float().tolist()), float(local_scaling))


def to_spec(c) -> DecoderSpec:
    refuse(c, "use_bidirectional_attention", "embedding models attend both ways; the gated decoder is causal", bool)
    types = layer_types(c)
    sliding = tuple(t == "sliding_attention" for t in types)
    window = getattr(c, "sliding_window", None)
    if any(sliding) and not window:
        raise UnsupportedConfigError(f"gemma3_text: sliding layers with sliding_window={window!r} are not supported")
    global_freq, global_scaling, local_freq, local_scaling = rotary_sets(c)
    if local_scaling != 1.0:
        raise UnsupportedConfigError(f"gemma3_text: the sliding layers' rope scales cos/sin by {local_scaling}; "
                                     "the gated decoder rotates them unscaled")
    bias = bool(getattr(c, "attention_bias", False))
    return DecoderSpec(
        family="gemma3_text",
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        num_layers=c.num_hidden_layers,
        num_heads=c.num_attention_heads,
        num_kv_heads=c.num_key_value_heads,
        head_dim=c.head_dim,
        intermediate_size=c.intermediate_size,
        norm="rmsnorm",
        norm_eps=c.rms_norm_eps,
        norm_unit_offset=True,
        positions="rotary",
        rotary_inv_freq=global_freq,
        rotary_scaling=global_scaling,
        rotary_local_inv_freq=local_freq if any(sliding) else (),
        qkv_bias=bias,
        out_bias=bias,
        sliding_window=window if any(sliding) else None,
        sliding_layers=sliding if any(sliding) else (),
        attn_scale=c.query_pre_attn_scalar**-0.5,
        qk_norm=True,
        sandwich_norms=True,
        mlp="gated",
        activation=getattr(c, "hidden_activation", None) or c.hidden_act,
        mlp_bias=False,
        embed_scale=c.hidden_size**0.5,
        tie_embeddings=c.tie_word_embeddings,
        final_logit_softcap=getattr(c, "final_logit_softcapping", None),
    )


def rules(s: DecoderSpec) -> list[Rule]:
    block = "model.layers.{i}"
    return [
        Rule("embed.weight", ("model.embed_tokens.weight",)),
        *layers(s, [
            *norm("layers.{i}.attn_norm", f"{block}.input_layernorm", s),
            *fused("layers.{i}.attn.qkv", [f"{block}.self_attn.{p}_proj" for p in "qkv"], s.qkv_bias),
            *norm("layers.{i}.attn.q_norm", f"{block}.self_attn.q_norm", s),
            *norm("layers.{i}.attn.k_norm", f"{block}.self_attn.k_norm", s),
            *linear("layers.{i}.attn.out", f"{block}.self_attn.o_proj", s.out_bias),
            *norm("layers.{i}.attn_post_norm", f"{block}.post_attention_layernorm", s),
            *norm("layers.{i}.mlp_norm", f"{block}.pre_feedforward_layernorm", s),
            *fused("layers.{i}.mlp.up", [f"{block}.mlp.gate_proj", f"{block}.mlp.up_proj"], False),
            *linear("layers.{i}.mlp.down", f"{block}.mlp.down_proj", False),
            *norm("layers.{i}.mlp_post_norm", f"{block}.post_feedforward_layernorm", s),
        ]),
        *norm("final_norm", "model.norm", s),
        *([] if s.tie_embeddings else [Rule("lm_head.weight", ("lm_head.weight",))]),
    ]


def refuse_multimodal(c) -> DecoderSpec:
    raise UnsupportedConfigError(
        "gemma3: Gemma3ForConditionalGeneration (text_config plus a vision tower) is not supported; "
        "use a gemma3_text checkpoint (Gemma3ForCausalLM, e.g. google/gemma-3-1b-pt)")


register(Family("gemma3_text", to_spec, rules))
register(Family("gemma3", refuse_multimodal, lambda s: []))
