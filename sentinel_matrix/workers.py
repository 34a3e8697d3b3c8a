"""Many GPUs, one worker each: `pytest matrix/ --devices cuda -n N` (pytest-xdist) gives worker gwK the GPU
K mod (GPUs on the host) as its current device, so every row it runs puts its "cuda" tensors there, and keeps a
model's rows on one worker (the `xdist_group` mark conftest.py gives each model, scheduled with --dist loadgroup,
which is made the default here). With one GPU every worker shares it; records name the GPU of each row
(records.environment: gpu_index, gpu_count)."""

from __future__ import annotations


def worker_gpu(worker_id: str | None, device_count: int) -> int | None:
    """The GPU index of xdist worker `worker_id` ("gw3"); None in a run without workers or without GPUs."""
    if not device_count or not worker_id or not worker_id.startswith("gw"):
        return None
    return int(worker_id[2:]) % device_count


def configure(config) -> int | None:
    """Pin this worker to its GPU, and schedule a model's rows together; returns the GPU index it took."""
    if getattr(config.option, "dist", "no") == "load":  # xdist's default with -n: rows of one model would scatter
        config.option.dist = "loadgroup"
    worker = getattr(config, "workerinput", {}).get("workerid")
    if worker is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    index = worker_gpu(worker, torch.cuda.device_count())
    if index is not None:
        torch.cuda.set_device(index)
    return index
