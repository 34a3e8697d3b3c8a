"""Synthetic checkpoints: a real HF config with every parameter randomised, saved with save_pretrained.

HF's default init zeroes biases and sets norms to 1, which hides mapping bugs (a transposed bias or a
swapped norm looks right). Here every parameter, biases and norm weights included, gets random
values of a scale that keeps activations O(1).

Random weights alone give next-token distributions no trained model has: flat (untied heads: the
entropy is log V) or one-hot on the input token (tied embeddings whose residual stream is still mostly
the input embedding: BLOOM, Gemma). Against such a reference greedy agreement, KL and rank checks hold
by construction, so a wrong conversion passes. `calibrate_` therefore tunes two scalars per checkpoint,
measured on HF's own fp32 output: how much the blocks write into the residual stream (until the input
token no longer dominates the prediction) and the logit temperature (until the median entropy is
CALIBRATION_ENTROPY). What a quality row then measures about its reference is `reference_stats`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM
from transformers.pytorch_utils import Conv1D

from .errors import DiskSpaceError


# Random values are drawn in fp32, off bfloat16's grid: on values bf16 holds exactly, a converter that rounds
# weights through bf16 changes nothing and passes every row. Checkpoints are stored in fp32 (4 bytes a
# parameter): the catalog's big geometries are cut to two layers, the largest folder gpt-j-6b's at 3.2 GB;
# a full-depth bench checkpoint (Llama-2-7B) is 27 GB.


@torch.no_grad()
def randomise_(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)

    def normal(p: torch.Tensor, std: float, mean: float = 0.0) -> None:
        values = torch.randn(p.shape, generator=g, dtype=torch.float32) * std + mean
        p.copy_(values)

    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue  # tied weights are randomised once
            seen.add(id(p))
            if isinstance(module, nn.Embedding):
                # Logits of a tied head are h·E with |h| ~ sqrt(dim): this keeps their spread near a
                # trained model's (std ~4) instead of growing with the width.
                normal(p, 4.0 * p.shape[1] ** -0.5)
            elif p.dim() >= 2:
                fan_in = p.shape[0] if isinstance(module, Conv1D) else p.shape[1]
                normal(p, fan_in**-0.5)
            elif name == "weight":  # norm scales: around 1, never exactly 1
                normal(p, 0.2, 1.0)
            else:  # biases
                normal(p, 0.2)
    if isinstance(getattr(model, "final_logits_bias", None), torch.Tensor):  # BART's: a buffer, saved like a weight
        normal(model.final_logits_bias, 0.2)
    return model


# What a usable reference distribution looks like (a trained LM on text has a median next-token entropy
# of a few nats). A quality row whose HF reference falls outside these is inconclusive (sentinel_matrix/grading.py).
ENTROPY_RANGE = (1.0, 6.0)  # median entropy of HF's next-token distribution, nats
TOP1_PROB_MAX = 0.9  # median probability of HF's top token: above this the distribution is one-hot
INPUT_TOKEN_ARGMAX_MAX = 0.5  # share of positions whose argmax is the input token: above, it is an echo
# Calibration aims inside those ranges with room to spare.
CALIBRATION_ENTROPY = 3.0
CALIBRATION_INPUT_TOKEN_SHARE = 0.1
CALIBRATION_FILE = "sentinel_calibration.json"
RANDOMISATION = "calibrated-v3"  # v3: fp32 values off bf16's grid; part of the cache fingerprint: a new scheme never reuses old folders

# Parameters (last name component) that write into the residual stream: attention output and MLP down
# projections under the names transformers' decoders (and T5's "o") give them.
RESIDUAL_WRITERS = ("o", "o_proj", "out_proj", "c_proj", "dense", "fc2", "fc_out", "down_proj", "dense_4h_to_h", "wo", "w2")
# Sandwich-norm blocks (Gemma 3: post_feedforward_layernorm present) normalise each sublayer's output before the
# residual add, so scaling the projections changes nothing there: their post norms (1 + w) are what write.
# (Llama's post_attention_layernorm is the MLP's input norm; it counts only next to a post_feedforward one.)
SANDWICH_WRITERS = ("post_attention_layernorm", "post_feedforward_layernorm")


def reference_stats(logprobs: torch.Tensor, input_ids: torch.Tensor, real: torch.Tensor | None = None) -> dict:
    """Median entropy and top-1 probability of next-token distributions [.., V] (log-probs), and the share
    of positions whose argmax repeats the input token there; over `real` positions only when given."""
    logprobs = logprobs.float()
    entropy = -(logprobs.exp() * logprobs).sum(-1)
    top1 = logprobs.max(-1).values.exp()
    echo = (logprobs.argmax(-1) == input_ids).float()
    if real is not None:
        entropy, top1, echo = entropy[real], top1[real], echo[real]
    return {"median_entropy": round(entropy.median().item(), 4), "median_top1_prob": round(top1.median().item(), 4),
            "input_token_argmax_share": round(echo.mean().item(), 4)}


def degenerate_reason(stats: dict) -> str | None:
    """Why a reference distribution cannot tell a right conversion from a wrong one (None: it can)."""
    low, high = ENTROPY_RANGE
    if not low <= stats["median_entropy"] <= high:
        return f"HF's median next-token entropy {stats['median_entropy']:.2f} nats is outside [{low}, {high}]"
    if stats["median_top1_prob"] > TOP1_PROB_MAX:
        return f"HF's median top-1 probability {stats['median_top1_prob']:.3f} > {TOP1_PROB_MAX} (one-hot)"
    if stats["input_token_argmax_share"] > INPUT_TOKEN_ARGMAX_MAX:
        return (f"HF predicts the input token at {stats['input_token_argmax_share']:.0%} of positions "
                f"(> {INPUT_TOKEN_ARGMAX_MAX:.0%})")
    return None


def _probe(model, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randint(3, model.config.vocab_size, (2, 32), generator=g)


def _temperature_target(model) -> tuple[list[torch.Tensor], bool]:
    """The tensors whose common scale is the logit temperature, and whether they scale as 1 + w.

    The last norm before the LM head (weight and bias), found as the last norm-like module: logits scale with
    it exactly (up to an LM-head bias), and it is the one tensor calibration leaves off the 16-bit grid. A
    model without norms: the LM head itself."""
    head = model.get_output_embeddings()
    norms = [(name, m) for name, m in model.named_modules()
             if "norm" in type(m).__name__.lower() and getattr(m, "weight", None) is not None]
    if not norms:
        if head.weight is model.get_input_embeddings().weight:
            raise ValueError(f"{type(model).__name__}: tied embeddings and no norm to set the logit temperature with")
        return [p for p in (head.weight, getattr(head, "bias", None)) if p is not None], False
    # The final norm sits outside the layer list (OPT registers it before the layers); a post-LN model
    # without one ends in its last layer's last norm.
    # An embedding norm (BART's layernorm_embedding) comes before the layers: never the head's input.
    outside_layers = [m for name, m in norms if not re.search(r"\.\d+\.", name) and "embedding" not in name]
    norm = outside_layers[-1] if outside_layers else norms[-1][1]
    with torch.no_grad():  # Gemma-style norms scale by 1 + w: a zero weight does not zero the output
        saved = norm.weight.detach().clone()
        norm.weight.zero_()
        unit_offset = bool(norm(torch.randn(1, norm.weight.shape[0])).abs().max() > 0) and getattr(norm, "bias", None) is None
        norm.weight.copy_(saved)
    return [p for p in (norm.weight, getattr(norm, "bias", None)) if p is not None], unit_offset


@torch.no_grad()
def _scale_temperature(tensors: list[torch.Tensor], unit_offset: bool, factor: float) -> None:
    weight, *bias = tensors
    if unit_offset:
        weight.copy_((1.0 + weight) * factor - 1.0)
    else:
        weight.mul_(factor)
    for b in bias:
        b.mul_(factor)


@torch.no_grad()
def calibrate_(model: nn.Module, seed: int = 0) -> dict:
    """Residual gain, then logit temperature, as the module docstring says; returns what was set and measured."""
    model.eval()
    ids = _probe(model, seed)
    if model.config.is_encoder_decoder:  # the probe is the source and the target alike
        logits = lambda: model(input_ids=ids, decoder_input_ids=ids).logits.float()  # noqa: E731
    else:
        logits = lambda: model(ids).logits.float()  # noqa: E731
    writers = [p for name, p in model.named_parameters()
               if p.dim() == 2 and name.rsplit(".", 2)[-2] in RESIDUAL_WRITERS]
    unit_offset_writers = False
    if any(name.endswith("post_feedforward_layernorm.weight") for name, _ in model.named_parameters()):
        writers = [p for name, p in model.named_parameters() if name.rsplit(".", 2)[-2] in SANDWICH_WRITERS]
        unit_offset_writers = True  # Gemma's norms scale by 1 + w
    gain = 1.0
    stats = reference_stats(logits().log_softmax(-1), ids)
    # Doubling the blocks' writes halves the input embedding's share of the residual stream.
    while stats["input_token_argmax_share"] > CALIBRATION_INPUT_TOKEN_SHARE and writers and gain < 1024:
        for p in writers:
            _scale_temperature([p], unit_offset_writers, 2.0)  # p × 2 (Gemma's norms: 1 + p × 2)
        gain *= 2.0
        stats = reference_stats(logits().log_softmax(-1), ids)
    # Logits are linear in the temperature tensors, so the search runs on one forward's logits.
    base = logits()
    median_entropy = lambda t: reference_stats((base * t).log_softmax(-1), ids)["median_entropy"]  # noqa: E731
    low, high = 1e-3, 1e3
    for _ in range(40):  # entropy falls as the temperature factor grows
        mid = (low * high) ** 0.5
        low, high = (mid, high) if median_entropy(mid) > CALIBRATION_ENTROPY else (low, mid)
    temperature = (low * high) ** 0.5
    tensors, unit_offset = _temperature_target(model)
    _scale_temperature(tensors, unit_offset, temperature)
    return {"randomisation": RANDOMISATION, "residual_gain": gain, "logit_temperature": round(temperature, 6),
            "probe": list(ids.shape), **reference_stats(logits().log_softmax(-1), ids)}


def config_fingerprint(config, seed: int, calibrated: bool = True) -> str:
    import transformers

    scheme = {"randomisation": RANDOMISATION} if calibrated else {}
    payload = json.dumps({"config": config.to_dict(), "seed": seed, "transformers": transformers.__version__, **scheme},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def make_synthetic_checkpoint(config, folder: str | Path, seed: int = 0, calibrate: bool = True) -> Path:
    """Randomised `config` model saved to `folder` (fp32 safetensors) for loading with from_pretrained;
    calibrated (see calibrate_) unless `calibrate` is False, with what calibration measured in CALIBRATION_FILE."""
    folder = Path(folder)
    torch.manual_seed(seed)
    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    model = auto.from_config(config, dtype=torch.float32)
    randomise_(model, seed)
    calibration = calibrate_(model, seed) if calibrate else None
    folder.mkdir(parents=True, exist_ok=True)
    ensure_room(folder, sum(p.numel() * p.element_size() for p in model.parameters()))
    model.save_pretrained(folder)
    _declare_float32(folder / "config.json")
    if calibration is not None:
        (folder / CALIBRATION_FILE).write_text(json.dumps(calibration, indent=1) + "\n")
    return folder


def _declare_float32(config_file: Path) -> None:
    """save_pretrained names the first tensor's dtype (bfloat16 here), and from_pretrained would load the model
    in it: the checkpoint is an fp32 model whose values happen to fit in 16 bits."""
    config = json.loads(config_file.read_text())
    for key in ("dtype", "torch_dtype"):
        if key in config:
            config[key] = "float32"
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def ensure_room(folder: Path, needed_bytes: int) -> None:
    """One clear line before a checkpoint is written where it does not fit (not safetensors' traceback halfway)."""
    free = shutil.disk_usage(folder).free
    if free < needed_bytes * 1.05 + (64 << 20):
        raise DiskSpaceError(f"a synthetic checkpoint needs {needed_bytes / 1e9:.2f} GB in {folder.parent} and only "
                             f"{free / 1e9:.2f} GB is free: free space (`sentinel cache clean`) or point SENTINEL_CACHE "
                             f"at a bigger disk")


def checkpoint_intact(folder: Path) -> bool:
    """config.json and every safetensors file whole (each file's size is what its header says it holds)."""
    files = sorted(folder.glob("*.safetensors"))
    if not (folder / "config.json").is_file() or not files:
        return False
    for file in files:
        try:
            with open(file, "rb") as f:
                header_len = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(header_len))
        except (OSError, ValueError):
            return False
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        if file.stat().st_size != 8 + header_len + end:
            return False
    return True


def cached_synthetic_checkpoint(config, cache_dir: str | Path, seed: int = 0, calibrate: bool = True) -> Path:
    """Like make_synthetic_checkpoint, reusing a folder made earlier for the same config, seed, scheme and
    transformers (one folder per distinct config, whatever the names it is asked for under). A folder found
    damaged (a truncated file) is made again."""
    folder = Path(cache_dir) / f"{config.model_type}-{config_fingerprint(config, seed, calibrate)}"
    if folder.exists() and not checkpoint_intact(folder):
        warnings.warn(f"{folder} is damaged (a truncated or missing file): making it again", stacklevel=2)
        shutil.rmtree(folder)
    if not folder.exists():
        # A private folder renamed into place: concurrent makers (xdist workers) never see half a checkpoint.
        tmp = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            make_synthetic_checkpoint(config, tmp, seed, calibrate)
            tmp.rename(folder)
        except OSError:
            if not checkpoint_intact(folder):
                raise
            # else another process finished first; the checkpoints are identical
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder
