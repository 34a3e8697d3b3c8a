import os
import sys
from pathlib import Path

# Tests never reach the hub: fail in seconds instead of hanging ~50 s per lookup.
os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402
import torch  # noqa: E402

from variants import variants  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def synthetic_folders(tmp_path_factory):
    """One randomised HF checkpoint per variant, saved with save_pretrained, made on first use."""
    from sentinel_core.synthetic import make_synthetic_checkpoint

    made = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = make_synthetic_checkpoint(variants()[name], tmp_path_factory.mktemp(name), seed=1234)
        return made[name]

    return get


@pytest.fixture(scope="session")
def left_padded_batch():
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(3, 500, (3, 13), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    mask[2, :8] = 0
    ids = ids.masked_fill(mask == 0, 0)  # pad id 0 where masked
    return ids, mask
