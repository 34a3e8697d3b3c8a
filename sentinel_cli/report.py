"""`sentinel report [ARGS ...]`: `python -m sentinel_reports [ARGS ...]` (SUPPORTED_MODELS.md, report.html, diff)."""

from __future__ import annotations

HELP = "render SUPPORTED_MODELS.md / an HTML report from result records, or diff two runs (python -m sentinel_reports)"


def main(argv=None) -> int:
    from sentinel_reports.__main__ import main as reports_main

    try:
        return reports_main(list(argv or []))
    except SystemExit as exc:  # its --help, or a usage error argparse has printed
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
