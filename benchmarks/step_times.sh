#!/usr/bin/env bash
# Step-time split of DAgger (calc, python) and GKD (calc) with the real 135M model: 2 steps of
# 8 episodes each, no held-out eval. Usage: bash benchmarks/step_times.sh LABEL
# (writes benchmarks/out/step_times/LABEL/<run>/metrics.jsonl; summarize.py step_times prints it).
set -euo pipefail
cd "$(dirname "$0")/.."
LABEL=${1:?label, e.g. before or after}
OUT=benchmarks/out/step_times/$LABEL
COMMON=(--steps 2 --episodes-per-step 8 --eval-every 0 --no-eval-at-start --ckpt-every 100 --seed 0 --warm-start-steps 0 --lr 5e-5)
run() {  # name, then train flags
  local name=$1; shift
  rm -rf "$OUT/$name"
  .venv/bin/python -m agentopd.cli train --out "$OUT/$name" "${COMMON[@]}" "$@" > "$OUT/$name.log" 2>&1
  echo "$name done"
}
mkdir -p "$OUT"
run dagger-calc --env agentopd/Calc-v0 --teacher oracle --loss dagger
run dagger-python --env agentopd/Python-v0 --teacher oracle --loss dagger --max-new-tokens 160
run gkd-calc --env agentopd/Calc-v0 --teacher hf:smollm2-135m --loss gkd
