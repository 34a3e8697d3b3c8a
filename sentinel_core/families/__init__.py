"""Family registry: one module per Hugging Face `model_type`, each registering itself.

A family says how an HF config becomes a DecoderSpec (`to_spec`) and how HF parameter names map
onto the decoder's canonical names (`rules`). Adding a family is adding a file here and naming it in
`FAMILY_MODULES`. A family's file is imported the first time its model_type is asked for (as llama.cpp's
model map does), so running one family never runs another's code: a matrix row's evidence names only the
family files it used (sentinel_matrix/evidence.py).
"""

from __future__ import annotations

import importlib
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import UnsupportedConfigError, UnsupportedModelError
from ..names import ENCODER_DECODER_FAMILIES
from ..spec import DecoderSpec


@dataclass(frozen=True)
class Rule:
    """One canonical parameter, built from one or more HF parameters.

    "{i}" in a key is the layer index; "a|b" names a parameter that transformers versions call differently.
    """

    target: str
    sources: tuple[str, ...]
    combine: Callable[..., torch.Tensor] | None = None  # None: the single source as it is


@dataclass(frozen=True)
class Family:
    model_type: str
    to_spec: Callable[[object], DecoderSpec]
    rules: Callable[[DecoderSpec], list[Rule]]
    # HF's attention implementation the converted model equals (eager, unless HF's eager path is the odd one out).
    reference_attention: Callable[[object], str] = lambda config: "eager"


def reference_attention(config) -> str:
    """The attn_implementation of the HF model a conversion of `config` is held to (eager for the generic wrapper)."""
    family = FAMILIES[config.model_type] if config.model_type in FAMILIES else None
    return family.reference_attention(config) if family else "eager"


# model_type -> the module of this package that registers it.
FAMILY_MODULES = {"bloom": "bloom", "falcon": "falcon", "gemma": "gemma", "gemma3_text": "gemma3", "gemma3": "gemma3",
                  "gpt2": "gpt2", "gpt_neo": "gpt_neo", "gpt_neox": "gpt_neox", "gptj": "gptj", "llama": "llama",
                  "mistral": "mistral", "opt": "opt", "phi": "phi", "phi3": "phi3", "qwen2": "qwen2",
                  "stablelm": "stablelm",
                  # encoder-decoders (seq2seq.py): their to_spec gives a Seq2SeqSpec
                  **{family: family for family in ENCODER_DECODER_FAMILIES}}


class _Families(MutableMapping):
    """model_type -> Family, importing a family's module on first use. Setting an item replaces a family (tests,
    plugins that inject a conversion bug)."""

    def __init__(self):
        self._loaded: dict[str, Family] = {}

    def __getitem__(self, model_type: str) -> Family:
        if model_type not in self._loaded and model_type in FAMILY_MODULES:
            importlib.import_module(f"{__name__}.{FAMILY_MODULES[model_type]}")
        return self._loaded[model_type]

    def __setitem__(self, model_type: str, family: Family) -> None:
        self._loaded[model_type] = family

    def __delitem__(self, model_type: str) -> None:
        del self._loaded[model_type]

    def __contains__(self, model_type) -> bool:
        return model_type in FAMILY_MODULES or model_type in self._loaded

    def __iter__(self):
        return iter(sorted(set(FAMILY_MODULES) | set(self._loaded)))

    def __len__(self) -> int:
        return len(set(FAMILY_MODULES) | set(self._loaded))


FAMILIES = _Families()


def register(family: Family) -> Family:
    if family.model_type not in FAMILIES._loaded:  # a replacement set beforehand (a test's, a plugin's) stays
        FAMILIES[family.model_type] = family
    return family


