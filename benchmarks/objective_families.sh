#!/usr/bin/env bash
# The objective-families comparison (issue 13): from the agentic-methods benchmark's shared
# warm-started student and SFT-made teacher (run benchmarks/agentic_methods.sh first: stages 1-2),
# the same number of updates for each objective; held-out pass@1 (greedy) and pass@K (K samples
# at temperature 1) on EVAL_N test tasks, per-turn success and KL in each run's metrics, peak RSS
# and CPU seconds per run in times.txt. reverse_kl_pg and gkd are the agentic benchmark's own runs
# (same settings), linked; their pass@K evals run through agentic_methods.sh, which retrains a run
# whose checkpoint is gone (checkpoints are not committed) with the same seed and config.
#
# Usage: bash benchmarks/objective_families.sh [ENV] [SEED] [METHODS]
#   (also akl_top20, todi_top20, gkd_top20: the objective on the teacher's top-20 logprobs plus a tail bucket,
#   as a served teacher gives them)
# Sizes as in agentic_methods.sh: STEPS (8) x EPISODES (8) at LR (5e-5), MAX_NEW (64), MAX_TURNS (6),
# EVAL_N (100), PASSK (8; 0 skips pass@K), DTYPE (float32: as agentic_methods.sh, whose committed models it reuses);
# TEACHER_STEPS (20) and WARM_STEPS (5) name those models' checkpoints (set them as the agentic run did,
# e.g. TEACHER_STEPS=80 MAX_NEW=112 DTYPE=bfloat16 TAG=t80 for sql; TAG as in agentic_methods.sh).
# Rerunning continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
ENV=${1:-agentopd/Calc-v0}
seed=${2:-0}
METHODS=${3:-"akl todi gopd eopd tip50 tip20 sdpo"}
STEPS=${STEPS:-8}; EPISODES=${EPISODES:-8}; LR=${LR:-5e-5}
MAX_NEW=${MAX_NEW:-64}; MAX_TURNS=${MAX_TURNS:-6}; EVAL_N=${EVAL_N:-100}; PASSK=${PASSK:-8}; DTYPE=${DTYPE:-float32}
name=$(echo "$ENV" | sed 's#agentopd/##; s#-v0##' | tr 'A-Z' 'a-z')
src=benchmarks/out/agentic_methods/$name${TAG:+-$TAG}
root=benchmarks/out/objective_families/$name${TAG:+-$TAG}
T=$src/teacher/step_${TEACHER_STEPS:-20}; W=$src/warm/step_${WARM_STEPS:-5}
models() {  # the agentic benchmark's teacher and warm student (remade there when missing)
  [ -f "$T/config.json" ] && [ -f "$W/config.json" ] || PASSK=0 DTYPE=$DTYPE bash benchmarks/agentic_methods.sh "$ENV" 0 models
}
mkdir -p "$root"
A=".venv/bin/agentopd"
timed() { /usr/bin/time -a -o "$root/times.txt" -f "$1 wall_s=%e cpu_user_s=%U cpu_sys_s=%S max_rss_kb=%M" "${@:2}"; }
final() { [ -f "$1/latest" ] && [ "$(cat "$1/latest")" = "step_$STEPS" ]; }
resume_flag() { [ -f "$1/latest" ] && echo "--resume" || true; }
evaluate() {  # greedy pass@1, then pass@K at temperature 1
  [ -f "$2/eval/summary.json" ] || timed "eval $2" $A eval --env "$ENV" --model "hf:$1" --dtype "$DTYPE" --n "$EVAL_N" \
      --max-new-tokens "$MAX_NEW" --out "$2/eval" --resume
  if [ "$PASSK" -gt 0 ] && [ ! -f "$2/eval_k$PASSK/summary.json" ]; then
    timed "eval@$PASSK $2" $A eval --env "$ENV" --model "hf:$1" --dtype "$DTYPE" --n "$EVAL_N" --max-new-tokens "$MAX_NEW" \
        --k "$PASSK" --temperature 1.0 --out "$2/eval_k$PASSK" --resume
  fi
}
for m in ${LINKED-reverse_kl_pg gkd}; do  # (LINKED: which of the two) the agentic benchmark's runs of these two, with pass@K added there
  PASSK=$PASSK DTYPE=$DTYPE bash benchmarks/agentic_methods.sh "$ENV" "$seed" "$m"
  [ -e "$root/$m-seed$seed" ] || ln -s "../../agentic_methods/$name${TAG:+-$TAG}/$m-seed$seed" "$root/$m-seed$seed"
done
for method in $METHODS; do
  out="$root/$method-seed$seed"
  teacher="hf:$T"; extra=""
  case $method in
    akl) loss=akl ;;
    akl_top20) loss=akl; extra="--gkd-topk 20" ;;  # a served teacher's view: its top-20 logprobs + a tail bucket
    todi_top20) loss=todi; extra="--gkd-topk 20" ;;
    gkd_top20) loss=gkd; extra="--gkd-topk 20 --gkd-beta ${GKD_BETA:-0.1}" ;;  # beta as the agentic benchmark's gkd
    todi) loss=todi ;;
    gopd) loss=gopd; extra="--gopd-lambda 1.25" ;;
    eopd) loss=eopd ;;
    tip50) loss=reverse_kl_pg; extra="--tip-ratio 0.5" ;;
    tip20) loss=reverse_kl_pg; extra="--tip-ratio 0.2" ;;
    sdpo) loss=sdpo; teacher=self; extra="--group-size 4" ;;
    *) echo "unknown method $method" >&2; exit 2 ;;
  esac
  [ -f "$out/eval/summary.json" ] && { [ "$PASSK" -eq 0 ] || [ -f "$out/eval_k$PASSK/summary.json" ]; } && continue
  models
  if ! final "$out"; then
    timed "$method seed=$seed$([ -f "$out/eval/summary.json" ] && echo " (remade)")" $A train --env "$ENV" --student "hf:$W" --teacher "$teacher" --loss "$loss" \
        --steps "$STEPS" --episodes-per-step "$EPISODES" --max-turns "$MAX_TURNS" --lr "$LR" --seed "$seed" \
        --max-new-tokens "$MAX_NEW" --keep-checkpoints 1 --eval-every 0 --no-eval-at-start --warm-start-steps 0 \
        --ckpt-every 1 --dtype "$DTYPE" $extra --out "$out" $(resume_flag "$out")
  fi
  evaluate "$out/step_$STEPS" "$out"
done
.venv/bin/python benchmarks/agentic_methods.py summarize --root "$root" --refs "$src" --teacher "$T" || true
