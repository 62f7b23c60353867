#!/usr/bin/env bash
# Whole `agentopd train` steps and a held-out eval with the real 135M model, for the token-path
# issue's before/after (RESULTS.md). Usage: bash benchmarks/token_path_steps.sh LABEL [CODE_DIR]
# CODE_DIR (default: this checkout) is put first on PYTHONPATH, so an older commit's worktree
# runs with the same venv. Writes benchmarks/out/token_path_steps/LABEL/<run>/ and <run>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
LABEL=${1:?label, e.g. before or after}
CODE=${2:-$PWD}
OUT=$PWD/benchmarks/out/token_path_steps/$LABEL
PY=$PWD/.venv/bin/python
COMMON=(--steps 2 --eval-every 0 --no-eval-at-start --ckpt-every 100 --seed 0 --warm-start-steps 0 --lr 5e-5)
mkdir -p "$OUT"
run() {  # name, then agentopd arguments
  local name=$1; shift
  rm -rf "${OUT:?}/$name"
  local t0=$SECONDS
  (cd /tmp && PYTHONPATH=$CODE "$PY" -m agentopd.cli "$@" > "$OUT/$name.log" 2>&1)
  echo "$name $((SECONDS - t0)) s" | tee -a "$OUT/wall.txt"
}
: > "$OUT/wall.txt"
run main-job train --out "$OUT/main-job" "${COMMON[@]}"
run gkd-anchor train --out "$OUT/gkd-anchor" "${COMMON[@]}" --loss gkd --teacher hf:smollm2-135m \
  --max-new-tokens 32 --max-turns 1
run dagger-python train --out "$OUT/dagger-python" "${COMMON[@]}" --env agentopd/Python-v0 --teacher oracle \
  --loss dagger --max-new-tokens 160
run eval-calc eval --env agentopd/Calc-v0 --model hf:smollm2-135m --n 32 --max-new-tokens 96 --out "$OUT/eval-calc"
if [ "${LOCKSTEP:-0}" = 1 ]; then  # the same with continuous batching off (new code only)
  run main-job-lockstep train --out "$OUT/main-job-lockstep" "${COMMON[@]}" --no-continuous-batching
  run eval-calc-lockstep eval --env agentopd/Calc-v0 --model hf:smollm2-135m --n 32 --max-new-tokens 96 \
    --no-continuous-batching --out "$OUT/eval-calc-lockstep"
fi
