"""Reading result records: validation with file:line errors, and merging several runs."""

from __future__ import annotations

import datetime as dt
import json
import math
import warnings
from pathlib import Path

from sentinel_matrix.metrics import NULL, TEXT, kind
from sentinel_matrix.records import DEFAULT_RESULTS, ENV_KINDS, RECORD_FIELDS, kind_error
from sentinel_core.names import ERROR, OUTCOMES, PASSED, SKIPPED

KNOWN_FIELDS = set(RECORD_FIELDS)  # what the matrix writes (sentinel_matrix/records.py)
REQUIRED_FIELDS = ("family", "model", "weights", "check", "device", "dtype", "outcome", "time")


class RecordError(ValueError):
    """A results file that cannot be read; the message names the file and line."""


def record_key(record: dict) -> tuple:
    """One row of evidence; two checkpoints under one path (a fingerprint each) are two rows."""
    checkpoint = record.get("checkpoint")
    fingerprint = checkpoint.get("fingerprint", "") if isinstance(checkpoint, dict) else ""
    return (record["model"], record["weights"], record["check"], record["device"], record["dtype"], fingerprint)


# The matrix's default output (sentinel_matrix/records.py). A folder read includes it, so a user's own run shows in what
# they render; the committed page (`--check`, `--committed`) is rendered without it, so it renders the same from
# a clean clone.
SCRATCH_RESULTS = DEFAULT_RESULTS.name


def result_files(paths: list[str | Path], committed_only: bool = False) -> list[Path]:
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(p for p in path.glob("*.jsonl") if not (committed_only and p.name == SCRATCH_RESULTS)))
        elif path.exists():
            files.append(path)
        else:
            raise RecordError(f"{path}: no such results file or folder")
    return files


def _problem(record) -> str | None:
    """What is wrong with one parsed record, or None."""
    if not isinstance(record, dict):
        return "a record must be a JSON object"
    missing = [k for k in REQUIRED_FIELDS if k not in record]
    if missing:
        return f"record lacks {', '.join(missing)}"
    for name, kinds in RECORD_FIELDS.items():
        if name in record:
            error = kind_error(record[name], kinds)
            if error:
                return f"{name} {error}"
    if record["outcome"] not in OUTCOMES:
        return f"outcome {record['outcome']!r} is not one of {', '.join(OUTCOMES)}"
    for name, value in record.get("metrics", {}).items():
        error = kind_error(value, kind(name))
        if error:
            return f"metrics.{name} {error}"
    for name, value in record.get("env", {}).items():
        error = kind_error(value, ENV_KINDS.get(name, TEXT + NULL))
        if error:
            return f"env.{name} {error}"
    for name, value in (record.get("checkpoint") or {}).items():
        error = kind_error(value, TEXT + NULL)
        if error:
            return f"checkpoint.{name} {error}"
    return None


def recorded_at(record: dict) -> dt.datetime | None:
    """The record's time as a time (UTC), or None when it is not one: times compare as times, never as text."""
    try:
        when = dt.datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)


def _left_out(record: dict, page: bool = True) -> str | None:
    """Why a well-formed record cannot count (it is left out, with a warning), or None. `page`: the page's rules too,
    a check this matrix has and finite metrics in a pass (`reports diff` keeps such a record to report the lost
    number; `sentinel check` shows the rows of a plugin's checks)."""
    from sentinel_matrix import registry

    if page and record["check"] not in registry.names():
        return f"check {record['check']!r} is not one this matrix has ({', '.join(registry.names())})"
    if recorded_at(record) is None:
        return f"time {record['time']!r} is not an ISO time"
    if page and record["outcome"] == PASSED:
        broken = sorted(name for name, value in record.get("metrics", {}).items()
                        if isinstance(value, float) and not math.isfinite(value))
        if broken:
            return f"a passing record with non-finite metrics ({', '.join(broken)})"
    return None


