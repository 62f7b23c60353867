#!/usr/bin/env bash
# Seconds per GKD training step, TRL 1.16 GKDTrainer vs agentopd train --loss gkd, on calc with
# the real SmolLM2-135M (see benchmarks/trl_anchor.py). Installs TRL into benchmarks/.venv-trl on
# first use. Usage: bash benchmarks/trl_anchor.sh [STEPS] [more trl_anchor.py flags]
# (writes benchmarks/out/trl_anchor/result.json and prints a table).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-2}
.venv/bin/python benchmarks/trl_anchor.py --steps "$STEPS" --out benchmarks/out/trl_anchor "${@:2}"
