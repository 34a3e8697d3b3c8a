"""Which exceptions are the machine's fault (sentinel_matrix/faults.py): a row they stop is an `error`, never a verdict."""

import errno

import pytest
import torch

from sentinel_matrix.faults import environment_fault
from sentinel_core.errors import CheckpointError, DiskSpaceError, InputError, ModelNotFoundError


def _raised_from(outer: Exception, inner: Exception) -> Exception:
    try:
        try:
            raise inner
        except Exception as cause:
            raise outer from cause
    except Exception as exc:  # noqa: BLE001 - the chain is the point
        return exc


FAULTS = [
    (OSError(errno.ENOSPC, "No space left on device", "/cache/x"), "No space left on device (/cache/x)"),
    (OSError(errno.EFBIG, "File too large"), "File too large"),
    (PermissionError(errno.EACCES, "Permission denied", "/cache"), "Permission denied"),
    (OSError(errno.EROFS, "Read-only file system"), "Read-only file system"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/cache/synthetic"), "Not a directory"),
    (FileExistsError(errno.EEXIST, "File exists", "/cache"), "File exists"),
    (DiskSpaceError("needs 2.10 GB free in /cache, has 0.40 GB"), "disk: needs 2.10 GB"),
    (MemoryError(), "memory: MemoryError"),
    (RuntimeError("std::bad_alloc"), "memory: std::bad_alloc"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to "
                  "allocate 4096 bytes"), "memory: "),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), "device memory: CUDA out of memory"),
    (_raised_from(ModelNotFoundError("gpt-j-6b is not in the Hugging Face cache and the hub cannot be reached"),
                  ConnectionError("Max retries exceeded")), "network: ConnectionError"),
    (_raised_from(ModelNotFoundError("not cached"), type("ConnectError", (Exception,), {})("[Errno -3] DNS failure")),
     "network: ConnectError"),
    (_raised_from(CheckpointError("cannot write the checkpoint"), OSError(errno.ENOSPC, "No space left on device")),
     "No space left on device"),
]
VERDICTS = [AssertionError("max |Δ log p| 3e-2"), ValueError("bad head count"), InputError("ids must be integers"),
            OSError(errno.ENOENT, "No such file or directory"), RuntimeError("shape mismatch"),
            CheckpointError("missing tensor model.layers.0.mlp.up_proj.weight"),
            ModelNotFoundError("'x/y' is neither a local model folder nor a valid hub id: check the path")]


@pytest.mark.parametrize("exc, says", FAULTS, ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None)
def test_machine_faults_are_named(exc, says):
    assert says in (environment_fault(exc) or ""), environment_fault(exc)


@pytest.mark.parametrize("exc", VERDICTS, ids=lambda e: type(e).__name__)
def test_everything_else_stays_a_verdict(exc):
    assert environment_fault(exc) is None
