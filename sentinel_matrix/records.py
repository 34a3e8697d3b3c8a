"""Result records: one JSON object per matrix row, appended to a JSONL file as the row finishes.

Each line is written with one write() under an exclusive lock (filelock: any OS) and flushed, so pytest-xdist workers
never interleave and a crash loses no finished row. Tokens and other secrets are never written:
records hold names, numbers and versions only.

Each record's `env` says which code measured it: `git_sha` (the full commit), `git_dirty` (uncommitted
changes under sentinel_core/ or sentinel_matrix/; None where unknown) and `source_hash` (a hash of those folders'
Python files themselves). The report counts a record as evidence only while its source_hash equals the
hash of the tree it renders in (sentinel_reports/status.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import warnings
from functools import cache
from pathlib import Path

from filelock import FileLock, Timeout

from . import evidence
from .metrics import CURVES, FLAG, NULL, NUMBER, OBJECT, POINTS, ROWS, TEXT

# Every field a record may have, and the JSON types it may hold (the reporter refuses others, naming the line);
# each metric's own kind is in sentinel_matrix/metrics.py.
RECORD_FIELDS = {"family": TEXT, "model": TEXT, "weights": TEXT, "check": TEXT, "device": TEXT, "dtype": TEXT,
                 "outcome": TEXT, "reason": TEXT, "metrics": OBJECT, "env": OBJECT, "time": TEXT,
                 "duration_s": NUMBER + NULL, "synthetic_layers": NUMBER + NULL, "checkpoint": OBJECT}

def unwritable(path: Path) -> str | None:
    """Why a file cannot be written at `path` (its folder is created when missing), or None; asked before any
    work, so a bad output path is one line up front and never an error after the first result."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create {path.parent} ({exc.strerror}): choose another path"
    if path.is_dir():
        return f"{path} is a folder: name a file"
    if not os.access(path.parent, os.W_OK) or path.exists() and not os.access(path, os.W_OK):
        return f"{path} is not writable: choose another path or fix its permissions"
    return None


# The provenance fields of `env` (all text or null, git_dirty true/false/null).
ENV_KINDS = {"git_dirty": FLAG + NULL, "depends": OBJECT, "gpu_index": NUMBER + NULL, "gpu_count": NUMBER + NULL}


def kind_error(value, kinds) -> str | None:
    """Why `value` is not of `kinds` (a bool is no number), or None when it is."""
    if kinds == POINTS:
        pairs = isinstance(value, list) and all(isinstance(p, list) and len(p) == 2 and not kind_error(p[0], NUMBER)
                                                and not kind_error(p[1], NUMBER) for p in value)
        return None if pairs else f"must be a list of [number, number] points, not {json.dumps(value)[:40]}"
    if kinds == CURVES:  # the report draws each: a malformed one is refused here, not a crash there
        good = isinstance(value, dict) and value and all(isinstance(k, str) and not kind_error(v, POINTS) and v
                                                         for k, v in value.items())
        return None if good else f"must map names to non-empty [[number, number], ...] curves, not {json.dumps(value)[:40]}"
    if kinds == ROWS:
        good = isinstance(value, list) and all(isinstance(row, list) and row and len(row) == len(value[0])
                                               and not any(kind_error(x, NUMBER + NULL) for x in row) for row in value)
        return None if good else f"must be a list of equally long rows of numbers, not {json.dumps(value)[:40]}"
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(sorted({{int: "number", float: "number", str: "text", dict: "object", list: "list",
                                     bool: "true/false", type(None): "null"}[k] for k in kinds}))
        return f"must be {names}, not {json.dumps(value)[:40]}"
    return None

ROOT = Path(__file__).resolve().parent.parent
# A copy of the repository sent to another machine (a GPU lent without network) may carry no .git, or a
# stale one. Before sending, `python -m sentinel_matrix.records stamp` writes "<commit> <source hash>" of a clean
# checkout into this file; a copy whose own source hash matches it reports that commit.
COMMIT_FILE = "SENTINEL_COMMIT"
# Where records and pages go unless told otherwise: a checkout's own folder (results/latest.jsonl is the last local
# run, git ignores it; the committed evidence has names of its own, cpu-offline.jsonl, h100.jsonl, ...); an
# installed copy (no pyproject.toml beside its packages) never writes into the install, but into the working folder.
WORKSPACE = ROOT if (ROOT / "pyproject.toml").is_file() else Path.cwd()
RESULTS_DIR = WORKSPACE / "results"
DEFAULT_RESULTS = RESULTS_DIR / "latest.jsonl"
SOURCE_FOLDERS = ("sentinel_core", "sentinel_matrix")


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=root)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _in_git_checkout(root: Path) -> bool:
    # Checked at the root itself: a copy without .git that sits inside another repository must not
    # report that repository's commit.
    return (root / ".git").exists()


def _stamped_commit(root: Path) -> str | None:
    """The commit named in COMMIT_FILE, if the file describes these very sources."""
    try:
        sha, stamped_hash = (root / COMMIT_FILE).read_text(encoding="utf-8").split()
    except (OSError, ValueError):
        return None
    return sha if stamped_hash == source_hash(root) else None


@cache
def git_sha(root: Path = ROOT) -> str | None:
    """The commit of these sources: the commit stamped beside them when the stamp describes these very sources
    (a copy sent elsewhere may sit on another commit's .git), else a checkout's HEAD."""
    stamped = _stamped_commit(root)
    if stamped is not None or not _in_git_checkout(root):
        return stamped
    return (_git(root, "rev-parse", "HEAD") or "").strip() or None


