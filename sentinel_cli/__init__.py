"""The `sentinel` command line (also `python main.py`, `python -m sentinel_cli`).

    sentinel generate --model-name distilgpt2 --prompt "Hello"   # the default command
    sentinel check tiny/llama --checks load,infer                  # a model's matrix rows, as a verdict table
    sentinel profile MODEL                                         # a decode step's kernels and time on the GPU
    sentinel prune MODEL --fraction 0.3 --out DIR                  # remove the least important heads, save
    sentinel report [--check] [--html report.html]                 # python -m sentinel_reports
    sentinel bisect MODEL --check quality [--good V] [--bad V]     # the transformers release a row flips at
    sentinel env                                                   # versions, devices, caches
    sentinel cache [list | clean [KIND ...] --yes]                 # Sentinel's cache, with sizes

Arguments that do not start with a command are generate's: `sentinel --model_name m --prompt p` is
`sentinel generate --model_name m --prompt p`. Each command's module imports torch and transformers
only when it runs, so every --help answers at once.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys

from .common import version
from .generate import build_parser, sampling_settings  # noqa: F401  (the generate API, as before the split)

COMMANDS = ("generate", "check", "profile", "prune", "report", "bisect", "env", "cache")


def command(name: str):
    return importlib.import_module(f".{name}", __name__)


def top_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sentinel", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Hugging Face LMs rebuilt as one gated transformer: generate, check against HF, report.",
        epilog="Without a command the arguments are generate's: `sentinel --model_name M --prompt P` is\n"
               "`sentinel generate --model_name M --prompt P`. `sentinel COMMAND --help` for a command's options.")
    p.add_argument("--version", "-V", action="version", version=f"sentinel {version()}")
    sub = p.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMANDS:
        sub.add_parser(name, help=command(name).HELP)
    return p


def _unknown_command(head: str) -> int:
    close = difflib.get_close_matches(head.lower(), COMMANDS, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    print(f"error: unknown command {head!r}{hint}; commands: {', '.join(COMMANDS)} (`sentinel --help`)", file=sys.stderr)
    return 2


def _main(argv) -> int:
    head = argv[0] if argv else None
    if head in COMMANDS:
        return command(head).main(argv[1:])
    if head in ("--version", "-V"):
        print(f"sentinel {version()}")
        return 0
    if head in ("-h", "--help"):  # the commands only; each command's --help has its options
        print(top_parser().format_help(), end="")
        return 0
    if head is None:
        top_parser().print_help(sys.stderr)
        return 2
    if not head.startswith("-"):  # generate takes no positional argument: this is a command, mistyped
        return _unknown_command(head)
    return command("generate").main(argv)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = _main(argv)
        sys.stdout.flush()
        return code
    except BrokenPipeError:  # `sentinel --help | head`: the reader left, nothing is wrong
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
