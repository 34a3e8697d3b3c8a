"""`sentinel profile MODEL`: where a batch-1 decode step's time goes on this machine's GPU, per decode path.

    sentinel profile TinyLlama/TinyLlama-1.1B-step-50K-105b
    sentinel profile ./my-checkpoint --dtype float16

The matrix's profile row of MODEL (`sentinel check MODEL --devices cuda --checks profile`; a catalog id's geometry
at full depth), its record appended to --results, then per path (the CUDA graph, the fused Triton step; each
unpruned and with half of every layer's heads removed): the wall time of a step, its kernels, the GPU's busy
time, the share of the device's bandwidth limit, the kernels that take the most time, and what a generate call
pays besides its steps (the prefill, the first step's warm-up and capture).
"""

from __future__ import annotations

import argparse
import sys

from sentinel_core.names import PASSED, PROFILE

from .common import add_option, parse, run_reporting_errors

HELP = "a batch-1 decode step's kernels and time on the GPU"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sentinel profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="catalog id, local folder, .gguf file, or hub id")
    add_option(p, "--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16",
               help="the model's dtype (default: bfloat16; the fused path runs in half precision)")
    add_option(p, "--weights", default="", help="weight sources, as `sentinel check` takes them (default: default)")
    add_option(p, "--results", default=None,
               help="JSONL file the record is appended to (default: results/latest.jsonl of the checkout)")
    return p


def record_lines(record: dict) -> list[str]:
    from sentinel_matrix.checks.profile import profile_lines

    if record["check"] != PROFILE or record["outcome"] != PASSED:
        return []
    device = record.get("env", {}).get("device_name", record["device"])
    return [f"{record['model']} ({record['weights']}, {device}, {record['dtype']}):", *profile_lines(record["metrics"])]


def run(args) -> int:
    import torch

    from .check import run as run_check

    if not torch.cuda.is_available():
        print("error: sentinel profile counts a decode step's CUDA kernels and this machine has no CUDA device: "
              "run it on a GPU machine", file=sys.stderr)
        return 2
    check_args = argparse.Namespace(model=args.model, devices="cuda", checks=PROFILE, dtype=args.dtype,
                                    weights=args.weights, results=args.results, slow=True)
    return run_check(check_args, show=record_lines)


def main(argv=None) -> int:
    args = parse(build_parser(), argv)
    return args if isinstance(args, int) else run_reporting_errors(run, args)
