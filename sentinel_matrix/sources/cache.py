"""Sentinel's own cache folder, the fingerprint that tells checkpoints apart, and the bookkeeping of folders
written in place (a `.partial-<pid>` folder renamed when complete; one whose process is gone is removed)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def cache_dir() -> Path:
    """``$SENTINEL_CACHE``, else ``~/.cache/sentinel``; read at call time."""
    return Path(os.environ.get("SENTINEL_CACHE") or Path.home() / ".cache" / "sentinel").expanduser()



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
