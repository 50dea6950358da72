#!/usr/bin/env bash
# GPU check (one prepared script): decode vs HBM roofline, train-step MFU, peak memory.
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
XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9} \
  $PY benchmarks/gpu_check.py --out "$OUT/gpu_check.json" 2>&1 | tee "$OUT/gpu_check.log"
