"""The catalog's data is right (geometry matches the published sizes) and the matrix's options select rows."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel_matrix.catalog import count_parameters, family_architectures, generic_wrapper_families, load_catalog
from sentinel_core.families import FAMILIES

ROOT = Path(__file__).resolve().parent.parent
ENTRIES = load_catalog()


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.id for e in ENTRIES])
def test_geometry_matches_the_published_size(entry):
    config = entry.hf_config()
    if config.is_encoder_decoder:
        import torch
        from transformers import AutoModelForSeq2SeqLM

        with torch.device("meta"):
            n = sum(p.numel() for p in AutoModelForSeq2SeqLM.from_config(config).parameters())
        if config.model_type == "t5" and entry.config.get("tie_word_embeddings") is False and config.tie_word_embeddings:
            n += config.vocab_size * config.d_model  # transformers 5 ties every T5 head; the published one is its own
    else:
        n = count_parameters(config)
    assert abs(n / entry.size_in_params() - 1) < 0.05, f"{entry.id}: config has {n:,} parameters, label {entry.size}"


def test_every_family_has_a_converter_and_a_description():
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    families = {e.family for e in ENTRIES}
    wrapped = families - set(FAMILIES)  # no native converter: the generic gated wrapper runs them
    assert wrapped <= set(generic_wrapper_families()), "a family with no converter must be listed as wrapped"
    assert wrapped <= set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    assert not set(generic_wrapper_families()) & set(FAMILIES), "a wrapped family now has a converter"
    assert families <= set(family_architectures())
    for family in families:
        assert any(e.is_tiny for e in ENTRIES if e.family == family), f"{family} has no tiny synthetic entry"


def test_catalog_lists_the_support_page_models():
    ids = {e.id for e in ENTRIES}
    for wanted in ("distilgpt2", "gpt2-xl", "facebook/opt-350m", "EleutherAI/pythia-410m", "bigscience/bloom-1b1",
                   "meta-llama/Llama-2-7b-hf", "TinyLlama/TinyLlama-1.1B-step-50K-105b",
                   "openlm-research/open_llama_3b", "hf-internal-testing/tiny-random-LlamaForCausalLM",
                   "HuggingFaceTB/SmolLM2-135M-Instruct"):
        assert wanted in ids
    assert next(e for e in ENTRIES if e.id == "meta-llama/Llama-2-7b-hf").gated
    assert "package" in next(e for e in ENTRIES if e.id == "HuggingFaceTB/SmolLM2-135M-Instruct").sources


def collect(*args) -> list[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "pytest", "matrix/", "--collect-only", "-q", *args], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return [line for line in out.stdout.splitlines() if "::" in line]


def test_families_option_selects_only_that_family():
    rows = collect("--families", "opt")
    assert rows and all("[opt/" in r for r in rows)
    runnable = [r for r in rows if "/hub/" not in r]
    assert len(runnable) >= 6
    assert any("opt/facebook/opt-125m/synthetic/quality/cpu" in r for r in rows)


@pytest.mark.end_to_end
def test_weights_devices_checks_and_models_options():
    rows = collect("--families", "llama", "--weights", "package")
    assert rows and all("/package/" in r for r in rows)
    assert {r.split("/")[-2] for r in rows} == {"load", "infer", "quality"}  # mutation beyond tiny rows: --slow
    rows = collect("--models", "gpt2", "--checks", "quality", "--devices", "cpu,cuda", "--weights", "synthetic")
    assert any(r.endswith("/cuda]") for r in rows) and all("/quality/" in r for r in rows)
    assert not any("gpt2-xl" in r for r in collect("--families", "gpt2"))  # slow entries need --slow
    assert any("gpt2-xl" in r for r in collect("--families", "gpt2", "--slow"))


def test_mutation_rows_beyond_the_tiny_geometries_are_slow():
    from sentinel_matrix.conftest import Row

    entries = {e.id: e for e in load_catalog()}
    assert not Row(entries["tiny/llama"], "synthetic", "mutation", "cpu").slow
    assert Row(entries["gpt2"], "synthetic", "mutation", "cpu").slow
    assert not Row(entries["gpt2"], "synthetic", "quality", "cpu").slow
