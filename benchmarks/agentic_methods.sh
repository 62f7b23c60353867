#!/usr/bin/env bash
# The agentic-methods benchmark (issue 11): one warm-started student, one teacher made on this
# CPU, then the same number of further updates for each method; held-out success on the test
# split (100 calc tasks) with 95% intervals, per-turn success and teacher-KL curves.
#
# Usage: bash benchmarks/agentic_methods.sh [ENV] [SEEDS] [METHODS]
#   e.g. bash benchmarks/agentic_methods.sh agentopd/Calc-v0 "0 1 2" "sft reverse_kl_pg tcod_f2b skill_sd"
#   (the method `models` only makes sure the teacher and the warm student's checkpoints exist)
# Every stage is skipped when its output exists and resumes from its checkpoint when it was
# killed, so the benchmark can be split across sessions: rerun the same command. Checkpoints are
# not committed (benchmarks/out keeps configs, metrics and evals), so on a fresh machine a model is
# trained again only when an output that needs it is missing: the teacher and the warm student
# are remade (same seed, same config: the same weights on the same CPU) before the first method
# that trains (times.txt labels those runs "(remade)": CPU time counted once), and a method whose
# evals all exist is not retrained.
# Sizes (env vars): TEACHER_STEPS (20) x TEACHER_EPISODES (16) oracle demos at TEACHER_LR (1e-4);
# WARM_STEPS (5) x WARM_EPISODES (16) oracle demos at WARM_LR (1e-4) for the shared student (the
# main job's warm start: the held-out eval of a 3 x 8 warm start had not finished after 12
# minutes, 4 for the teacher's); then
# STEPS (8) updates of EPISODES (8) at LR (5e-5) per method; MAX_NEW (64) tokens a turn;
# MAX_TURNS (6) turns a training episode; EVAL_N (100) held-out tasks, greedy; PASSK (4): also
# pass@1/pass@K at temperature 1 with PASSK samples a task (0 skips it); GKD_BETA (0.1);
# CURRICULUM_EVERY (2); KL_THRESHOLD (0.2); DTYPE (float32): every train and eval runs in it. The
# committed results were made in float32 (what `--dtype auto` resolves to on a CPU without bf16
# units); auto on a CPU with them trains in bf16 and gives another teacher, so a remade model
# would not match the committed evals. TAG: write under benchmarks/out/agentic_methods/<env>-TAG
# instead (another regime beside the committed one, e.g. TAG=t80 for an 80-step teacher).
set -euo pipefail
cd "$(dirname "$0")/.."
ENV=${1:-agentopd/Calc-v0}
SEEDS=${2:-0}
METHODS=${3:-"sft reverse_kl_pg gkd dagger tcod_f2b tcod_b2f tcod_kl skill_sd cold_reverse_kl_pg"}
TEACHER_STEPS=${TEACHER_STEPS:-20}; TEACHER_EPISODES=${TEACHER_EPISODES:-16}; TEACHER_LR=${TEACHER_LR:-1e-4}
WARM_STEPS=${WARM_STEPS:-5}; WARM_EPISODES=${WARM_EPISODES:-16}; WARM_LR=${WARM_LR:-1e-4}
STEPS=${STEPS:-8}; EPISODES=${EPISODES:-8}; LR=${LR:-5e-5}
MAX_NEW=${MAX_NEW:-64}; MAX_TURNS=${MAX_TURNS:-6}; EVAL_N=${EVAL_N:-100}; PASSK=${PASSK:-4}
DTYPE=${DTYPE:-float32}; GKD_BETA=${GKD_BETA:-0.1}; CURRICULUM_EVERY=${CURRICULUM_EVERY:-2}; KL_THRESHOLD=${KL_THRESHOLD:-0.2}
name=$(echo "$ENV" | sed 's#agentopd/##; s#-v0##' | tr 'A-Z' 'a-z')
root=benchmarks/out/agentic_methods/$name${TAG:+-$TAG}
mkdir -p "$root"
A=".venv/bin/agentopd"
COMMON="--env $ENV --max-new-tokens $MAX_NEW --keep-checkpoints 1 --eval-every 0 --no-eval-at-start --warm-start-steps 0 --dtype $DTYPE"
timed() { /usr/bin/time -a -o "$root/times.txt" -f "$1 wall_s=%e cpu_user_s=%U cpu_sys_s=%S max_rss_kb=%M" "${@:2}"; }
final() { [ -f "$1/latest" ] && [ "$(cat "$1/latest")" = "step_$2" ]; }
resume_flag() { [ -f "$1/latest" ] && echo "--resume" || true; }
evaluate() {  # evaluate MODEL_DIR OUT: greedy on EVAL_N test tasks, then pass@K at temperature 1 (a killed eval resumes)
  [ -f "$2/eval/summary.json" ] || timed "eval $2" $A eval --env "$ENV" --model "hf:$1" --dtype "$DTYPE" --n "$EVAL_N" \
      --max-new-tokens "$MAX_NEW" --out "$2/eval" --resume
  if [ "$PASSK" -gt 0 ] && [ ! -f "$2/eval_k$PASSK/summary.json" ]; then
    timed "eval@$PASSK $2" $A eval --env "$ENV" --model "hf:$1" --dtype "$DTYPE" --n "$EVAL_N" --max-new-tokens "$MAX_NEW" \
        --k "$PASSK" --temperature 1.0 --out "$2/eval_k$PASSK" --resume
  fi
}

