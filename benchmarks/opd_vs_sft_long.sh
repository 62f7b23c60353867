#!/usr/bin/env bash
# Longer runs of the core benchmark: continue finished 3-update runs of benchmarks/opd_vs_sft.sh
# to STEPS updates (default 10), one family and seed, from their step-3 checkpoints.
# The learning rate is constant and each step's tasks and sampling seed depend only on (seed,
# step), so continuing with --resume trains on the same tasks with the same schedule as a fresh
# STEPS-update run would. Outputs: benchmarks/out/opd_vs_sft_long/<family>/<method>-seed<seed>.
#
# Usage: [METHODS="sft reverse_kl_pg gkd"] bash benchmarks/opd_vs_sft_long.sh [FAMILY] [SEED] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
FAM=${1:-calc}
SEED=${2:-0}
STEPS=${3:-10}
src=benchmarks/out/opd_vs_sft/$FAM
root=benchmarks/out/opd_vs_sft_long/$FAM
mkdir -p "$root"
A=".venv/bin/agentopd"
[ -e "$root/base-eval" ] || ln -s "../../opd_vs_sft/$FAM/base-eval" "$root/base-eval"
timed() { /usr/bin/time -a -o "$root/times.txt" -f "$1 wall_s=%e cpu_s=%U max_rss_kb=%M" "${@:2}"; }

for method in ${METHODS:-sft reverse_kl_pg gkd}; do
  out="$root/$method-seed$SEED"
  [ -f "$out/latest" ] && [ "$(cat "$out/latest")" = "step_$STEPS" ] && continue
  if [ ! -f "$out/latest" ]; then
    from="$src/$method-seed$SEED"
    [ -f "$from/latest" ] || { echo "no finished run at $from: run benchmarks/opd_vs_sft.sh first" >&2; exit 1; }
    mkdir -p "$out"
    cp -r "$from/$(cat "$from/latest")" "$from/latest" "$from/metrics.jsonl" "$out/"
    # Same settings as the short run; configs written before `loss` was saved resolved carry an
    # extra `resolved_loss` key, which is dropped here.
    .venv/bin/python -c "import json,sys; c=json.load(open(sys.argv[1])); c['loss']=c.pop('resolved_loss', c['loss']); json.dump(c, open(sys.argv[2], 'w'), indent=2)" \
      "$from/config.json" "$out/short_config.json"
  fi
  timed "$method seed=$SEED steps=$STEPS" $A train --config "$out/short_config.json" --steps "$STEPS" --resume \
      --eval-every "$STEPS" --ckpt-every 1 --out "$out"
  $A report "$out" > /dev/null
done
