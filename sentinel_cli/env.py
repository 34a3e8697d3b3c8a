"""`sentinel env`: what a bug report needs, as plain "key: value" lines (like `transformers env`)."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from .common import parse, version

HELP = "print versions, devices and cache paths (for bug reports)"
PACKAGES = ("torch", "transformers", "huggingface_hub", "accelerate", "gguf", "safetensors")


def package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version(name)
    except PackageNotFoundError:
        return "not installed"


def folder_size(path: Path) -> str:
    if not path.is_dir():
        return "missing"
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return f"{total / 2**30:.2f} GiB" if total >= 2**30 else f"{total / 2**20:.1f} MiB"


def cuda_lines() -> list[tuple[str, str]]:
    try:
        import torch
    except ImportError:
        return [("CUDA devices", "none (torch not installed)")]
    lines = [("torch CUDA version", str(torch.version.cuda))]
    if not torch.cuda.is_available():
        return [("CUDA devices", "none"), *lines]
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        lines.append((f"CUDA device {i}", f"{props.name}, {props.total_memory / 2**30:.1f} GiB"))
    return [("CUDA devices", str(torch.cuda.device_count())), *lines]


def environment() -> list[tuple[str, str]]:
    from huggingface_hub import constants

    from sentinel_matrix.sources import cache_dir

    sentinel_cache = cache_dir()
    return [
        ("sentinel", version()),
        ("python", platform.python_version()),
        *((name, package_version(name)) for name in PACKAGES),
        ("platform", platform.platform()),
        ("CPU count", str(os.cpu_count())),
        *cuda_lines(),
        ("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "not set")),
        ("HF cache", str(constants.HF_HUB_CACHE)),
        ("Sentinel cache", f"{sentinel_cache} ({folder_size(sentinel_cache)})"),
        ("HF_TOKEN set", "yes" if os.environ.get("HF_TOKEN") else "no"),  # never the token itself
    ]


def main(argv=None) -> int:
    import argparse

    args = parse(argparse.ArgumentParser(prog="sentinel env", description=__doc__), argv)
    if isinstance(args, int):
        return args
    for key, value in environment():
        print(f"{key}: {value}")
    sys.stdout.flush()
    return 0