@cache
def git_dirty(root: Path = ROOT) -> bool | None:
    """Uncommitted changes (untracked files included) to the code that measures; None without git. A stamped
    copy is clean by construction (stamp refuses a dirty checkout)."""
    if _stamped_commit(root) is not None:
        return False
    if not _in_git_checkout(root):
        return None
    status = _git(root, "status", "--porcelain", "--", *SOURCE_FOLDERS)
    return None if status is None else bool(status.strip())


def stamp(root: Path = ROOT) -> str:
    """Write COMMIT_FILE for a copy of this checkout that travels without git."""
    if git_dirty(root) is not False or _git(root, "status", "--porcelain", "--", *SOURCE_FOLDERS) is None:
        raise SystemExit(f"error: commit the changes under {' and '.join(SOURCE_FOLDERS)} first: a stamp names a commit")
    line = f"{(_git(root, 'rev-parse', 'HEAD') or '').strip()} {source_hash(root)}"
    (root / COMMIT_FILE).write_text(line + "\n", encoding="utf-8")
    return line


@cache
def source_hash(root: Path = ROOT) -> str:
    """The first 16 hex digits of sha256 over every *.py file under sentinel_core/ and sentinel_matrix/: sorted
    relative POSIX paths, each followed by its length and bytes. Read from the files, so a copy without
    git hashes the same as the checkout it came from."""
    digest = hashlib.sha256()
    files = sorted((path.relative_to(root).as_posix(), path) for folder in SOURCE_FOLDERS
                   for path in (root / folder).rglob("*.py") if "__pycache__" not in path.relative_to(root).parts)
    for name, path in files:
        data = path.read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:16]


def environment(device: str, depends: dict | None = None) -> dict:
    """Which machine, libraries and code measured a row; `depends` (sentinel_matrix/evidence.py) is what its verdict rests on."""
    import torch
    import transformers

    name, gpu = cpu_name(), {}
    if device == "cuda" and torch.cuda.is_available():
        index = torch.cuda.current_device()  # an xdist worker's own GPU (sentinel_matrix/workers.py)
        name, gpu = torch.cuda.get_device_name(index), {"gpu_index": index, "gpu_count": torch.cuda.device_count()}
    return {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.system(), **gpu,
            "transformers": transformers.__version__, "device_name": name, "git_sha": git_sha(),
            "git_dirty": git_dirty(), **({"depends": depends, "fingerprint": evidence.fingerprint(depends)} if depends else {})}


@cache
def cpu_name() -> str:
    """The CPU's brand name (py-cpuinfo, which pytest-benchmark brings), else what the platform module knows."""
    try:
        import cpuinfo

        return cpuinfo.get_cpu_info().get("brand_raw") or platform.machine()
    except Exception:  # noqa: BLE001 - a name for the record, never a reason to lose the row
        return platform.processor() or platform.machine()


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


LOCK_TIMEOUT_S = 120  # a results lock held longer than this is someone else's run that hangs, or a stale lock


class RecordWriteError(OSError):
    """A record that could not be written: the file is left as it was (the message says why and what to do)."""


def _set_aside_torn_tail(path: Path) -> None:
    """A line cut short by an earlier writer (a full disk, a killed run) is moved to `<path>.torn`, so the next
    record starts a line of its own and no finished row is lost to the fragment."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size == 0:
                return
            f.seek(max(0, size - (1 << 20)))
            tail = f.read()
    except FileNotFoundError:
        return
    if tail.endswith(b"\n"):
        return
    cut = size - (len(tail) - tail.rfind(b"\n") - 1) if b"\n" in tail else max(0, size - len(tail))
    with open(path, "rb") as f:
        f.seek(cut)
        fragment = f.read()
    with open(f"{path}.torn", "ab") as torn:
        torn.write(fragment + b"\n")
    os.truncate(path, cut)
    warnings.warn(f"{path}: a record cut short by an earlier run ({len(fragment)} bytes) was moved to {path}.torn",
                  stacklevel=3)


def append_record(path: str | Path, record: dict) -> None:
    """Append one record as one line: written whole or not at all (a failed write is cut back off), under an
    exclusive lock (xdist workers, parallel runs), flushed to disk before the lock is released."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode("utf-8")
    try:
        lock = FileLock(f"{path}.lock", timeout=LOCK_TIMEOUT_S)
        with lock:
            _set_aside_torn_tail(path)
            with open(path, "ab") as f:
                start = f.tell()
                try:
                    f.write(line)
                    f.flush()
                    os.fsync(f.fileno())
                except OSError as exc:
                    f.truncate(start)  # never leave half a line
                    raise RecordWriteError(f"{path}: the record of {record.get('model')}/{record.get('check')} "
                                           f"could not be written ({exc.strerror or exc}): free space or choose "
                                           f"another --results; the file is as it was") from exc
    except Timeout:
        raise RecordWriteError(f"{path}.lock has been held by another process for over {LOCK_TIMEOUT_S} s: wait "
                               f"for that run, or delete {path}.lock if no run is writing {path}") from None
    except RecordWriteError:
        raise
    except OSError as exc:  # the lock itself cannot be made: a folder in its place, a read-only folder
        raise RecordWriteError(f"{path}: cannot lock or open it ({exc.strerror or exc}, {exc.filename or path}): "
                               f"fix that path or choose another --results") from exc


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["stamp"]:
        raise SystemExit("usage: python -m sentinel_matrix.records stamp")
    print(stamp())
