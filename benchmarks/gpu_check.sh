#!/usr/bin/env bash
# The GPU check (issue 12; see benchmarks/gpu_check.py). Here, once: bash benchmarks/gpu_check.sh prepare
# On the GPU machine (the device `run` tool, carrying .gpu_check):
#   bash benchmarks/gpu_check.sh            # SmolLM2-1.7B's shape, random weights, bf16; JSON to $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ "${1:-}" = prepare ] && PY=.venv/bin/python
if [ "${1:-}" = prepare ]; then exec "$PY" benchmarks/gpu_check.py --prepare; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 420 "$PY" benchmarks/gpu_check.py --out "${OUT:-benchmarks/out/gpu_check}" "$@"