def read_records(path: Path, page: bool = True) -> list[dict]:
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = list(f)
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise RecordError(f"{path}:{line}: not UTF-8 text (byte {exc.object[exc.start]:#x}); fix or delete the line") \
            from None
    except OSError as exc:
        raise RecordError(f"{path}: cannot be read ({exc.strerror})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines) and not line.endswith("\n"):  # cut short by a run that died writing it
                warnings.warn(f"{path}:{number}: a record cut short (a full disk or a killed run) is left out; "
                              f"the next run moves it to {path.name}.torn", stacklevel=2)
                continue
            raise RecordError(f"{path}:{number}: not valid JSON ({exc.msg}); fix or delete the line") from None
        problem = _problem(record)
        if problem:
            raise RecordError(f"{path}:{number}: {problem}; fix or delete the line")
        unknown = sorted(set(record) - KNOWN_FIELDS)
        if unknown:
            warnings.warn(f"{path}:{number}: ignoring unknown field(s) {', '.join(unknown)}", stacklevel=2)
            record = {k: v for k, v in record.items() if k in KNOWN_FIELDS}
        record.setdefault("metrics", {})
        record.setdefault("env", {})
        record.setdefault("reason", "")
        why = _left_out(record, page)
        if why:
            warnings.warn(f"{path}:{number}: left out: {why}", stacklevel=2)
            continue
        out.append(record)
    return out


def merge(records: list[dict]) -> list[dict]:
    """The newest record per (model, weights, check, device, dtype); ties keep the later file's.

    A skip is no evidence either way (the weights were not on that machine), so it never replaces a
    row that ran: a later CI run without the hub cache must not erase a pass or a failure measured
    where the weights were. An inconclusive record ran, so it replaces an older record like any run.
    An error (the machine stopped the row: sentinel_matrix/faults.py) is no evidence either: it is kept beside the
    row's newest run, until a run newer than it finishes, and never replaces one.
    """
    newest: dict[tuple, dict] = {}
    errors: dict[tuple, dict] = {}
    for record in records:
        key = record_key(record)
        if record["outcome"] == ERROR:
            if key not in errors or recorded_at(record) >= recorded_at(errors[key]):
                errors[key] = record
            continue
        held = newest.get(key)
        if held is not None and (record["outcome"] == SKIPPED) != (held["outcome"] == SKIPPED):
            if record["outcome"] == SKIPPED:
                continue
        elif held is not None and recorded_at(record) < recorded_at(held):
            continue
        newest[key] = record
    # A skip or error that never reached a checkpoint (the weights were not there) has no fingerprint, so it is a
    # key of its own: it goes too where the same row ran on some checkpoint (the skip), or ran after it (the error).
    # A run recorded before records carried a fingerprint names no checkpoint either: once the row has run on a
    # named checkpoint after it, it is that row's older run, not a row of its own.
    ran = {key[:-1] for key, record in newest.items() if record["outcome"] != SKIPPED}
    finished_after, fingerprinted = {}, {}
    for key, record in newest.items():
        if record["outcome"] != SKIPPED:
            finished_after[key[:-1]] = max(finished_after.get(key[:-1], record), record, key=recorded_at)
            if key[-1]:
                fingerprinted[key[:-1]] = max(fingerprinted.get(key[:-1], record), record, key=recorded_at)

    def superseded(key, record) -> bool:
        if key[-1]:
            return False
        if record["outcome"] == SKIPPED:
            return key[:-1] in ran
        later = fingerprinted.get(key[:-1])
        return later is not None and recorded_at(later) > recorded_at(record)

    kept = [record for key, record in newest.items() if not superseded(key, record)]
    return kept + [record for key, record in errors.items()
                   if key[:-1] not in finished_after or recorded_at(finished_after[key[:-1]]) < recorded_at(record)]


def load_results(paths: list[str | Path], committed_only: bool = False,
                 read: list[tuple[Path, int]] | None = None, page: bool = True) -> list[dict]:
    """The merged records of every file under `paths`; `read`, when given, receives (file, record count) per file."""
    records: list[dict] = []
    for path in result_files(paths, committed_only=committed_only):
        file_records = read_records(path, page)
        records.extend(file_records)
        if read is not None:
            read.append((path, len(file_records)))
    return merge(records)
