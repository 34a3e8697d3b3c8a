"""The bench check of an encoder-decoder: the encoder's prefill (source tokens at batch 1 and 8) and the decoder's
greedy tokens/s, the adaptive model against HF eager and SDPA in interleaved repeats (bench.measure), and the same
model with half of every kind of attention's heads pruned. Keys as bench_metrics.py names them; an encoder-decoder
has no CUDA-graph decode of its own and HF's static-cache compile is not timed for it (both recorded as such)."""

from __future__ import annotations

import gc

import torch

from sentinel_core import load_adaptive_model, load_baseline_model
from sentinel_core.seq2seq import KINDS

from ..timing import timed_load
from .bench import (BATCHES, DECODE_PROMPT, ENCODER_DECODER_BENCH, PRUNE_FRACTION, Side, load_sdpa, measure, param_mb,
                    read_bandwidth, rounded)
from .pair import CheckFailed


class Seq2SeqSide(Side):
    """Prefill: the encoder over `prefill_len` source tokens. Decode: greedy targets of `new_tokens` tokens for a
    source of DECODE_PROMPT tokens, every row to full length."""

    @torch.no_grad()
    def prefill(self, batch: int = 1):
        ids = self.prefill_ids[batch]
        return self.model.encode(ids) if self.adaptive else self.model.get_encoder()(input_ids=ids)

    @torch.no_grad()
    def decode(self, batch: int, **kw):
        ids = self.prompts[batch]
        if self.adaptive:
            return self.model.generate(ids, max_new_tokens=self.new_tokens, eos_token_id=[], **kw)
        return self.model.generate(ids, max_new_tokens=self.new_tokens, min_new_tokens=self.new_tokens,
                                   do_sample=False, num_beams=1, use_cache=True, **kw)


def prune_half_of_each_kind(model) -> dict:
    plan = {kind: {layer: list(range(int(model.spec.heads(kind) * PRUNE_FRACTION)))
                   for layer in range(model.spec.layers(kind))} for kind in KINDS}
    model.prune_heads(plan)
    return plan


def run_seq2seq_bench(folder, device: str, dtype: str, benchmark=None, compiled: bool = False) -> dict:
    rounds = 3 if device == "cuda" else 2
    hf, hf_s, _ = timed_load(
        lambda: load_baseline_model(folder, device=device, dtype=dtype, attn_implementation="eager"), device)
    hf_sdpa, sdpa_s, sdpa_reason = load_sdpa(folder, device, dtype)
    adaptive, ad_s, _ = timed_load(lambda: load_adaptive_model(folder, device=device, dtype=dtype), device)
    spec = adaptive.spec
    max_positions = spec.max_positions or 2048  # T5's relative buckets have no table to run past
    side = lambda model, ours: Seq2SeqSide(model, device, spec.vocab_size - 1, max_positions, ours, rounds)  # noqa: E731
    ours, theirs = side(adaptive, True), side(hf, False)
    sides = {"": ours, "baseline_": theirs}
    metrics = {"load_s": ad_s, "baseline_load_s": hf_s, "prefill_tokens": ours.prefill_len, "prefill": "encoder",
               "prefill_batch_sizes": [1, 8], "decode_prompt_tokens": DECODE_PROMPT,
               "decode_new_tokens": ours.new_tokens, "batch_sizes": list(BATCHES),
               "attn_baseline": getattr(hf.config, "_attn_implementation", None), "adaptive_path": adaptive.adaptive_path,
               "weights_mb": param_mb(adaptive),
               "graph_unavailable": "the encoder-decoder decodes eagerly (no CUDA graph of its own)",
               "baseline_compiled_unavailable": "not timed for encoder-decoders"}
    if hf_sdpa is not None:
        sides["baseline_sdpa_"] = side(hf_sdpa, False)
        metrics["baseline_sdpa_load_s"] = sdpa_s
    else:
        metrics["baseline_sdpa_unavailable"] = sdpa_reason
    if dtype == "float32":  # the timed paths must be right: in fp32 both give the same greedy tokens
        for b in BATCHES:
            a, h = ours.decode(b), theirs.decode(b)
            agreement = (a[:, 1:] == h[:, 1:]).float().mean().item() if a.shape == h.shape else 0.0
            metrics["hf_vs_adaptive_agreement" + ("" if b == 1 else f"_b{b}")] = agreement
            if agreement < 1.0:
                raise CheckFailed(f"HF eager decode (batch {b}) gave other greedy tokens than the adaptive decode "
                                  f"({agreement:.0%} agree) in fp32", metrics)
    metrics.update(measure(sides))
    metrics.update(baseline_peak_mem_mb=theirs.peak_mem_mb(), peak_mem_mb=ours.peak_mem_mb())
    del hf, hf_sdpa, theirs, sides
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    metrics.update(read_bandwidth(device))

    metrics["pruned_heads_per_kind"] = {kind: sum(map(len, layers.values()))
                                        for kind, layers in prune_half_of_each_kind(adaptive).items()}
    pruned = measure({"pruned_": ours})
    metrics.update(pruned, pruned_fraction=PRUNE_FRACTION)
    for key in ("decode_tokens_per_s", "decode_b8_tokens_per_s"):
        metrics[f"pruned_{key.removesuffix('_tokens_per_s')}_speedup"] = pruned[f"pruned_{key}"] / metrics[key]
    for key in ("prefill", "prefill_b8"):
        metrics[f"pruned_{key}_speedup"] = metrics[f"{key}_ms"] / pruned[f"pruned_{key}_ms"]
    return rounded(metrics)


ENCODER_DECODER_BENCH["run"] = run_seq2seq_bench
