#!/usr/bin/env bash
# On a CUDA machine (used with the device tool): CUDA tests, the CUDA matrix rows and the benchmarks.
# Usage: bash scripts/gpu-matrix.sh OUTDIR [bench-models]
set -uo pipefail
out="${1:?output folder}"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 SENTINEL_CACHE="${SENTINEL_CACHE:-/tmp/sentinel-cache}"
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name(0))"
python3 -m pytest tests/test_cuda.py -q -p no:cacheprovider 2>&1 | tail -15
python3 -m pytest matrix/ --devices cuda --slow --weights synthetic,package --results "$out/h200-matrix.jsonl" -q -p no:cacheprovider 2>&1 | tail -15
