#!/usr/bin/env bash
# GPU check (one prepared script): the shrunk paper path (configs/qwen3_hotpotqa.py through
# cold start, 2 RL steps and evaluate, on this machine's devices), then decode vs the HBM
# roofline, train-step MFU and peak memory on a random Qwen3-0.6B-shaped model.
# Usage on a GPU machine:  bash benchmarks/gpu_check.sh [OUT_DIR]
#        dry run anywhere: bash benchmarks/gpu_check.sh --dry-run
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
if [ "${1:-}" = "--dry-run" ]; then
  exec $PY benchmarks/gpu_check.py --dry-run
fi
OUT=${1:-${OUT:-.}}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
SEEKJAX_PAPER_PATH_ON=accelerator $PY -m pytest -q -x tests/test_paper_path.py \
  -k qwen3_hotpotqa -p no:cacheprovider 2>&1 | tee "$OUT/paper_path.log" \
  || echo "paper path: FAILED (see $OUT/paper_path.log); going on to the throughput figures"
XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9} \
  $PY benchmarks/gpu_check.py --out "$OUT/gpu_check.json" 2>&1 | tee "$OUT/gpu_check.log"
