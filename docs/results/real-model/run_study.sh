#!/usr/bin/env bash
# Continued training of SmolLM2-135M-Instruct on CPython's standard library: original vs
# converted (P = 2, exact) with every weight training vs converted with only the mixing
# weights training, at equal training FLOPs. Resumable: rerun the same command.
#
#   bash run_study.sh pilot    # one seed, one learning rate, BUDGET original steps per arm
#   bash run_study.sh full     # LR grid on validation (seed 0, extended until bracketed),
#                              # seeds 1 2 at each arm's rate, HumanEval of the final models
#
# Environment: OUT (default runs/real-model-study), DEVICE (cpu), SEQ (256), BATCH (1),
# BUDGET (original-model steps per run: 12 pilot, 400 full), LRS (the starting grid), SEEDS,
# HUMANEVAL (1: score the final models, 0: loss only), ARMS (the arms this process runs,
# default all three: two processes with disjoint ARMS share the work of one OUT, one core
# each). Run from anywhere; the model directories (out/smollm2, out/smollm2-iha) are found
# from the repository root.
set -eu
MODE=${1:?pilot or full}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
export PYTHONPATH=$ROOT/src:$HERE HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PY:-python}
OUT=${OUT:-runs/real-model-study}
DEVICE=${DEVICE:-cpu}
SEQ=${SEQ:-256}
BATCH=${BATCH:-1}
HUMANEVAL=${HUMANEVAL:-1}
ARMS=${ARMS:-original iha-all iha-mixing}
for arm in $ARMS; do
  case $arm in original|iha-all|iha-mixing) ;; *) echo "ARMS: unknown arm '$arm' (original, iha-all, iha-mixing)" >&2; exit 2;; esac
done
if [ "$MODE" = pilot ]; then BUDGET=${BUDGET:-12}; LRS=${LRS:-3e-5}; SEEDS=${SEEDS:-0}
else BUDGET=${BUDGET:-400}; LRS=${LRS:-1e-5 3e-5 1e-4}; SEEDS=${SEEDS:-0 1 2}; fi
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)  # relative to where the command runs
cd "$ROOT"
DATA=$OUT/data
[ -f "$DATA/split.json" ] || $PY "$HERE/finetune.py" prepare --out "$DATA"
# the FLOP budget: BUDGET steps of the original model at SEQ x BATCH tokens
FLOPS=$($PY -c "import finetune as f; print(f.flops_per_token('original', $SEQ) * $SEQ * $BATCH * $BUDGET)")
train_one() {  # ARM LR SEED
  local run=$OUT/$1/lr$2-seed$3
  [ -f "$run/test.json" ] && return 0
  [ -f "$run/config.toml" ] || $PY "$HERE/finetune.py" config "$1" --lr "$2" --seed "$3" \
    --flops "$FLOPS" --data "$DATA" --out "$run" --seq-len "$SEQ" --batch "$BATCH" --device "$DEVICE"
  local resume=()
  [ -d "$run/checkpoints" ] && resume=(--resume)
  $PY -m iha train "$run/config.toml" "${resume[@]}" > "$run/train.log" 2>&1
  $PY "$HERE/finetune.py" evaluate "$run" --data "$DATA" --seq-len "$SEQ" --max-tokens 8192 > "$run/test.json.tmp"
  mv "$run/test.json.tmp" "$run/test.json"
  # keep only the checkpoint that was evaluated (1.6 GB each; keep = 2 holds two while training)
  local last
  last=$(cat "$run/checkpoints/latest")
  for c in "$run"/checkpoints/step_*; do [ "${c##*/}" = "$last" ] || rm -rf "$c"; done
}
for arm in original iha-all; do  # before training (the two must agree: exact conversion)
  [ -f "$OUT/untrained-$arm.json" ] || $PY "$HERE/finetune.py" evaluate $arm --data "$DATA" \
    --seq-len "$SEQ" --max-tokens 8192 > "$OUT/untrained-$arm.json"
done
set -- $SEEDS
for lr in $LRS; do for arm in $ARMS; do train_one $arm $lr $1; done; done
if [ "$MODE" = full ]; then
  # each arm's learning rate: the lowest final validation loss at seed $1, the grid extended one
  # step at a time (finetune.LADDER) until the best has a worse tried neighbour on both sides
  for arm in $ARMS; do
    while :; do
      next=$($PY "$HERE/finetune.py" choose "$OUT" $arm --seed $1 | $PY -c "import json,sys; print(json.load(sys.stdin)['next'] or '')")
      [ -z "$next" ] && break
      echo "$arm: extending the grid to $next"
      train_one $arm "$next" $1
    done
  done
  rate() {  # ARM SEED: the chosen learning rate (fails loudly when there is none)
    $PY "$HERE/finetune.py" choose "$OUT" $1 --seed $2 | $PY -c "import json,sys
c = json.load(sys.stdin)
sys.exit(f'{c[\"arm\"]}: no learning rate chosen yet ({c})') if not c['chosen'] else print(c['chosen'])"
  }
  for seed in "${@:2}"; do for arm in $ARMS; do
    lr=$(rate $arm $1)  # an assignment: a failure stops the script (set -e)
    train_one $arm "$lr" "$seed"
  done; done
  unscored=
  if [ "$HUMANEVAL" = 1 ]; then  # greedy pass@1 of every final model (chat template; batches
    # of 32: a decode step costs 1.9x a batch of 8's, and a batch waits for its longest answer)
    for seed in "$@"; do for arm in $ARMS; do
      lr=$(rate $arm $1)
      run=$OUT/$arm/lr$lr-seed$seed
      [ -f "$run/humaneval/humaneval.json" ] && continue
      resume=()
      [ -f "$run/humaneval/humaneval.progress.jsonl" ] && resume=(--resume)
      # a failure (say another process holds the folder's lock) does not stop the others
      $PY -m iha eval humaneval "$run" --temperature 0 --batch-size 32 --out "$run/humaneval" \
        "${resume[@]}" > "$run/humaneval.log" 2>&1 || { unscored="$unscored $run"
        echo "HumanEval of $run failed (its humaneval.log says why); rerun to resume" >&2; }
    done; done
  fi
  $PY "$HERE/finetune.py" report "$OUT" --seq-len "$SEQ" --batch "$BATCH" > "$OUT/report.json.$$"
  mv "$OUT/report.json.$$" "$OUT/report.json"
  [ -z "$unscored" ] || { echo "not scored yet:$unscored" >&2; exit 1; }
fi
echo "done: $OUT"