def get_family(model_type: str) -> Family:
    if model_type not in FAMILIES:
        raise UnsupportedModelError(
            f"model_type {model_type!r} has no converter; supported families: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[model_type]


# Helpers the family files share -------------------------------------------------------------

def linear(target: str, source: str, bias: bool, weight_fn=None, bias_fn=None) -> list[Rule]:
    """Weight (and bias) rules for one linear layer."""
    rules = [Rule(f"{target}.weight", (f"{source}.weight",), weight_fn)]
    if bias:
        rules.append(Rule(f"{target}.bias", (f"{source}.bias",), bias_fn))
    return rules


def fused(target: str, sources: list[str], bias: bool) -> list[Rule]:
    """One canonical linear made of several HF linears stacked on the output dimension (q|k|v, gate|up)."""
    rules = [Rule(f"{target}.weight", tuple(f"{s}.weight" for s in sources), concat_rows)]
    if bias:
        rules.append(Rule(f"{target}.bias", tuple(f"{s}.bias" for s in sources), concat_rows))
    return rules


def norm(target: str, source: str, spec: DecoderSpec) -> list[Rule]:
    if not spec.norm_affine:
        return []
    rules = [Rule(f"{target}.weight", (f"{source}.weight",))]
    if spec.norm == "layernorm" and spec.norm_bias:
        rules.append(Rule(f"{target}.bias", (f"{source}.bias",)))
    return rules


def concat_rows(*tensors: torch.Tensor) -> torch.Tensor:
    return torch.cat(tensors, dim=0)


def transpose(t: torch.Tensor) -> torch.Tensor:
    return t.t()


def per_head_qkv_to_blocks(num_heads: int, head_dim: int):
    """A fused QKV laid out per head (q_h, k_h, v_h) -> all queries, then all keys, then all values."""

    def reorder(t: torch.Tensor) -> torch.Tensor:
        rest = t.shape[1:]
        return t.reshape(num_heads, 3, head_dim, *rest).transpose(0, 1).reshape(3 * num_heads * head_dim, *rest)

    return reorder


def layers(spec: DecoderSpec, rules: list[Rule]) -> list[Rule]:
    """Expand "{i}" in per-layer rules for every layer."""
    return [Rule(r.target.format(i=i), tuple(s.format(i=i) for s in r.sources), r.combine)
            for i in range(spec.num_layers) for r in rules]


SUPPORTED_ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn", "longrope")


def rope_type(config) -> str:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return params.get("rope_type", params.get("type", "default"))


def rotary_frequencies(config, rotary_cls) -> dict:
    """DecoderSpec's rotary fields, computed by transformers' own code whatever the scaling type.

    LongRoPE (Phi-3-128k, Phi-3.5, Phi-4-mini) has two frequency sets: HF uses the long one for a
    forward whose largest position is past original_max_position_embeddings. `dynamic` rope keeps its
    base, factor and max_position_embeddings: the decoder recomputes the frequencies per forward from its
    length, with HF's own formula (checked here against transformers' at twice that length).
    """
    kind = rope_type(config)
    if kind not in SUPPORTED_ROPE_TYPES:
        raise UnsupportedConfigError(
            f"rope scaling type {kind!r} is not supported by the gated decoder "
            f"(supported: {', '.join(SUPPORTED_ROPE_TYPES)})")
    rotary = rotary_cls(config)
    fields = {"rotary_inv_freq": tuple(rotary.inv_freq.float().tolist()),
              "rotary_scaling": float(rotary.attention_scaling)}
    if kind == "longrope":
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
        threshold = params.get("original_max_position_embeddings") or config.original_max_position_embeddings
        short, scaling = ROPE_INIT_FUNCTIONS["longrope"](config, "cpu")
        long, _ = ROPE_INIT_FUNCTIONS["longrope"](config, "cpu", seq_len=threshold + 1)
        fields.update(rotary_inv_freq=tuple(short.float().tolist()), rotary_scaling=float(scaling),
                      rotary_long_inv_freq=tuple(long.float().tolist()), rotary_long_after=int(threshold))
    if kind == "dynamic":
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        from ..decoder import dynamic_ntk_inv_freq

        params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
        fields.update(rotary_base=float(params.get("rope_theta") or config.rope_theta),
                      rotary_dynamic_factor=float(params["factor"]),
                      rotary_dynamic_after=int(config.max_position_embeddings))
        length = torch.tensor(2 * config.max_position_embeddings)
        theirs, _ = ROPE_INIT_FUNCTIONS["dynamic"](config, "cpu", seq_len=length)
        ours = dynamic_ntk_inv_freq(fields["rotary_base"], fields["rotary_dynamic_factor"],
                                    fields["rotary_dynamic_after"], 2 * len(fields["rotary_inv_freq"]), length)
        if not torch.equal(ours, theirs.float()):
            raise UnsupportedConfigError(f"{config.model_type}: rope type 'dynamic' with this config gives other "
                                         "frequencies in the gated decoder than in transformers")
    return fields


def refuse(config, flag: str, why: str, bad: Callable[[object], bool]) -> None:
    """Raise for a config flag the gated decoder does not implement, instead of ignoring it."""
    value = getattr(config, flag, None)
    if bad(value):
        raise UnsupportedConfigError(f"{config.model_type}: config flag {flag}={value!r} is not supported ({why})")

