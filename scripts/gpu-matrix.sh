#!/usr/bin/env bash
# On a CUDA machine (used with the device tool): CUDA tests, the CUDA matrix rows and the benchmarks.
# Usage: bash scripts/gpu-matrix.sh OUTDIR [matrix|bench-tinyllama|bench-rest|bench-7b|bench|prepare|profile|recover|receive|real|verdicts|all] [ARGS]
#   matrix           tests/test_cuda.py, every family's default CUDA rows, then #6's real geometries (time permitting)
#   bench-tinyllama  TinyLlama geometry, full depth, with the compiled decode path (--bench-compiled)
#   bench-rest       gpt2-medium, opt-350m, pythia-410m, bloom-560m (full depth) and every tiny row
#   bench-7b         Llama-2-7B geometry, full depth (a 27 GB fp32 synthetic checkpoint is made first):
#                    where decode reads enough bytes, and prefill does enough FLOPs, for pruning to show
#   bench MODELS     bench rows of the named catalog entries (full depth), with the adaptive compiled path
#   prepare MODEL    make a full-depth synthetic checkpoint only (Llama-2-7B's takes minutes): a bench call
#                    made while the machine is still warm finds it in SENTINEL_CACHE
#   profile MODELS   the profile rows of the named entries (kernels, busy time, share of the limit per decode step)
#   recover          the records and logs of the last call on this (still warm) machine, into OUTDIR: every call keeps
#                    a copy in /tmp/sentinel-last-out, for when its own files did not come back
#   receive          park the files under gpu_assets/ in /tmp/sentinel-assets (they outlive the call while the
#                    machine stays warm): real weights travel in parts (`python -m sentinel_matrix.sources split`)
#   real [DTYPES]    join the parts (sha256 checked), then load/infer/quality/mutation rows of the packaged
#                    real weights on CUDA in each dtype (default bfloat16,float32), and in float32 the prune rows
#   seq2seq [DTYPES] the encoder-decoders: tests/test_cuda.py's encoder-decoder test, then in each dtype (default
#                    "bfloat16 float32") every t5/bart/mbart/marian entry's load/infer/quality/mutation rows (--slow
#                    included), then their bench rows (full depth), as time permits (SEQ2SEQ_S per dtype)
#   fused [MODELS]   tests/test_fused_decode.py compiled (the kernels on the GPU), then the profile rows and then the
#                    bench rows of MODELS (default: the six seed geometries, full depth) in bf16 (FUSED_TESTS=0: no tests)
#                    Rows already recorded at this tree (the committed results/) are left out (--skip-current), so a
#                    call cut short resumes in the next one once its records are committed.
#   split MODEL [GIB] scripts/split-parity.py: MODEL at full depth (synthetic bf16) split across GPU 0 (GIB of it,
#                    default 22) and the CPU, against HF split the same way, with both sides' speed
#   verdicts DTYPE   load, infer and quality rows in DTYPE (bfloat16 | float32, TF32 off) for every tiny entry and
#                    the real geometries the verdicts are held to, then their mutation rows (about a minute each on
#                    an H100; VERDICT_S in all), then the rest of the catalog's load/infer/quality rows (REST_S)
#                    (CUDA_TESTS=0: without tests/test_cuda.py first)
# verdicts, real, seq2seq and fused leave out the rows already recorded at this tree (--skip-current): a call cut
# short resumes in the next one once its records are committed.
# Records name their commit: before sending the tree, write `git rev-parse HEAD` into SENTINEL_COMMIT
# (git ignores it; name it in the device tool's carry).
set -uo pipefail
out="${1:?output folder}"
part="${2:-all}"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 SENTINEL_CACHE="${SENTINEL_CACHE:-/tmp/sentinel-cache}"
# The device tool empties OUTDIR at the next call, and a call's files can fail to come back: the machine keeps a copy
# of what this call wrote (while it stays warm), which `recover` returns.
keep=/tmp/sentinel-last-out
if [[ $part == recover ]]; then
  cp -a "$keep/." "$out/" 2>/dev/null && ls -l "$out" || echo "nothing kept: this machine is not the one that ran"
  exit 0
