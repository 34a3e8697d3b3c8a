"""The compatibility matrix's command-line options, for every pytest run from the repository root
(sentinel_matrix/plugin.py; `sentinel check` loads the same plugin with -p)."""

import os

import torch

# Without a GPU, Triton's kernels (sentinel_core/triton_kernels.py) run in its interpreter: Triton reads this when it
# is first imported, which transformers does, so it is set before anything imports either.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest_plugins = ["sentinel_matrix.plugin"]
