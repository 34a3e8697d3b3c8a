"""What the subcommands share: option spellings, argument parsing and the one-line error handling."""

from __future__ import annotations

import argparse
import sys

from sentinel_core.errors import SentinelError


def spellings(name: str) -> tuple[str, ...]:
    """`--max_new_tokens` and `--max-new-tokens`: every option in both spellings (dest from the first)."""
    kebab = name.replace("_", "-")
    return (name, kebab) if kebab != name else (name,)


def add_option(parser, name: str, **kwargs) -> argparse.Action:
    return parser.add_argument(*spellings(name), **kwargs)


def parse(parser: argparse.ArgumentParser, argv) -> argparse.Namespace | int:
    """The parsed arguments, or the exit code of --help (0) or of a usage error argparse has printed (2)."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)


def run_reporting_errors(run, args) -> int:
    """run(args)'s exit code; a SentinelError is one line on stderr, "error: ...", with exit status 2."""
    try:
        return run(args)
    except SentinelError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


DISTRIBUTION = "sentinel-hf"  # the name pip knows it by ("sentinel" on PyPI is another project)


def version() -> str:
    """The installed release and the commit it was built from: a checkout's HEAD (or the commit stamped beside a
    copy without .git, sentinel_matrix/records.py); an install from a wheel names no commit it cannot know."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        release = package_version(DISTRIBUTION)
    except PackageNotFoundError:
        release = "unknown (not installed)"
    from sentinel_matrix.records import git_sha

    sha = git_sha()
    return f"{release} (commit {sha[:12] if sha else 'unknown: not run from a checkout'})"
