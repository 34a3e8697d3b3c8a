"""Sentinel's core: Hugging Face causal LMs rebuilt as one gated transformer, exact against HF.

The names below are imported on first use (PEP 562), so `sentinel --help` and the errors module do not
pay for torch and transformers.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

# public name -> the submodule that defines it
_EXPORTS = {
    "AdaptiveCausalLM": "model", "AdaptiveSeq2SeqLM": "seq2seq", "Seq2SeqSpec": "spec", "CausalLMOutput": "decoder", "GatedDecoder": "decoder", "KVCache": "decoder",
    **{name: "errors" for name in ("SentinelError", "CheckpointError", "DeviceError", "DiskSpaceError", "DtypeError", "GateError",
                                   "GatedModelError", "InputError", "ModelNotFoundError", "PruneError",
                                   "RemoteCodeError", "UnsupportedConfigError", "UnsupportedModelError")},
    "FAMILIES": "families", "get_family": "families", "load_adaptive_model": "loader",
    "load_baseline_model": "loader", "resolve_checkpoint": "loader", "ResolvedCheckpoint": "loader",
    "DecoderSpec": "spec",
    "head_importance": "importance", "importance_prune_plan": "importance",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .decoder import CausalLMOutput, GatedDecoder, KVCache
    from .errors import (CheckpointError, DeviceError, DiskSpaceError, DtypeError, GatedModelError, GateError, InputError,
                         ModelNotFoundError, PruneError, RemoteCodeError, SentinelError, UnsupportedConfigError,
                         UnsupportedModelError)
    from .families import FAMILIES, get_family
    from .importance import head_importance, importance_prune_plan
    from .loader import ResolvedCheckpoint, load_adaptive_model, load_baseline_model, resolve_checkpoint
    from .model import AdaptiveCausalLM
    from .seq2seq import AdaptiveSeq2SeqLM
    from .spec import DecoderSpec, Seq2SeqSpec


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        # a submodule not imported yet: sentinel_core.loader, ...
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
