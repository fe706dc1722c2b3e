#!/usr/bin/env bash
# Continued training of SmolLM2-135M-Instruct on CPython's standard library: original vs
# converted (P = 2, exact) with every weight training vs converted with only the mixing
# weights training, at equal training FLOPs. Resumable: rerun the same command.
#
#   bash run_study.sh pilot    # one seed, one learning rate, BUDGET original steps per arm
#   bash run_study.sh full     # LR grid on validation (seed 0), then seeds 1 2 at the best LR
#
# Environment: OUT (default runs/real-model-study), DEVICE (cpu), SEQ (256), BATCH (1 pilot,
# 8 full), BUDGET (original-model steps per run: 12 pilot, 300 full), LRS, SEEDS.
set -eu
MODE=${1:?pilot or full}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
export PYTHONPATH=$ROOT/src:$HERE HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PY:-python}
OUT=${OUT:-runs/real-model-study}
DEVICE=${DEVICE:-cpu}
SEQ=${SEQ:-256}
if [ "$MODE" = pilot ]; then BATCH=${BATCH:-1}; BUDGET=${BUDGET:-12}; LRS=${LRS:-3e-5}; SEEDS=${SEEDS:-0}
else BATCH=${BATCH:-8}; BUDGET=${BUDGET:-300}; LRS=${LRS:-1e-5 3e-5 1e-4}; SEEDS=${SEEDS:-0 1 2}; fi
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
}
for arm in original iha-all; do  # before training (the two must agree: exact conversion)
  [ -f "$OUT/untrained-$arm.json" ] || $PY "$HERE/finetune.py" evaluate $arm --data "$DATA" \
    --seq-len "$SEQ" --max-tokens 8192 > "$OUT/untrained-$arm.json"
done
set -- $SEEDS
for lr in $LRS; do for arm in original iha-all iha-mixing; do train_one $arm $lr $1; done; done
if [ "$MODE" = full ]; then
  # the learning rate of each arm: the lowest final validation loss at seed $1
  for arm in original iha-all iha-mixing; do
    best=$($PY - "$OUT/$arm" <<'PY'
import json, sys, pathlib
runs = {}
for d in pathlib.Path(sys.argv[1]).glob("lr*-seed*"):
    rows = [json.loads(l) for l in (d / "metrics.jsonl").open()]
    val = [r["loss"] for r in rows if r.get("split") == "val"]
    if val: runs[d.name.split("-seed")[0][2:]] = val[-1]
print(min(runs, key=runs.get))
PY
)
    for seed in "${@:2}"; do train_one $arm "$best" "$seed"; done
  done
fi
echo "done: $OUT"
