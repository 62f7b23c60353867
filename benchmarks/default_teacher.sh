#!/usr/bin/env bash
# Which teacher that needs no second model should `agentopd train` default to?
# Same student (SmolLM2-135M-Instruct), env, steps, episodes and lr; oracle (DAgger) vs self
# (skill-card-conditioned student, reverse-KL advantage). Measures held-out success (test split)
# before and after, and the CPU time of each run.
# Usage: [TEACHER_BENCH_STEPS=5] bash benchmarks/default_teacher.sh
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${TEACHER_BENCH_STEPS:-5}
for teacher in oracle self; do
  out=benchmarks/out/teacher-$teacher
  rm -rf "$out"
  /usr/bin/time -f "$teacher cpu_user_s=%U cpu_sys_s=%S wall_s=%e max_rss_kb=%M" \
    .venv/bin/agentopd train --env agentopd/Calc-v0 --warm-start-steps 0 --lr 5e-5 --teacher "$teacher" --steps "$STEPS" \
      --episodes-per-step 8 --lr 5e-5 --eval-every "$STEPS" --eval-n 32 --max-new-tokens 96 \
      --ckpt-every "$STEPS" --keep-checkpoints 1 --out "$out"
  .venv/bin/agentopd report "$out"
done
