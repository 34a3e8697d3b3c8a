"""The matrix's command-line options: their names, the values each accepts, and one check of them all.

Registered from the root conftest.py, so `pytest matrix/ ...` and a plain `pytest` both know them. A bad
value stops the run before collection (pytest's UsageError, exit 4) with the valid names: a typo must
never quietly select nothing, or run only the part that was spelled right.
"""

from __future__ import annotations

import difflib
import fnmatch
from pathlib import Path

import pytest

from sentinel_matrix import hf_cache, registry
from sentinel_matrix.records import DEFAULT_RESULTS
from sentinel_core.names import CUDA, DTYPE_ALIASES, FAMILY_ALIASES, FLOAT32, HALF_PRECISION
from sentinel_matrix.catalog import WEIGHT_SOURCES, family_architectures, load_catalog
from sentinel_matrix.records import unwritable

DEVICES = ("cpu", "cuda")
# `local` is a folder or a GGUF file named in --models; `default` is everything that runs offline
# in the time budget; `all` adds nothing today but says so explicitly.
WEIGHTS = (*WEIGHT_SOURCES, "local", "default", "all")
CUDA_DTYPES = (*HALF_PRECISION, FLOAT32)


def csv(value: str) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def add_options(parser) -> None:
    group = parser.getgroup("sentinel matrix")
    group.addoption("--families", default="",
                    help=f"comma-separated model_types to run ({','.join(sorted(family_architectures()))})")
    group.addoption("--models", default="",
                    help="comma-separated models: catalog ids or globs ('gpt2*'), a local folder, a .gguf file, "
                         "or any hub id; a model named exactly runs even when its entry is slow")
    group.addoption("--checks", default="", help=f"comma-separated checks: {','.join(registry.names())} "
                                                 f"(default: {','.join(registry.default_names())})")
    group.addoption("--devices", default="cpu", help=f"comma-separated devices: {','.join(DEVICES)}")
    group.addoption("--weights", default="default",
                    help=f"comma-separated weight sources: {','.join(WEIGHTS)}; default: everything that runs "
                         f"offline in the time budget (package + synthetic, hub rows where cached, local models named)")
    group.addoption("--slow", action="store_true", help="include catalog entries marked slow")
    group.addoption("--cuda-dtype", default="bfloat16", choices=list(CUDA_DTYPES),
                    help="dtype of CUDA rows (CPU rows are float32; CUDA float32 runs with TF32 off)")
    group.addoption("--bench-compiled", action="store_true",
                    help="bench on CUDA also times the torch.compile'd decode step (compiles once per batch size); "
                         "on CPU, HF's static-cache compiled baseline (CUDA always times it)")
    group.addoption("--results", default=str(DEFAULT_RESULTS),
                    help="JSONL file the rows are appended to (default: results/latest.jsonl of the checkout)")
    group.addoption("--results-fresh", action="store_true",
                    help="start --results afresh instead of appending (the newest record per row wins anyway)")
    group.addoption("--device-map", default=None, choices=["auto"],
                    help="place each model of the rows across the devices with accelerate (HF's device_map; layers "
                         "that fit nowhere go to the CPU): for models larger than one GPU; records the placement")
    hf_cache.add_options(group)


ALIASES = {"gpu": CUDA, **DTYPE_ALIASES, **FAMILY_ALIASES}  # what users type instead


def _unknown(option: str, name: str, valid) -> pytest.UsageError:
    key = name.lower()  # "GPT2" is gpt2: suggested, not guessed
    close = [key] if key in valid else [ALIASES[key]] if ALIASES.get(key) in valid else \
        difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return pytest.UsageError(f"{option}: unknown name {name!r}{hint}; valid names: {', '.join(valid)}")


def validate(config) -> None:
    """Every name in every list option is a known one; every glob in --models matches a catalog id."""
    known = (("--families", tuple(sorted(family_architectures()))), ("--checks", registry.names()), ("--devices", DEVICES),
             ("--weights", WEIGHTS))
    for option, valid in known:
        for name in csv(config.getoption(option)):
            if name not in valid:
                raise _unknown(option, name, valid)
    if CUDA in csv(config.getoption("--devices")) and not config.getoption("collectonly"):
        import torch

        if not torch.cuda.is_available():  # rows that cannot run are no evidence: refuse, do not record skips
            raise pytest.UsageError("--devices cuda: this machine has no CUDA device; run the CUDA rows on a machine "
                                    "with one, or leave cuda out")
    problem = unwritable(Path(config.getoption("--results")))
    if problem and not config.getoption("collectonly"):
        raise pytest.UsageError(f"--results: {problem}")
    config.stash[ADHOC_ENTRIES] = adhoc_entries(csv(config.getoption("--models")))


ADHOC_ENTRIES = pytest.StashKey[tuple]()


def adhoc_entries(models: list[str]) -> tuple:
    """The --models names that are no catalog id, slug or glob, resolved (a folder, a GGUF file, a hub id)."""
    from sentinel_matrix import adhoc

    catalog = load_catalog()
    ids = {name for entry in catalog for name in (entry.id, entry.slug)}
    entries = []
    for name in models:
        if is_glob(name):
            if not any(fnmatch.fnmatchcase(entry.id, name) for entry in catalog):
                raise pytest.UsageError(f"--models: no catalog id matches {name!r}; ids look like "
                                        f"{', '.join(e.id for e in catalog[:4])}, ... (see sentinel_matrix/catalog.toml)")
        elif name not in ids:
            entries.append(adhoc.resolve(name))
    return tuple(entries)
