"""Result records: one JSON object per matrix row, appended to a JSONL file as the row finishes.

Each line is written with one write() under an exclusive lock and flushed, so pytest-xdist workers
never interleave and a crash loses no finished row. Tokens and other secrets are never written:
records hold names, numbers and versions only.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import platform
import subprocess
from functools import cache
from pathlib import Path

RECORD_FIELDS = ("family", "model", "weights", "check", "device", "dtype", "outcome", "reason", "metrics", "env",
                 "time", "duration_s", "synthetic_layers")


@cache
def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: str) -> dict:
    import torch
    import transformers

    name = platform.processor() or platform.machine()
    if device == "cuda" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "device_name": name, "git_sha": git_sha()}


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def append_record(path: str | Path, record: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, default=str) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
