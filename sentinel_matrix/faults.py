"""Which exceptions are the machine's fault, not the model's: a row they stop is recorded with the `error`
outcome, which is never a pass or a failure (reports list it under "runs that could not finish").

The exception itself and every exception it was raised from or while handling are asked, so a loader's
one-line CheckpointError raised from a full disk is still a disk fault."""

from __future__ import annotations

import errno
import os

import torch

from sentinel_core.errors import DiskSpaceError

# OSError numbers that say the machine cannot do it: disk or quota full, a file-size limit (`ulimit -f`),
# permissions, a read-only file system, a path that is a file where a folder must be, no memory, no descriptors.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                      errno.EEXIST, errno.ENOMEM, errno.EMFILE, errno.ENFILE}
# What an allocator says when a memory limit (`ulimit -v`) stops it: C++'s bad_alloc, torch's CPU allocator.
ALLOCATOR_MESSAGES = ("std::bad_alloc", "DefaultCPUAllocator: can't allocate memory", "Cannot allocate memory")
# A network that is not there (the hub unreachable, a download cut): the HTTP libraries' own classes, by name,
# so that none of them is imported here, and huggingface_hub's "not cached and no connection".
NETWORK_ERRORS = ("ConnectError", "ConnectTimeout", "ReadTimeout", "RemoteProtocolError", "LocalEntryNotFoundError",
                  "ChunkedEncodingError")


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def environment_fault(exc: BaseException) -> str | None:
    """What about the machine stopped the row (one line), or None when `exc` is a verdict on the model."""
    for e in _chain(exc):
        if isinstance(e, DiskSpaceError):
            return f"disk: {e}"
        if isinstance(e, torch.OutOfMemoryError):
            return f"device memory: {str(e).splitlines()[0][:160]}"
        if isinstance(e, MemoryError) or (isinstance(e, RuntimeError)
                                          and any(m in str(e) for m in ALLOCATOR_MESSAGES)):
            return f"memory: {str(e).splitlines()[0][:160] if str(e) else type(e).__name__}"
        if isinstance(e, (ConnectionError, TimeoutError)) or type(e).__name__ in NETWORK_ERRORS:
            return f"network: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else 'no connection'}"
        if isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS:
            where = f" ({e.filename})" if e.filename else ""
            return f"{os.strerror(e.errno)}{where}"
    return None
