"""One GPU per xdist worker (sentinel_matrix/workers.py), with the GPU count faked: distinct GPUs while there are
enough, shared round-robin beyond, nothing pinned without workers or GPUs, and a model's rows kept together."""

from types import SimpleNamespace

import pytest
import torch

from sentinel_matrix import records, workers


@pytest.mark.parametrize("count, expected", [(4, [0, 1, 2, 3]), (2, [0, 1, 0, 1]), (1, [0, 0, 0, 0]),
                                             (0, [None] * 4)])
def test_workers_get_distinct_gpus_while_there_are_enough(count, expected):
    assert [workers.worker_gpu(f"gw{k}", count) for k in range(4)] == expected
    assert workers.worker_gpu(None, count) is None


@pytest.fixture
def fake_gpus(monkeypatch):
    pinned = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", pinned.append)
    return pinned


def config(worker=None, dist="load"):
    c = SimpleNamespace(option=SimpleNamespace(dist=dist))
    if worker:
        c.workerinput = {"workerid": worker}
    return c


def test_each_worker_pins_its_own_gpu_and_the_controller_none(fake_gpus):
    assert [workers.configure(config(f"gw{k}")) for k in range(6)] == [0, 1, 2, 3, 0, 1]
    assert fake_gpus == [0, 1, 2, 3, 0, 1]
    assert workers.configure(config()) is None and len(fake_gpus) == 6


def test_rows_of_one_model_are_scheduled_together():
    c = config()
    workers.configure(c)
    assert c.option.dist == "loadgroup"
    c = config(dist="no")
    workers.configure(c)
    assert c.option.dist == "no"  # no workers asked for: nothing to schedule


def test_a_cuda_record_names_its_gpu(fake_gpus, monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: f"GPU {index}")
    env = records.environment("cuda")
    assert env["gpu_index"] == 3 and env["gpu_count"] == 4 and env["device_name"] == "GPU 3"
    assert "gpu_index" not in records.environment("cpu")
    from sentinel_reports.load import _problem  # the page reads such a record back

    record = {"family": "llama", "model": "tiny/llama", "weights": "synthetic", "check": "load", "device": "cuda",
              "dtype": "bfloat16", "outcome": "passed", "time": records.now(), "reason": "", "metrics": {}, "env": env}
    assert _problem(record) is None
