#!/usr/bin/env bash
# The core benchmark (issue 3): same student, same teacher, same number of student updates:
#   (a) SFT on teacher demonstrations, (b) OPD with reverse_kl_pg, (c) GKD, (d) DAgger (oracle).
# The white-box teacher is made on this CPU: SmolLM2-135M trained with --loss sft --teacher oracle.
# Usage: bash benchmarks/opd_vs_sft.sh ENV SEEDS TEACHER_STEPS STUDENT_STEPS
#   e.g. bash benchmarks/opd_vs_sft.sh agentopd/Calc-v0 "0 1 2" 150 40
set -euo pipefail
cd "$(dirname "$0")/.."
ENV=${1:-agentopd/Calc-v0}
SEEDS=${2:-0}
TEACHER_STEPS=${3:-150}
STEPS=${4:-40}
name=$(echo "$ENV" | sed 's#agentopd/##; s#-v0##' | tr 'A-Z' 'a-z')
root=benchmarks/out/opd_vs_sft/$name
mkdir -p "$root"
A=".venv/bin/agentopd"
COMMON="--env $ENV --episodes-per-step 8 --max-new-tokens 128 --eval-every 10 --eval-n 50 --keep-checkpoints 1"

# 1. the teacher: SFT on oracle demonstrations until it solves most training tasks
if [ ! -f "$root/teacher/latest" ]; then
  $A train $COMMON --teacher oracle --loss sft --steps "$TEACHER_STEPS" --lr 1e-4 --ckpt-every 25 \
     --out "$root/teacher" --seed 1234
fi
T="$root/teacher/$(cat "$root/teacher/latest")"
$A eval --env "$ENV" --model "hf:$T" --split train --n 100 --out "$root/teacher-eval-train"

# 2. the four methods from the same fresh student
for seed in $SEEDS; do
  for method in sft reverse_kl_pg gkd dagger; do
    out="$root/$method-seed$seed"
    teacher="hf:$T"; [ "$method" = dagger ] && teacher=oracle
    /usr/bin/time -f "$method seed=$seed wall_s=%e cpu_s=%U max_rss_kb=%M" \
      $A train $COMMON --teacher "$teacher" --loss "$method" --steps "$STEPS" --lr 5e-5 \
        --seed "$seed" --ckpt-every "$STEPS" --out "$out" ${RESUME:+--resume}
    $A report "$out"
    $A eval --env "$ENV" --model "hf:$out/step_$STEPS" --split test --seed "$seed" --out "$out/final-eval"
  done
done
