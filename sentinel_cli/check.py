"""`sentinel check MODEL`: run one model's matrix rows (pytest with the matrix plugin) and print a verdict table.

    sentinel check tiny/llama --checks load,infer
    sentinel check ./my-checkpoint --devices cpu,cuda --dtype float16

MODEL is anything the matrix's --models takes: a catalog id or glob, a local folder, a .gguf file, a hub id.
The rows run in a child `python -m pytest` on a scratch results file; their records are then appended to
--results and tabulated: one row per check (and weight source, when there are several), one column per
device and dtype. Exit status 0 when no check failed, 1 when one did, 2 on a usage error or no rows.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

from sentinel_matrix import registry
from sentinel_matrix.metrics import metric
from sentinel_core.names import (BENCH, PROFILE, BFLOAT16, ERROR, FAILED, INCONCLUSIVE, INFER, LOAD, MUTATION, PASSED, PRUNE, QUALITY, SKIPPED,
                                 short_dtype)

from .common import add_option, parse, run_reporting_errors

HELP = "run a model's matrix rows and print a verdict table"

MARKS = {PASSED: "✅", FAILED: "❌", INCONCLUSIVE: "◻️", SKIPPED: "⏭", ERROR: "⚠️"}


# The metrics a check's cell shows, in order: (record key, label); sentinel_matrix/metrics.py formats each. A tuple of
# keys shows the largest of them.
CELL_METRICS = {
    LOAD: [("load_s", "load")],
    INFER: [(("padded_vs_alone_max_diff", "cache_vs_full_max_diff"), "max diff")],
    QUALITY: [("grade", ""), ("max_logprob_diff", "max |Δ log p|"), ("ppl", "ppl")],
    MUTATION: [("mutation_score", "")],
    BENCH: [("decode_ratio", "decode ×")],
    PROFILE: [("fused_share_of_limit", "fused, share of limit"), ("graph_share_of_limit", "graph, share of limit")],
    PRUNE: [("prunable_fraction", "")],
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sentinel check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="catalog id or glob, local folder, .gguf file, or hub id")
    add_option(p, "--devices", default="cpu", help="comma-separated: cpu,cuda (default: cpu)")
    add_option(p, "--checks", default="",
               help=f"comma-separated: {','.join(registry.names())} (default: {','.join(registry.default_names())})")
    add_option(p, "--dtype", choices=("bfloat16", "float16", "float32"), default=None,
               help="dtype of the CUDA rows (default: the matrix's, bfloat16); CPU rows are float32")
    add_option(p, "--weights", default="",
               help="comma-separated weight sources: hub,package,synthetic,local,default,all (default: default)")
    add_option(p, "--results", default=None,
               help="JSONL file this run's records are appended to (default: results/latest.jsonl of the checkout)")
    add_option(p, "--slow", action="store_true", help="include catalog entries marked slow")
    return p


def matrix_folder() -> Path:
    import sentinel_matrix

    return Path(sentinel_matrix.__file__).resolve().parent


def model_argument(model: str) -> str:
    """A local folder or file as an absolute path (pytest runs in the checkout); any other name as it is."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def pytest_command(args, results: Path) -> list[str]:
    command = [sys.executable, "-m", "pytest", str(matrix_folder()), "--models", model_argument(args.model),
               "--devices", args.devices, "--results", str(results), "-q", "--tb=no", "-p", "no:randomly",
               # the options' plugin (an installed wheel has no root conftest to load it); no .pytest_cache
               # written into the package's folder
               "-p", "sentinel_matrix.plugin", "-p", "no:cacheprovider"]
    for option, value in (("--checks", args.checks), ("--weights", args.weights), ("--cuda-dtype", args.dtype)):
        if value:
            command += [option, value]
    return command + (["--slow"] if args.slow else [])


def run_matrix(command: list[str], cwd: Path) -> tuple[int, str]:
    """pytest's exit code and its output; while it runs, each row is printed to stderr as its record lands in
    the --results file of `command` (stdout is the table's)."""
    import threading
    import time

    from sentinel_reports.load import read_records

    rows_file = Path(command[command.index("--results") + 1])
    # A run of its own, even when started from a pytest-xdist worker.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    output: list[str] = []
    shown = 0

    def show_new_rows() -> None:
        nonlocal shown
        if not rows_file.is_file():
            return
        with warnings.catch_warnings():  # a line still being written is read again on the next look
            warnings.simplefilter("ignore")
            records = read_records(rows_file, page=False)
        for record in records[shown:]:
            print(row_line(record), file=sys.stderr, flush=True)
        shown = max(shown, len(records))

    with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:
        reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
        reader.start()
        while proc.poll() is None:
            time.sleep(0.25)
            show_new_rows()
        reader.join()
    show_new_rows()
    return proc.returncode, "".join(output)


def row_line(record: dict) -> str:
    """One finished row: outcome, check, device and dtype, its key number, seconds; the reason when not passed."""
    numbers = key_numbers(record["check"], record.get("metrics") or {})
    reason = " ".join((record.get("reason") or "").split())
    return (f"  {MARKS.get(record['outcome'], record['outcome'])} {record['check']:<8} {record['device']} "
            f"{short_dtype(record['dtype'])}  {numbers + '  ' if numbers else ''}({record.get('duration_s') or 0:.1f} s)"
            + (f"  {reason[:160]}" if record["outcome"] != PASSED and reason else ""))


