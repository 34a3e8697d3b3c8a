"""A catalog geometry at full depth, synthetic bf16 weights, split across the GPU and the CPU with device_map: the
adaptive model against HF's own model split the same way (log-probs on a left-padded batch, greedy tokens), and
each side's prefill and decode speed in the same process. One JSON record to OUT.

    python scripts/split-parity.py MODEL OUT [--gpu-gib 22] [--new-tokens 16] [--repeats 2]

The HF model is placed by accelerate within --gpu-gib of GPU 0 (the rest offloaded to the CPU, streamed to the GPU
each forward); the adaptive model gets that same map, module for module. The checkpoint is written once into
$SENTINEL_CACHE/split/ (bf16, so a 13B model takes 26 GB of disk).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from sentinel_core import load_adaptive_model, load_baseline_model
from sentinel_core.synthetic import checkpoint_intact, randomise_
from sentinel_matrix.catalog import load_catalog
from sentinel_matrix.records import environment, now
from sentinel_matrix.timing import percentile, synchronize

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
HF_TO_OURS = {"model.embed_tokens": "embed", "model.norm": "final_norm", "lm_head": "lm_head"}


def bf16_checkpoint(entry, folder: Path) -> Path:
    """Every parameter random (synthetic.randomise_), made on the meta device then filled, saved in bf16."""
    if checkpoint_intact(folder):
        return folder
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():  # parameters on the meta device, buffers (rotary frequencies) computed for real
        model = AutoModelForCausalLM.from_config(entry.hf_config(), dtype=torch.bfloat16)
    for module in model.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            module._parameters[name] = torch.nn.Parameter(torch.empty(p.shape, dtype=torch.bfloat16),
                                                          requires_grad=False)
    with torch.no_grad():
        randomise_(model, seed=0)
    model.save_pretrained(folder)
    return folder


def ours_from_hf(device_map: dict) -> dict:
    out = {}
    for name, device in device_map.items():
        if name.startswith("model.layers."):
            out["layers." + name.removeprefix("model.layers.")] = device
        elif name in HF_TO_OURS:
            out[HF_TO_OURS[name]] = device
    return out


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        synchronize(DEVICE)
        start = time.perf_counter()
        fn()
        synchronize(DEVICE)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("out")
    parser.add_argument("--gpu-gib", type=float, default=22.0)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    entry = next(e for e in load_catalog() if e.id == args.model)
    cache = Path(os.environ.get("SENTINEL_CACHE", "/tmp/sentinel-cache")) / "split" / f"{entry.slug}-bf16"
    start = time.time()
    folder = bf16_checkpoint(entry, cache)
    made_s = time.time() - start
    # Without a GPU (a dry run of this script): the CPU within --gpu-gib, the rest on disk.
    device = DEVICE
    max_memory = {0: f"{args.gpu_gib}GiB", "cpu": "110GiB"} if device == "cuda" else {"cpu": f"{args.gpu_gib}GiB"}
    offload = {"offload_folder": str(cache) + "-offload"}
    start = time.time()
    hf = load_baseline_model(folder, dtype="bfloat16", device_map="auto", max_memory=max_memory,
                             attn_implementation="eager", **offload)
    hf_load_s = time.time() - start
    start = time.time()
    ours = load_adaptive_model(folder, dtype="bfloat16", device_map=ours_from_hf(hf.hf_device_map),
                               offload_folder=offload["offload_folder"] + "-adaptive")
    ad_load_s = time.time() - start
    placement = {str(d): sum(1 for k, v in ours.hf_device_map.items() if k.startswith("layers.") and v == d)
                 for d in set(ours.hf_device_map.values())}

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, entry.config["vocab_size"], (2, 32), generator=g).to(device)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    real = mask.bool()
    with torch.no_grad():
        ours_lp = ours(ids, attention_mask=mask).logits.float().log_softmax(-1)
        hf_lp = hf(ids, attention_mask=mask).logits.float().log_softmax(-1)
    diff = (ours_lp - hf_lp).abs()[real]
    greedy = dict(attention_mask=mask, max_new_tokens=args.new_tokens)
    ours_tokens = ours.generate(ids, eos_token_id=[], **greedy)
    hf_greedy = dict(do_sample=False, eos_token_id=None, min_new_tokens=args.new_tokens, pad_token_id=0, **greedy)
    hf_tokens = hf.generate(ids, **hf_greedy)
    # HF's own two attention paths on the same split model: bf16 rounding's scale, the unit ours is read in
    hf.set_attn_implementation("sdpa")
    with torch.no_grad():
        sdpa_lp = hf(ids, attention_mask=mask).logits.float().log_softmax(-1)
    sdpa_tokens = hf.generate(ids, **hf_greedy)
    hf_paths = (sdpa_lp - hf_lp).abs()[real]
    one = ids[:1]
    decode = {"adaptive": lambda: ours.generate(one, max_new_tokens=args.new_tokens, eos_token_id=[]),
              "hf": lambda: hf.generate(one, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                        do_sample=False, eos_token_id=None, pad_token_id=0)}
    prefill = {"adaptive": lambda: ours(ids[:1]), "hf": lambda: hf(ids[:1])}
    speed = {}
    with torch.no_grad():
        for side in ("adaptive", "hf"):
            prefill[side]()
            decode[side]()  # warm-up
        for side in ("adaptive", "hf", "hf", "adaptive"):  # interleaved
            speed.setdefault(f"{side}_prefill_s", []).extend(timed(prefill[side], args.repeats))
            speed.setdefault(f"{side}_decode_s", []).extend(timed(decode[side], args.repeats))
    tokens_per_s = {side: [args.new_tokens / t for t in speed[f"{side}_decode_s"]] for side in ("adaptive", "hf")}
    record = {
        "model": entry.id, "weights": "synthetic", "dtype": "bfloat16", "device": device, "time": now(),
        "env": {**environment(device), "gpu_count": torch.cuda.device_count() if device == "cuda" else 0},
        "placement": {"max_memory": {str(k): v for k, v in max_memory.items()}, "layers_per_device": placement,
                      "hf_device_map": {k: str(v) for k, v in hf.hf_device_map.items()}},
        "metrics": {
            "checkpoint_made_s": round(made_s, 1), "baseline_load_s": round(hf_load_s, 1), "load_s": round(ad_load_s, 1),
            "max_logprob_diff": diff.max().item(), "mean_logprob_diff": diff.mean().item(),
            "top1_agreement": (ours_lp.argmax(-1) == hf_lp.argmax(-1))[real].float().mean().item(),
            "greedy_agreement": (ours_tokens[:, 32:] == hf_tokens[:, 32:]).float().mean().item(),
            "greedy_identical": bool(torch.equal(ours_tokens, hf_tokens)),
            "baseline_attention_paths_max_diff": hf_paths.max().item(),
            "baseline_attention_paths_mean_diff": hf_paths.mean().item(),
            "baseline_attention_paths_top1_agreement": (sdpa_lp.argmax(-1) == hf_lp.argmax(-1))[real].float().mean().item(),
            "baseline_attention_paths_greedy_agreement": (sdpa_tokens[:, 32:] == hf_tokens[:, 32:]).float().mean().item(),
            "hf_timed_attention": "sdpa",
            "max_logprob_diff_vs_sdpa": (ours_lp - sdpa_lp).abs()[real].max().item(),
            "greedy_agreement_vs_sdpa": (ours_tokens[:, 32:] == sdpa_tokens[:, 32:]).float().mean().item(),
            **{f"{side}_decode_tokens_per_s": percentile(values, 50) for side, values in tokens_per_s.items()},
            **{f"{side}_decode_tokens_per_s_range": [min(values), max(values)] for side, values in tokens_per_s.items()},
            **{f"{side}_prefill_ms": 1e3 * percentile(speed[f"{side}_prefill_s"], 50) for side in ("adaptive", "hf")},
            "decode_new_tokens": args.new_tokens, "prefill_tokens": 32,
        },
    }
    record["metrics"]["decode_ratio"] = (record["metrics"]["adaptive_decode_tokens_per_s"]
                                         / record["metrics"]["hf_decode_tokens_per_s"])
    Path(args.out).write_text(json.dumps(record) + "\n")
    print(json.dumps(record["metrics"], indent=1), json.dumps(record["placement"]["layers_per_device"]))


if __name__ == "__main__":
    main()
