"""Sentinel's core: Hugging Face causal LMs rebuilt as one gated transformer, exact against HF."""

from .decoder import CausalLMOutput, GatedDecoder, KVCache
from .errors import (CheckpointError, GatedModelError, ModelNotFoundError, SentinelError, UnsupportedConfigError,
                     UnsupportedModelError)
from .families import FAMILIES, get_family
from .loader import load_adaptive_model, load_baseline_model
from .model import AdaptiveCausalLM
from .spec import DecoderSpec

__all__ = [
    "AdaptiveCausalLM", "CausalLMOutput", "CheckpointError", "DecoderSpec", "FAMILIES", "GatedDecoder",
    "GatedModelError", "KVCache", "ModelNotFoundError", "SentinelError", "UnsupportedConfigError",
    "UnsupportedModelError", "get_family", "load_adaptive_model", "load_baseline_model",
]
