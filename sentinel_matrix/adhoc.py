"""Models named in --models that no catalog entry names: a local folder, a GGUF file, or any hub id.

Each becomes an `AdhocEntry`, which the matrix treats like a catalog entry: its family is its config's
`model_type` (read at collection: a native converter, the generic wrapper, or a refusal recorded as the
row's failure), its weight source `local` or `hub`, and its records carry where it came from and a
fingerprint of the checkpoint, so two checkpoints under one path never merge in the report.
"""

from __future__ import annotations

import difflib

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from sentinel_matrix.catalog import CatalogEntry

UNKNOWN_FAMILY = "unknown"


@dataclass(frozen=True)
class AdhocEntry(CatalogEntry):
    location: str = ""  # the folder or file (absolute), or the hub id
    fingerprint: str = ""  # a hash of a local checkpoint's config and weight index, or the hub revision
    problem: str = ""  # why the checkpoint could not even be read at collection (the row fails saying so)

    @property
    def is_gguf(self) -> bool:
        return self.location.endswith(".gguf")

    @property
    def checkpoint(self) -> dict:
        """What the record names: the checkpoint's location and fingerprint."""
        return {"location": self.location, "fingerprint": self.fingerprint}


def looks_like_path(name: str) -> bool:
    """A hub id is `name` or `org/name`; anything else that names the file system is a path."""
    return (name.startswith((".", "/", "~")) or name.endswith(".gguf") or name.count("/") > 1
            or os.sep != "/" and os.sep in name)


def _local_family(path: Path) -> tuple[str, str]:
    """(model_type, problem): read from config.json, or from a GGUF's metadata through transformers."""
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            return UNKNOWN_FAMILY, f"{path} holds no config.json: pass a folder saved with save_pretrained"
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return UNKNOWN_FAMILY, f"{config} is not valid JSON ({exc}): re-save the checkpoint"
        model_type = data.get("model_type") if isinstance(data, dict) else None
        if not isinstance(model_type, str):
            return UNKNOWN_FAMILY, f"{config} names no model_type: re-save it with save_pretrained"
        return model_type, ""
    from sentinel_core.errors import SentinelError
    from sentinel_core.loader import load_config

    try:
        return load_config(str(path)).model_type, ""
    except (SentinelError, OSError, ValueError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return UNKNOWN_FAMILY, f"{path} cannot be read as a GGUF model ({first})"


def _closest_catalog_id(name: str) -> str:
    """ " (did you mean 'tiny/gpt2'?)" for the catalog ids closest to `name` (case aside), or ""."""
    from sentinel_matrix.catalog import load_catalog

    ids = {entry.id.lower(): entry.id for entry in load_catalog()}
    close = [ids[c] for c in difflib.get_close_matches(name.lower(), list(ids), n=3, cutoff=0.75)]
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


def _hub_family(hub_id: str) -> tuple[str, str]:
    """(model_type, revision) from the HF cache, or from the hub where it can be reached; unknown otherwise
    (the row then says why, when it is provisioned)."""
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(hub_id, "config.json")
    if not isinstance(cached, str):
        if constants.HF_HUB_OFFLINE:  # nothing here can tell a hub id from a typo: no row, one line
            raise pytest.UsageError(f"--models: {hub_id!r} is no catalog id, folder or file, and not in the Hugging Face "
                                    f"cache (HF_HUB_OFFLINE=1){_closest_catalog_id(hub_id)}; download it once where the "
                                    f"hub is reachable, or pass a local folder")
        from sentinel_core.errors import ModelNotFoundError
        from sentinel_core.loader import load_config

        try:
            return load_config(hub_id).model_type, ""
        except ModelNotFoundError as exc:  # no such repository, or not a valid id: a mistake, not a row
            raise pytest.UsageError(f"--models: {' '.join(str(exc).split())}{_closest_catalog_id(hub_id)}") from None
        except Exception:  # noqa: BLE001 - gated, or the network failed: the row is provisioned anyway and says why
            return UNKNOWN_FAMILY, ""
    try:
        model_type = json.loads(Path(cached).read_text(encoding="utf-8")).get("model_type", UNKNOWN_FAMILY)
    except (OSError, ValueError):
        model_type = UNKNOWN_FAMILY
    from sentinel_matrix import sources

    return model_type, sources.hub_revision(hub_id)


def resolve(name: str) -> AdhocEntry:
    """The entry for a --models name that is not a catalog id; a path that does not exist is a usage error."""
    if looks_like_path(name):
        path = Path(name).expanduser().resolve()
        if not path.exists():
            raise pytest.UsageError(f"--models: {name} is not a catalog id and no such folder or file exists")
        if path.is_file() and path.suffix != ".gguf":
            raise pytest.UsageError(f"--models: {name} is a file but not a .gguf; pass the folder that holds it")
        from sentinel_matrix import sources

        family, problem = _local_family(path)
        return AdhocEntry(id=str(path), family=family, size="", sources=("local",), config={}, location=str(path),
                          fingerprint=sources.fingerprint(path), problem=problem)
    family, revision = _hub_family(name)
    return AdhocEntry(id=name, family=family, size="", sources=("hub",), config={}, location=name,
                      fingerprint=revision)


def provision(entry: AdhocEntry):
    """(checkpoint folder or id, tokenizer or None): a GGUF is converted once into an fp32 HF folder in the cache."""
    if entry.problem:
        raise AdhocError(entry.problem)
    from sentinel_matrix import sources

    if entry.sources == ("hub",):
        folder = sources.hub_checkpoint(entry.location)
        return folder, sources.tokenizer_for(folder)
    path = Path(entry.location)
    if entry.is_gguf:
        path = sources.gguf_checkpoint(path)
    has_tokenizer = any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json",
                                                             "tokenizer.model", "vocab.json"))
    tokenizer = sources.tokenizer_for(path) if has_tokenizer else None
    if tokenizer is not None:
        from sentinel_core.loader import load_config

        vocab = load_config(str(path)).get_text_config().vocab_size
        if len(tokenizer) > vocab:
            raise AdhocError(f"{path}: its tokenizer has {len(tokenizer):,} tokens and the model's vocabulary "
                             f"{vocab:,}: save the tokenizer that was trained with this model into the folder")
    return str(path), tokenizer


class AdhocError(RuntimeError):
    """A named checkpoint that cannot be read; the message says why and what to do."""
