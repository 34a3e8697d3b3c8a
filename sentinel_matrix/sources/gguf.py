"""Any GGUF file as an HF checkpoint folder: dequantised once into fp32 (its values kept exactly) under the cache."""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from pathlib import Path

from .cache import _checkpoint_complete, _remove_stale_partials, cache_dir, fingerprint


def missing_modules() -> list[str]:
    return [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]


def gguf_folder(gguf: Path) -> Path:
    """Where a GGUF's fp32 HF folder lives in the cache: one per distinct file, whatever its path."""
    return cache_dir() / "gguf-fp32" / f"{Path(gguf).stem.lower()}-{fingerprint(Path(gguf))}-tf{transformers_major()}"


def gguf_checkpoint(gguf: Path, verbose: bool = False) -> Path:
    """An HF checkpoint folder (fp32, so the dequantised values are kept exactly) converted once from a GGUF.

    Later loads take seconds instead of the dequantisation's tens of seconds. The conversion writes a
    private ``.partial`` folder and renames it into place, so an interrupted run leaves nothing half-written.
    """
    target = gguf_folder(gguf)
    if _checkpoint_complete(target):
        return target
    if target.exists():  # damaged (a truncated file): converted again
        shutil.rmtree(target)
    missing = missing_modules()
    if missing:
        raise RuntimeError(f"reading a GGUF needs {', '.join(missing)}: run `pip install {' '.join(missing)}`")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target.parent, target.name)
    partial = target.parent / f"{target.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        try:
            gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except Exception as exc:  # noqa: BLE001 - re-raised with the fix named
            raise RuntimeError(f"could not read {gguf} ({type(exc).__name__}: {exc}); the file is corrupt or its "
                               f"architecture is not one transformers' GGUF loader reads") from exc
        # save_pretrained refuses the GGUF-loaded model ("not serializable"): rebuild a plain one.
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict(), strict=True)
        model.generation_config = gguf_model.generation_config
        del gguf_model
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        try:
            partial.rename(target)
        except OSError:
            if not _checkpoint_complete(target):  # another process won the race: keep theirs
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    if verbose:
        print(f"converted {gguf.name} into {target} in {time.perf_counter() - start:.1f} s")
    return target


def transformers_major() -> str:
    import transformers

    # Per transformers major version: 4.x cannot read a tokenizer saved by 5.x, and reads GGUF differently.
    return transformers.__version__.split(".")[0]
