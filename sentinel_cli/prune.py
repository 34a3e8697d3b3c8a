"""`sentinel prune MODEL --fraction 0.3 --method gradient --out DIR`: remove the least important heads and save.

    sentinel prune HuggingFaceTB/SmolLM2-135M --fraction 0.3 --out smollm2-pruned
    sentinel prune ./my-checkpoint --count 24 --method ablation --text corpus.txt --out pruned/

Head importance (sentinel_core/importance.py) is estimated on a calibration split of the text (its first
tokens), the heads are removed for real (`prune_heads`), perplexity is measured before and after on a held-out
split (its last tokens), and the pruned model is saved as a folder that `load_adaptive_model(DIR)` (and this
command line's --model_name) loads back. The text defaults to the Wikipedia sample shipped with Sentinel.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sentinel_core.errors import SentinelError
from sentinel_core.names import IMPORTANCE_METHODS, NATIVE

from .common import add_option, parse, run_reporting_errors

HELP = "remove the least important attention heads (gradient, ablation, magnitude or random order) and save"
METHODS = IMPORTANCE_METHODS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sentinel prune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="hub id, local folder or .gguf file")
    how_many = p.add_mutually_exclusive_group(required=True)
    how_many.add_argument("--fraction", type=float, help="fraction of heads to remove, in [0, 1)")
    how_many.add_argument("--count", type=int, help="number of heads to remove")
    p.add_argument("--method", choices=METHODS, default="gradient", help="importance order (default: gradient)")
    p.add_argument("--out", required=True, help="folder the pruned model is saved to (must be new or empty)")
    add_option(p, "--per_layer", action="store_true",
               help="remove the same share from every layer instead of the least important heads overall")
    add_option(p, "--min_heads_per_layer", type=int, default=1, help="heads every layer keeps (default: 1)")
    p.add_argument("--text", help="UTF-8 text file for calibration and held-out perplexity (default: the "
                                  "shipped Wikipedia sample)")
    add_option(p, "--calibration_rows", type=int, default=4, help="calibration windows (default: 4)")
    add_option(p, "--calibration_length", type=int, default=128, help="tokens per calibration window (default: 128)")
    add_option(p, "--heldout_tokens", type=int, default=2048, help="held-out tokens for perplexity (default: 2048)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random order (default: 0)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    return p


def read_text(path: str | None) -> str:
    if path is None:
        from sentinel_matrix.sources import wikipedia_text

        return wikipedia_text()
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SentinelError(f"--text {path}: no such file; give a UTF-8 text file") from None
    except UnicodeDecodeError as exc:
        raise SentinelError(f"--text {path} is not UTF-8 (byte {exc.start}): convert it to UTF-8") from None
    except OSError as exc:  # a folder, no permission to read
        raise SentinelError(f"--text {path}: {exc.strerror or exc}; give a readable UTF-8 text file") from None


def check_out(path: str) -> Path:
    """--out, checked before any scoring: a new or empty folder this user can write."""
    out = Path(path)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SentinelError(f"--out {path} exists and is not an empty folder: choose a new folder")
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise SentinelError(f"--out {path}: {parent} is not a folder you can write to: choose another --out")
    return out


SEED_RANGE = (0, 2**63 - 1)  # torch.manual_seed's


def check_sizes(args) -> None:
    """Splits too small to score anything are refused before any weights are read."""
    if args.calibration_rows < 1:
        raise SentinelError(f"--calibration-rows {args.calibration_rows}: at least 1 window is needed")
    if args.calibration_length < 2:
        raise SentinelError(f"--calibration-length {args.calibration_length}: a window needs at least 2 tokens "
                            f"(importance is the next-token loss)")
    if args.heldout_tokens < 2:
        raise SentinelError(f"--heldout-tokens {args.heldout_tokens}: perplexity needs at least 2 held-out tokens")
    if not SEED_RANGE[0] <= args.seed <= SEED_RANGE[1]:
        raise SentinelError(f"--seed {args.seed}: give a seed in [0, 2**63 - 1]")
    if args.device.split(":")[0] not in ("cpu", "cuda"):
        raise SentinelError(f"--device {args.device}: use cpu or cuda (cuda:N for one GPU of several)")


def run(args) -> int:
    from tqdm import tqdm

    from sentinel_core.importance import calibration_and_heldout, head_importance, importance_prune_plan, perplexity
    from sentinel_core.loader import check_device, load_adaptive_model, load_tokenizer, resolve_checkpoint

    out = check_out(args.out)
    check_sizes(args)
    check_device(args.device)
    text = read_text(args.text)
    checkpoint = resolve_checkpoint(args.model)  # an unsupported family or config fails before any weights are read
    tokenizer = load_tokenizer(args.model)
    calibration, heldout = calibration_and_heldout(tokenizer, text, args.calibration_rows, args.calibration_length,
                                                   args.heldout_tokens)
    model = load_adaptive_model(checkpoint, device=args.device)
    if getattr(model, "adaptive_path", None) != NATIVE:
        raise SentinelError(f"{args.model} runs through the generic gated wrapper (no converter for its model_type), "
                            f"which cannot save a pruned model; gate its heads with model.gates instead")
    if model.spec.max_positions and args.calibration_length > model.spec.max_positions:
        raise SentinelError(f"--calibration-length {args.calibration_length}: {args.model} has "
                            f"{model.spec.max_positions} positions; give at most that")
    calibration, heldout = calibration.to(args.device), heldout.to(args.device)
    window = min(512, model.spec.max_positions or 512)  # 0: no learned position table, no limit
    params_before = sum(p.numel() for p in model.parameters())
    ppl_before = perplexity(model, heldout, window)

    print(f"scoring {model.gates.numel()} heads of {args.model} by {args.method} on {calibration.numel()} "
          f"calibration tokens", file=sys.stderr, flush=True)
    with tqdm(total=model.gates.numel(), desc=args.method, unit="head", file=sys.stderr,
              disable=args.method != "ablation") as bar:
        scores = head_importance(model, calibration, method=args.method, seed=args.seed,
                                 normalize=args.method == "gradient",
                                 progress=lambda done, total: bar.update(1))
    plan = importance_prune_plan(scores, fraction=args.fraction, count=args.count, per_layer=args.per_layer,
                                 min_heads_per_layer=args.min_heads_per_layer)
    removed = sum(len(heads) for heads in plan.values())
    if removed:
        model.prune_heads(plan)
    ppl_after = perplexity(model, heldout, window)
    params_after = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)  # so that `sentinel generate --model-name OUT` and AutoTokenizer read it back

    print(f"removed {removed} of {model.gates.numel()} heads ({args.method} order), parameters "
          f"{params_before:,} -> {params_after:,}")
    print(f"held-out perplexity ({heldout.shape[1]} tokens): {ppl_before:.3f} -> {ppl_after:.3f} "
          f"({ppl_after / ppl_before - 1:+.1%})")
    print(f"saved to {out} (load_adaptive_model({str(out)!r}))")
    return 0


def main(argv=None) -> int:
    args = parse(build_parser(), argv)
    return args if isinstance(args, int) else run_reporting_errors(run, args)
