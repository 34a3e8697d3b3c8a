"""python -m sentinel_reports [RESULTS ...] [--check] [--html PATH] [--output PATH]
python -m sentinel_reports diff OLD NEW"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sentinel_matrix.records import RESULTS_DIR, WORKSPACE, unwritable

from .load import SCRATCH_RESULTS, RecordError, load_results

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = WORKSPACE / "SUPPORTED_MODELS.md"


def first_difference(expected: str, actual: str) -> str:
    exp, act = expected.splitlines(), actual.splitlines()
    for number, (a, b) in enumerate(zip(exp, act), 1):
        if a != b:
            return f"line {number}: records render {a!r}, file has {b!r}"
    return f"line {min(len(exp), len(act)) + 1}: lengths differ ({len(exp)} rendered vs {len(act)} in file)"


def write_whole(path: Path, text: str) -> None:
    """Write a page to a temporary file beside it, then rename: a full disk leaves the old page as it was."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["diff"]:
        from .diff import main as diff_main

        return diff_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m sentinel_reports", description=__doc__)
    parser.add_argument("results", nargs="*", help="JSONL files or folders (default: results/)")
    parser.add_argument("--output", help=f"the Markdown page to write or check (default {DEFAULT_OUTPUT.name}; with "
                                         f"--html alone, none is written)")
    parser.add_argument("--check", action="store_true", help="fail if the page differs from what the records render")
    parser.add_argument("--html", metavar="PATH", help="also write a self-contained HTML report")
    parser.add_argument("--committed", action="store_true",
                        help=f"leave out results/{SCRATCH_RESULTS} (a local run's output), as --check always does: "
                             f"the page as the committed records render it")
    parser.add_argument("--allow-empty", action="store_true",
                        help="write the page even when no record was read (otherwise an error: never blank a page)")
    args = parser.parse_args(argv)

    from .render import render_markdown

    paths = args.results or ([RESULTS_DIR] if RESULTS_DIR.exists() else [])
    read: list[tuple[Path, int]] = []
    # The transformers-release runs (results/versions/): the version table's alone, never the main tables'.
    releases_dir = RESULTS_DIR / "versions"
    try:
        records = load_results(paths, committed_only=args.check or args.committed, read=read)
        # One file per release, merged apart: a row's newest record is kept per release, never across them.
        release_records = [r for path in sorted(releases_dir.glob("*.jsonl")) for r in load_results([path], read=read)
                           ] if not args.results and releases_dir.is_dir() else []
    except RecordError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not records and not args.allow_empty:
        print(f"error: no records in {', '.join(map(str, paths)) or 'results/ (missing)'}: nothing to render; run the "
              f"matrix first, name the results files, or pass --allow-empty", file=sys.stderr)
        return 2
    print("read " + ", ".join(f"{_shown(path)} ({count})" for path, count in read), file=sys.stderr)
    page = render_markdown(records, release_records)
    # --html alone writes that file and nothing else; the Markdown page is written when asked, or when nothing is
    markdown = args.output is not None or args.check or not args.html
    output = Path(args.output or DEFAULT_OUTPUT)
    problem = None if args.check else (unwritable(output) if markdown else None) or \
        (unwritable(Path(args.html)) if args.html else None)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.check:
        try:
            current = output.read_text(encoding="utf-8") if output.exists() else ""
        except IsADirectoryError:
            print(f"error: --output {output} is a folder: name the page's file", file=sys.stderr)
            return 2
        except UnicodeDecodeError as exc:
            print(f"error: {output} is not UTF-8 text (byte {exc.object[exc.start]:#x} at {exc.start}): it is no "
                  f"page this renders; run `python -m sentinel_reports` to write it", file=sys.stderr)
            return 2
        if current != page:
            print(f"error: {output.name} is out of date ({first_difference(page, current)}); "
                  f"run `python -m sentinel_reports` and commit it", file=sys.stderr)
            return 1
        print(f"{output.name} matches {len(records)} records")
    try:
        if markdown and not args.check:
            write_whole(output, page)
            print(f"wrote {output} from {len(records)} records")
        if args.html:
            from .html import render_html

            write_whole(Path(args.html), render_html(records, release_records))
            print(f"wrote {args.html}")
    except OSError as exc:
        print(f"error: cannot write {exc.filename or output} ({exc.strerror or exc}): free space or choose another "
              f"path; the old file is as it was", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
