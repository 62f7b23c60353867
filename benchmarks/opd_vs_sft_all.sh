#!/usr/bin/env bash
# The core benchmark as run for RESULTS.md, ordered so that a cut-short run still covers both
# families: calc seed 0, sql seed 0, then calc seeds 1 and 2. Student runs: 3 updates each.
set -euo pipefail
cd "$(dirname "$0")/.."
bash benchmarks/opd_vs_sft.sh agentopd/Calc-v0 "0" 20 3
MAX_NEW=112 bash benchmarks/opd_vs_sft.sh agentopd/SQL-v0 "0" 10 3
bash benchmarks/opd_vs_sft.sh agentopd/Calc-v0 "1 2" 20 3