fi
trap 'rm -rf "$keep"; mkdir -p "$keep" && cp -a "$out/." "$keep/"' EXIT
run() { python3 -m pytest -q -p no:cacheprovider "$@" 2>&1 | grep -v "Warning\|warn(" | tail -15; }
# CUDA rows of synthetic weights within SECONDS, into RESULTS, leaving out those already current: SECONDS RESULTS [ARGS]
timed_rows() {
  local limit=$1 results=$2; shift 2
  timeout "$limit" python3 -m pytest -q -p no:cacheprovider matrix/ --devices cuda --weights synthetic --skip-current \
    --results "$results" "$@" 2>&1 | grep -v "Warning\|warn(" | tail -4
}
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name(0))"
# The machine has no network: dependencies it may lack travel as wheels in gpu_assets/.
python3 -c "import psutil, cpuinfo" 2>/dev/null || python3 -m pip install -q --no-deps gpu_assets/psutil-*.whl gpu_assets/py_cpuinfo-*.whl
python3 -c "import accelerate" 2>/dev/null || python3 -m pip install -q --no-deps gpu_assets/accelerate-*.whl
# Records name the code that measured them (sentinel_matrix/records.py): a copy without .git needs SENTINEL_COMMIT
# (the commit's sha, shipped beside the tree); the source hash is read from the files either way.
[[ -e .git || -s SENTINEL_COMMIT ]] || echo "warning: no .git and no SENTINEL_COMMIT: records will have git_sha null" >&2
python3 -c "from sentinel_matrix.records import git_sha, source_hash; print('commit', git_sha(), 'source hash', source_hash())"
if [[ $part == matrix || $part == all ]]; then
  run tests/test_cuda.py
  run matrix/ --devices cuda --weights synthetic,package --checks load,infer,quality --results "$out/h200-matrix.jsonl"
  # The real geometries of the families added in #6 (slow entries, 2 layers each), as time permits.
  timeout "${SLOW_S:-240}" python3 -m pytest -q -p no:cacheprovider matrix/ --devices cuda --weights synthetic \
    --checks load,infer,quality --results "$out/h200-matrix.jsonl" \
    --models "microsoft/phi-2,microsoft/Phi-3-mini-4k-instruct,tiiuae/falcon-7b,google/gemma-2b,Qwen/Qwen2-0.5B,stabilityai/stablelm-2-1_6b,mistralai/Mistral-7B-v0.1,EleutherAI/gpt-j-6b" \
    2>&1 | tail -5
fi
if [[ $part == bench-tinyllama || $part == all ]]; then
  run matrix/ --devices cuda --checks bench --weights synthetic --bench-compiled \
    --models "TinyLlama/TinyLlama-1.1B-step-50K-105b" --results "$out/h200-bench.jsonl"
fi
if [[ $part == bench-rest || $part == all ]]; then
  run matrix/ --devices cuda --checks bench --weights synthetic \
    --models "gpt2-medium,facebook/opt-350m,EleutherAI/pythia-410m,bigscience/bloom-560m,tiny/*" \
    --results "$out/h200-bench.jsonl"
fi
if [[ $part == bench-7b ]]; then
  run matrix/ --devices cuda --checks bench --weights synthetic --models "meta-llama/Llama-2-7b-hf" \
    --results "$out/h200-bench.jsonl"
fi
if [[ $part == bench ]]; then
  run matrix/ --devices cuda --checks bench --weights synthetic --bench-compiled --models "${3:?models}" \
    --results "$out/h200-bench.jsonl"
fi
if [[ $part == prepare ]]; then
  python3 -c "import sys, time; from sentinel_matrix.catalog import load_catalog; from sentinel_matrix.sources import synthetic_checkpoint
t = time.time(); entry = next(e for e in load_catalog() if e.id == sys.argv[1])
print(synthetic_checkpoint(entry, full_depth=True), round(time.time() - t), 's')" "${3:?model}" 2>&1 | tail -1
fi
if [[ $part == profile ]]; then
  run matrix/ --devices cuda --checks profile --weights synthetic --models "${3:?models}" --results "$out/gpu-bench.jsonl"
fi
VERDICT_MODELS="tiny/*,gpt2-medium,facebook/opt-350m,EleutherAI/pythia-410m,bigscience/bloom-560m,TinyLlama/TinyLlama-1.1B-Chat-v1.0,meta-llama/Llama-2-7b-hf,google/gemma-2b,EleutherAI/gpt-j-6b"
if [[ $part == verdicts ]]; then
  dtype="${3:-bfloat16}"
  [[ $dtype == bfloat16 && ${CUDA_TESTS:-1} == 1 ]] && run tests/test_cuda.py
  # The seconds-long rows first, then the minute-long mutation rows: a call cut short has recorded the most verdicts.
  verdict_rows() { timed_rows "$1" "$out/h200-$dtype.jsonl" --cuda-dtype "$dtype" "${@:2}"; }
  end=$((SECONDS + ${VERDICT_S:-420}))
  verdict_rows "${VERDICT_S:-420}" --checks load,infer,quality --models "$VERDICT_MODELS"
  (( end > SECONDS )) && verdict_rows $((end - SECONDS)) --checks mutation --models "$VERDICT_MODELS"
  verdict_rows "${REST_S:-120}" --slow --checks load,infer,quality
