#!/usr/bin/env bash
# Every measurement in RESULTS.md, one after another (so timings do not contend for the 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p benchmarks/out
bash benchmarks/base_success.sh 50 > benchmarks/out/base_success.log 2>&1
.venv/bin/python benchmarks/foundation.py > benchmarks/out/foundation.json 2> benchmarks/out/foundation.log
bash benchmarks/default_teacher.sh > benchmarks/out/default_teacher.log 2>&1
bash benchmarks/opd_vs_sft_all.sh > benchmarks/out/opd_vs_sft.log 2>&1
bash benchmarks/opd_vs_sft_long.sh calc 0 10 > benchmarks/out/opd_vs_sft_long.log 2>&1
.venv/bin/python benchmarks/packing_step.py > benchmarks/out/packing_step.log 2>&1
