"""The project's vocabulary, each name defined once and read everywhere: the core, the matrix, the reports and
the command line. Torch-free, so the report and the CLI read it without importing torch.
"""

from __future__ import annotations

# How a model is rebuilt: a family converter's gated decoder, or HF's own modules with gates (generic.py).
NATIVE, GENERIC_WRAPPER = "native", "generic-wrapper"
ADAPTIVE_PATHS = (NATIVE, GENERIC_WRAPPER)

# Dtypes: the name torch gives each, its short label, and what users may type for it.
FLOAT32, BFLOAT16, FLOAT16 = "float32", "bfloat16", "float16"
DTYPE_SHORT = {FLOAT32: "fp32", BFLOAT16: "bf16", FLOAT16: "fp16"}
DTYPE_ALIASES = {**{dtype: dtype for dtype in DTYPE_SHORT}, **{short: dtype for dtype, short in DTYPE_SHORT.items()}}
HALF_PRECISION = (BFLOAT16, FLOAT16)

# Families rebuilt as the gated encoder-decoder (seq2seq.py) rather than the gated decoder.
ENCODER_DECODER_FAMILIES = ("t5", "bart", "mbart", "marian")

# What users call a family, by its models' names, for the model_type that holds them (lower case).
FAMILY_ALIASES = {"pythia": "gpt_neox", "neox": "gpt_neox", "gpt-neox": "gpt_neox", "llama2": "llama",
                  "llama-2": "llama", "llama3": "llama", "llama-3": "llama", "tinyllama": "llama", "smollm": "llama",
                  "smollm2": "llama", "open_llama": "llama", "distilgpt2": "gpt2", "gpt-2": "gpt2", "gpt-neo": "gpt_neo",
                  "gpt-j": "gptj", "qwen": "qwen2", "qwen2.5": "qwen2", "phi-2": "phi", "phi-3": "phi3",
                  "gemma-3": "gemma3_text", "falcon-rw": "falcon", "bloomz": "bloom"}

CPU, CUDA = "cpu", "cuda"
DEVICES = (CPU, CUDA)

# Where a row's weights come from (sentinel_matrix/sources/); the first two are trained weights.
HUB, PACKAGE, SYNTHETIC = "hub", "package", "synthetic"
WEIGHT_SOURCES = (HUB, PACKAGE, SYNTHETIC)
REAL_WEIGHTS = (HUB, PACKAGE)

# The matrix's built-in checks (sentinel_matrix/registry.py says what each runs; a plugin may add its own).
LOAD, INFER, QUALITY, MUTATION, PRUNE, BENCH = "load", "infer", "quality", "mutation", "prune", "bench"
PROFILE = "profile"

# A row's outcome, as its record says it. `error`: the machine stopped it (disk, memory, permissions:
# sentinel_matrix/faults.py), which says nothing about the model either way.
PASSED, FAILED, SKIPPED, INCONCLUSIVE, ERROR = "passed", "failed", "skipped", "inconclusive", "error"
OUTCOMES = (PASSED, FAILED, SKIPPED, INCONCLUSIVE, ERROR)

# How head importance is scored (importance.py); random is the control.
IMPORTANCE_METHODS = ("gradient", "ablation", "magnitude", "random")


def short_dtype(dtype: str) -> str:
    return DTYPE_SHORT.get(dtype, dtype)