fi
if [[ $part == receive || $part == real ]]; then
  mkdir -p /tmp/sentinel-assets && cp -r gpu_assets/. /tmp/sentinel-assets/ 2>/dev/null; ls /tmp/sentinel-assets
fi
if [[ $part == real ]]; then
  python3 -c "import gguf" 2>/dev/null || python3 -m pip install -q --no-deps /tmp/sentinel-assets/gguf-*.whl
  python3 -m sentinel_matrix.sources assemble /tmp/sentinel-assets || exit 1
  models=$(python3 -c "from sentinel_matrix.sources import PACKAGED, packaged_gguf_path as p; print(','.join(i for i, g in PACKAGED.items() if p(g)))")
  for dtype in ${3:-bfloat16 float32}; do
    checks=load,infer,quality,mutation
    [[ $dtype == float32 ]] && checks=$checks,prune  # pruning curves once, in fp32
    run matrix/ --devices cuda --weights package --cuda-dtype "$dtype" --checks $checks --skip-current \
      --models "$models" --results "$out/h200-$dtype.jsonl"
  done
fi
if [[ $part == quality-rows ]]; then  # re-grade named rows: bash scripts/gpu-matrix.sh OUT quality-rows MODELS
  run matrix/ --devices cuda --weights synthetic --checks quality --models "${3:?models}" --results "$out/h200-matrix.jsonl"
fi
if [[ $part == seq2seq ]]; then
  run tests/test_cuda.py -k encoder_decoder
  for dtype in ${3:-bfloat16 float32}; do  # the default rows first (tiny and small geometries, mutation on the tiny)
    timed_rows "${SEQ2SEQ_S:-150}" "$out/h200-$dtype.jsonl" --cuda-dtype "$dtype" --families t5,bart,mbart,marian \
      --checks load,infer,quality,mutation
  done
  timed_rows "${SEQ2SEQ_BENCH_S:-120}" "$out/h200-bench.jsonl" --checks bench \
    --models "${4:-t5-small,google/flan-t5-small,facebook/bart-base,Helsinki-NLP/opus-mt-en-de}"
  for dtype in ${3:-bfloat16 float32}; do  # then the large geometries, as time permits
    timed_rows "${SEQ2SEQ_SLOW_S:-120}" "$out/h200-$dtype.jsonl" --slow -m slow --cuda-dtype "$dtype" \
      --families t5,bart,mbart,marian --checks load,infer,quality,mutation
  done
fi
SEED_GEOMETRIES="TinyLlama/TinyLlama-1.1B-step-50K-105b,gpt2-medium,facebook/opt-350m,EleutherAI/pythia-410m,bigscience/bloom-560m,meta-llama/Llama-2-7b-hf"
if [[ $part == fused ]]; then
  IFS=, read -ra models <<< "${3:-$SEED_GEOMETRIES}"
  big=meta-llama/Llama-2-7b-hf  # its full-depth checkpoint takes ~2 minutes to make: on the last 6 cores, meanwhile
  small=()
  for model in "${models[@]}"; do [[ $model == "$big" ]] || small+=("$model"); done
  prepare=
  if (( ${#small[@]} < ${#models[@]} )); then
    cores=$(nproc); pin=(); (( cores >= 12 )) && pin=(taskset -c $((cores - 6))-$((cores - 1)))
    OMP_NUM_THREADS=6 "${pin[@]}" bash "$0" "$out" prepare "$big" > "$out/prepare.log" 2>&1 & prepare=$!
  fi
  [[ ${FUSED_TESTS:-1} == 1 ]] && run tests/test_fused_decode.py  # FUSED_TESTS=0: the rows only
  # The profile rows first (under a minute each), then the bench rows (minutes each: HF's compiled baseline), the
  # 7B's first while its checkpoint is on this machine. --skip-current also leaves out what this call already did.
  rows() { run matrix/ --devices cuda --cuda-dtype bfloat16 --weights synthetic --results "$out/gpu-bench.jsonl" \
    --skip-current "$@"; }
  (( ${#small[@]} )) && rows --checks profile --models "$(IFS=,; echo "${small[*]}")"
  [[ -n $prepare ]] && { wait $prepare; tail -1 "$out/prepare.log"; rows --checks profile,bench --models "$big"; }
  for model in "${small[@]}"; do  # one model at a time: each row's record lands before the next starts
    rows --checks bench --models "$model"
  done
fi
if [[ $part == split ]]; then
  PYTHONPATH=. python3 scripts/split-parity.py "${3:?model}" "$out/split.jsonl" --gpu-gib "${4:-22}" 2>&1 \
    | grep -v "Warn\|warn\|Loading weights\|Writing model" | tail -40
fi
