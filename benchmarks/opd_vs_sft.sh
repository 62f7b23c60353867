#!/usr/bin/env bash
# The core benchmark (issue 3): same student, same teacher, same number of student updates:
#   (a) SFT on teacher demonstrations, (b) OPD with reverse_kl_pg, (c) GKD, (d) DAgger (oracle).
# The white-box teacher is made on this CPU: SmolLM2-135M trained with --loss sft --teacher oracle
# (oracle demonstrations), then checked on training tasks.
#
# Usage: bash benchmarks/opd_vs_sft.sh ENV SEEDS TEACHER_STEPS STUDENT_STEPS
#   e.g. bash benchmarks/opd_vs_sft.sh agentopd/Calc-v0 "0 1 2" 20 3
# Sizes (env vars): EPISODES (student episodes per step, 8), TEACHER_EPISODES (oracle demos per
# teacher step, 16), EVAL_N (held-out test tasks, 24), MAX_NEW (per-turn token cap, 64),
# MAX_TURNS (cap on a student's training episode, 6; evals use the env's budget), LR (student
# lr, 1e-4), TEACHER_LR (1e-4).
# The student's held-out eval before training is the same for every method and seed (greedy
# decoding, same fresh weights, same tasks), so it runs once (base-eval/); each student run
# evaluates once, after its last step.
set -euo pipefail
cd "$(dirname "$0")/.."
ENV=${1:-agentopd/Calc-v0}
SEEDS=${2:-0}
TEACHER_STEPS=${3:-40}
STEPS=${4:-6}
EPISODES=${EPISODES:-8}
TEACHER_EPISODES=${TEACHER_EPISODES:-16}
EVAL_N=${EVAL_N:-24}
MAX_NEW=${MAX_NEW:-64}
MAX_TURNS=${MAX_TURNS:-6}
LR=${LR:-1e-4}
TEACHER_LR=${TEACHER_LR:-1e-4}
name=$(echo "$ENV" | sed 's#agentopd/##; s#-v0##' | tr 'A-Z' 'a-z')
root=benchmarks/out/opd_vs_sft/$name
mkdir -p "$root"
A=".venv/bin/agentopd"
COMMON="--env $ENV --max-new-tokens $MAX_NEW --eval-n $EVAL_N --keep-checkpoints 1 --warm-start-steps 0"
timed() { /usr/bin/time -a -o "$root/times.txt" -f "$1 wall_s=%e cpu_s=%U max_rss_kb=%M" "${@:2}"; }

# 0. the fresh student, once
if [ ! -f "$root/base-eval/summary.json" ]; then
  timed "base-eval" $A eval --env "$ENV" --split test --n "$EVAL_N" --max-new-tokens "$MAX_NEW" --out "$root/base-eval"
fi

# 1. the teacher: SFT on oracle demonstrations, then its success on training tasks. A teacher
# with fewer steps is continued to TEACHER_STEPS (constant lr, per-step demos: the same as a
# fresh run of that length), and its stale training-task eval is redone.
if [ ! -f "$root/teacher/latest" ] || [ "$(cat "$root/teacher/latest")" != "step_$TEACHER_STEPS" ]; then
  resume=""; [ -f "$root/teacher/latest" ] && resume="--resume"
  timed "teacher to step $TEACHER_STEPS" $A train $COMMON --episodes-per-step "$TEACHER_EPISODES" --teacher oracle --loss sft --steps "$TEACHER_STEPS" --lr "$TEACHER_LR" \
     --eval-every "$TEACHER_STEPS" --no-eval-at-start --ckpt-every "$TEACHER_STEPS" --out "$root/teacher" --seed 1234 $resume
  rm -rf "$root/teacher-eval-train"
fi
T="$root/teacher/$(cat "$root/teacher/latest")"
if [ ! -f "$root/teacher-eval-train/summary.json" ]; then
  timed "teacher-eval-train" $A eval --env "$ENV" --model "hf:$T" --split train --n "$EVAL_N" \
     --max-new-tokens "$MAX_NEW" --out "$root/teacher-eval-train"
fi

# 2. the four methods from the same fresh student
for seed in $SEEDS; do
  for method in ${METHODS:-sft reverse_kl_pg gkd dagger}; do
    out="$root/$method-seed$seed"
    [ -f "$out/latest" ] && [ "$(cat "$out/latest")" = "step_$STEPS" ] && continue
    teacher="hf:$T"; [ "$method" = dagger ] && teacher=oracle
    resume=""; [ -f "$out/latest" ] && resume="--resume"
    timed "$method seed=$seed" $A train $COMMON --episodes-per-step "$EPISODES" --max-turns "$MAX_TURNS" --teacher "$teacher" --loss "$method" --steps "$STEPS" \
        --lr "$LR" --seed "$seed" --eval-every "$STEPS" --no-eval-at-start --ckpt-every "$STEPS" \
        --out "$out" $resume
    $A report "$out" > /dev/null
  done
done
