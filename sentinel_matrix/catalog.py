"""The catalog (sentinel_matrix/catalog.toml) as data: entries, their real configs, synthetic cuts."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from sentinel_matrix.evidence import entry_hash
from sentinel_core.names import WEIGHT_SOURCES

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

CATALOG_PATH = Path(__file__).with_name("catalog.toml")
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    family: str
    size: str
    sources: tuple[str, ...]
    config: dict = field(hash=False, compare=False)
    gated: bool = False
    synthetic_layers: int = 0
    slow: bool = False
    min_transformers: str = ""  # the transformers version below which the entry's rows skip, saying why
    min_transformers_why: str = ""
    table_hash: str = field(default="", compare=False)  # the entry's table as written (sentinel_matrix/evidence.py)

    @property
    def slug(self) -> str:
        """The id as it appears in test ids and file names: facebook/opt-350m -> facebook-opt-350m."""
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.id)

    @property
    def is_tiny(self) -> bool:
        return self.id.startswith("tiny/")

    @property
    def num_layers(self) -> int:
        return next(self.config[k] for k in LAYER_KEYS if k in self.config)

    def hf_config(self, layers: int | None = None):
        """The HF config of the real geometry; `layers` cuts the layer count (synthetic checkpoints)."""
        from transformers import AutoConfig

        values = dict(self.config)
        if layers:
            for key in LAYER_KEYS:
                if key in values:
                    values[key] = min(values[key], layers)
            if "attention_types" in values:  # GPT-Neo's per-layer kinds, [[kinds, repeats], ...]: keep the first ones
                kinds = [kind for group, repeats in values["attention_types"] for _ in range(repeats) for kind in group]
                values["attention_types"] = [[[kind], 1] for kind in kinds[:layers]]
        return AutoConfig.for_model(self.family, **values)

    def synthetic_config(self):
        return self.hf_config(self.synthetic_layers or None)

    @property
    def synthetic_is_cut(self) -> bool:
        return bool(self.synthetic_layers) and self.synthetic_layers < self.num_layers

    def size_in_params(self) -> float:
        number, unit = float(self.size[:-1]), self.size[-1]
        return number * {"M": 1e6, "B": 1e9}[unit]


@cache
def family_architectures(path: Path = CATALOG_PATH) -> dict[str, str]:
    """What each family's architecture is: native converters' [families], then the wrapper's families."""
    return {**native_family_architectures(path), **generic_wrapper_families(path)}


@cache
def native_family_architectures(path: Path = CATALOG_PATH) -> dict[str, str]:
    return dict(tomllib.loads(Path(path).read_text()).get("families", {}))


@cache
def generic_wrapper_families(path: Path = CATALOG_PATH) -> dict[str, str]:
    """Families with no native converter, run through the generic gated wrapper ([generic_wrapper_families])."""
    return dict(tomllib.loads(Path(path).read_text()).get("generic_wrapper_families", {}))


@cache
def load_catalog(path: Path = CATALOG_PATH) -> tuple[CatalogEntry, ...]:
    raw = tomllib.loads(Path(path).read_text())
    entries = []
    for item in raw["model"]:
        unknown = set(item["sources"]) - set(WEIGHT_SOURCES)
        if unknown:
            raise ValueError(f"{path}: {item['id']} lists unknown weight sources {sorted(unknown)}")
        entries.append(CatalogEntry(
            id=item["id"], family=item["family"], size=item["size"], sources=tuple(item["sources"]),
            config=item["config"], gated=item.get("gated", False),
            synthetic_layers=item.get("synthetic_layers", 0), slow=item.get("slow", False),
            min_transformers=str(item.get("min_transformers", "")), min_transformers_why=item.get("min_transformers_why", ""),
            table_hash=entry_hash(item)))
    ids = [e.id for e in entries]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{path}: duplicate ids")
    return tuple(entries)


def entry_hashes(path: Path = CATALOG_PATH) -> dict[str, str]:
    """Each catalog entry's id -> the hash of its table now: what a record's `catalog_entry` is compared with."""
    return {entry.id: entry.table_hash for entry in load_catalog(path)}


def count_parameters(config) -> int:
    """Parameters of the HF model for `config`, counted on the meta device (nothing allocated)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())