def header(args, results: Path) -> str:
    from .env import package_version

    dtype = f", CUDA rows in {args.dtype or BFLOAT16}" if "cuda" in args.devices else ""  # the matrix's default
    return (f"sentinel check {args.model}: weights {args.weights or 'default'}, devices {args.devices} (CPU rows in "
            f"float32{dtype}); transformers {package_version('transformers')}, torch {package_version('torch')}; "
            f"records to {results}")


def key_numbers(check: str, metrics: dict) -> str:
    shown = []
    for key, label in CELL_METRICS.get(check, []):
        keys = key if isinstance(key, tuple) else (key,)
        values = [metrics[k] for k in keys if metrics.get(k) is not None]
        if not values:
            continue
        value = max(values) if len(values) > 1 else values[0]
        text = metric(keys[0]).format(value)
        shown.append(f"{label}{'' if label.endswith('×') else ' '}{text}".strip() if label else text)
    return ", ".join(shown)


def verdict_table(records: list[dict]) -> tuple[str, list[str]]:
    """The table (a row per check, a column per device and dtype) and, for the cells that did not pass, one
    line per reason naming its cells."""
    from tabulate import tabulate

    several_sources = len({r["weights"] for r in records}) > 1
    rows: dict[str, dict[str, str]] = {}
    columns: list[str] = []
    reasons: dict[tuple[str, str], list[tuple[str, str]]] = {}  # (mark, reason) -> its cells
    for r in records:
        row = f"{r['check']} ({r['weights']})" if several_sources else r["check"]
        column = f"{r['device']} {r['dtype']}"
        if column not in columns:
            columns.append(column)
        mark = MARKS.get(r["outcome"], r["outcome"])
        rows.setdefault(row, {})[column] = f"{mark} {key_numbers(r['check'], r.get('metrics') or {})}".strip()
        if r["outcome"] != PASSED:
            reason = " ".join((r.get("reason") or "no reason recorded").split())
            reasons.setdefault((mark, reason), []).append((row, column))
    table = tabulate([[row, *(cells.get(c, "") for c in columns)] for row, cells in rows.items()],
                     headers=["check", *columns], tablefmt="simple")
    lines = []
    for (mark, reason), cells in reasons.items():
        if len({column for _, column in cells}) == 1:
            where = f"{', '.join(row for row, _ in cells)} ({cells[0][1]})"
        else:
            where = ", ".join(f"{row} ({column})" for row, column in cells)
        lines.append(f"{mark} {where}: {reason}")
    return table, lines


def exit_code(records: list[dict], pytest_code: int) -> int:
    if any(r["outcome"] == FAILED for r in records):
        return 1
    return 1 if pytest_code == 1 else 0


def run(args, show=None) -> int:
    """show(record) -> lines: printed after the table for each record (`sentinel profile`'s per-step numbers)."""
    from sentinel_matrix.records import DEFAULT_RESULTS, append_record, unwritable
    from sentinel_reports.load import read_records

    root = matrix_folder().parent
    results = Path(args.results).expanduser().resolve() if args.results else DEFAULT_RESULTS
    problem = unwritable(results)
    if problem:
        print(f"error: --results: {problem}", file=sys.stderr)
        return 2
    print(header(args, results), file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="sentinel-check-") as scratch:
        rows_file = Path(scratch) / "rows.jsonl"
        code, output = run_matrix(pytest_command(args, rows_file), cwd=root)
        records = read_records(rows_file, page=False) if rows_file.is_file() else []
    for record in records:  # this run's records only, into the user's results file
        append_record(results, record)
    if code in (2, 3, 4) or not records:  # interrupted, collection or usage error, internal error: pytest says why
        lines = [line for line in output.splitlines() if line.strip()]
        usage = [line for line in lines if line.startswith("ERROR: ") or "UsageError" in line]
        if usage:  # the matrix's own one-line refusal (an unknown name, a device this machine lacks)
            print(f"error: {usage[0].removeprefix('ERROR: ').strip()}", file=sys.stderr)
            return 2
        print("\n".join(lines[-15:]), file=sys.stderr)
        print(f"error: the matrix run stopped (pytest exit code {code}); see its output above" if records or code
              else f"error: no matrix rows for {args.model!r} with these options", file=sys.stderr)
        return 2
    table, reasons = verdict_table(records)
    counts = ", ".join(f"{sum(r['outcome'] == o for r in records)} {o}" for o in MARKS
                       if any(r["outcome"] == o for r in records))
    print(f"sentinel check {args.model}: {len(records)} rows ({counts}), appended to {results}")
    print(table)
    for line in reasons:
        print(line)
    for record in records if show else ():
        for line in show(record):
            print(line)
    return exit_code(records, code)


def main(argv=None) -> int:
    args = parse(build_parser(), argv)
    return args if isinstance(args, int) else run_reporting_errors(run, args)
