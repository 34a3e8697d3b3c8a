"""Text the checks read: real English Wikipedia prose checked in under sentinel_matrix/data (its README gives the source,
the licence and how to regenerate it), and the perplexity text."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
WIKIPEDIA_FILE = DATA_DIR / "enwiki_sample.txt"


def wikipedia_text() -> str:
    """About 30,000 words of clean English Wikipedia prose (CC BY-SA 3.0, Wikipedia contributors)."""
    if not WIKIPEDIA_FILE.is_file():
        raise FileNotFoundError(f"{WIKIPEDIA_FILE} is missing: regenerate it with "
                                f"`python sentinel_matrix/data/make_wikipedia_text.py`")
    return WIKIPEDIA_FILE.read_text(encoding="utf-8")


def perplexity_text() -> tuple[str, str]:
    """(name, text) for perplexity: WikiText-2 (test split) where `datasets` and the hub are at hand,
    else the Wikipedia sample shipped in sentinel_matrix/data."""
    from huggingface_hub import constants

    if importlib.util.find_spec("datasets") is not None and not constants.HF_HUB_OFFLINE:
        try:
            import datasets

            rows = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split="test")["text"]
            return "wikitext-2-raw-v1 test", "".join(rows)
        except Exception:  # noqa: BLE001 - no hub, no cache: the shipped sample is the fallback
            pass
    return "enwiki sample (sentinel_matrix/data)", wikipedia_text()