# 1. The teacher: SFT on oracle demonstrations (checked below: held-out success >= 0.9).
T=$root/teacher
W=$root/warm
teacher() {
  if ! final "$T" "$TEACHER_STEPS"; then
    timed "teacher$(evals_done "$T" 0 && echo " (remade)")" $A train $COMMON --teacher oracle --loss sft --steps "$TEACHER_STEPS" \
        --episodes-per-step "$TEACHER_EPISODES" --lr "$TEACHER_LR" --seed 1234 --out "$T" $(resume_flag "$T")
  fi
}
# 2. The shared warm-started student: WARM_STEPS of SFT on oracle demonstrations.
warm() {
  if ! final "$W" "$WARM_STEPS"; then
    timed "warm$(evals_done "$W" 0 && echo " (remade)")" $A train $COMMON --teacher oracle --loss sft --steps "$WARM_STEPS" --episodes-per-step "$WARM_EPISODES" \
        --lr "$WARM_LR" --seed 0 --out "$W" $(resume_flag "$W")
  fi
}
evals_done() {  # evals_done OUT [K]: every eval that evaluate OUT would run exists
  [ -f "$1/eval/summary.json" ] && { [ "${2:-$PASSK}" -eq 0 ] || [ -f "$1/eval_k${2:-$PASSK}/summary.json" ]; }
}
evals_done "$T" 0 || { teacher; PASSK=0 evaluate "$T/step_$TEACHER_STEPS" "$T"; }
evals_done "$W" || { warm; evaluate "$W/step_$WARM_STEPS" "$W"; }
[ -f "$root/base/eval/summary.json" ] || PASSK=0 evaluate smollm2-135m "$root/base"

# 3. The methods: STEPS further updates each, from the warm student (the cold control from the
# raw model); the teacher's student-state check runs on the warm student's episodes.
[ -f "$root/teacher_check.json" ] || { teacher; warm; .venv/bin/python benchmarks/agentic_methods.py check-teacher \
    --env "$ENV" --teacher "$T/step_$TEACHER_STEPS" --student "$W/step_$WARM_STEPS" --out "$root/teacher_check.json" \
    --max-new-tokens "$MAX_NEW" --max-turns "$MAX_TURNS" || echo "check-teacher failed (the runs go on)" >&2; }
for seed in $SEEDS; do
  for method in $METHODS; do
    out="$root/$method-seed$seed"
    student="hf:$W/step_$WARM_STEPS"; teacher="hf:$T/step_$TEACHER_STEPS"; extra=""
    case $method in
      sft) loss=sft ;;
      reverse_kl_pg) loss=reverse_kl_pg ;;
      reverse_kl_pg_tau2) loss=reverse_kl_pg; extra="--teacher-temperature 2" ;;  # the teacher scored at tau 2
      gkd) loss=gkd; extra="--gkd-beta $GKD_BETA" ;;
      dagger) loss=dagger; teacher=oracle ;;
      tcod_f2b) loss=reverse_kl_pg; extra="--curriculum f2b --curriculum-every $CURRICULUM_EVERY" ;;
      tcod_b2f) loss=reverse_kl_pg; extra="--curriculum b2f --curriculum-every $CURRICULUM_EVERY" ;;
      tcod_kl) loss=reverse_kl_pg; extra="--curriculum kl --curriculum-kl-threshold $KL_THRESHOLD" ;;
      skill_sd) loss=skill_sd; teacher=self; extra="--group-size 4" ;;
      cold_reverse_kl_pg) loss=reverse_kl_pg; student="hf:smollm2-135m" ;;
      models) teacher; warm; continue ;;  # only make sure the teacher and the warm student exist
      *) echo "unknown method $method" >&2; exit 2 ;;
    esac
    evals_done "$out" && continue
    if ! final "$out" "$STEPS"; then
      [ "$teacher" = oracle ] || [ "$teacher" = self ] || teacher
      case $student in "hf:$W/"*) warm ;; esac
      # a run retrained only for a missing pass@K eval: its CPU was counted when it was first made
      timed "$method seed=$seed$(evals_done "$out" 0 && echo " (remade)")" $A train $COMMON --student "$student" --teacher "$teacher" --loss "$loss" \
          --steps "$STEPS" --episodes-per-step "$EPISODES" --max-turns "$MAX_TURNS" --lr "$LR" --seed "$seed" \
          --ckpt-every 1 $extra --out "$out" $(resume_flag "$out")
    fi
    evaluate "$out/step_$STEPS" "$out"
  done
done
.venv/bin/python benchmarks/agentic_methods.py summarize --root "$root" --teacher "$T/step_$TEACHER_STEPS"
