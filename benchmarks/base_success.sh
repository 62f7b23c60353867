#!/usr/bin/env bash
# Base success of the embedded SmolLM2-135M-Instruct per family and per turn (test split, seed 0,
# greedy). Usage: bash benchmarks/base_success.sh [N_TASKS]   (default 50 per family)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-50}
for env in agentopd/Calc-v0 agentopd/Files-v0 agentopd/SQL-v0 agentopd/Python-v0; do
  name=$(echo "$env" | sed 's#agentopd/##; s#-v0##' | tr 'A-Z' 'a-z')
  .venv/bin/agentopd eval --env "$env" --model hf:smollm2-135m --split test --n "$N" --seed 0 \
    --temperature 0 --max-new-tokens 192 --out "benchmarks/out/base-$name"
done
