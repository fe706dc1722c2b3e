#!/usr/bin/env bash
# HumanEval on SmolLM2-135M-Instruct: greedy pass@1 of the original and the converted model
# (in parallel), then pass@1 / pass@10 from 16 samples at T = 0.6 for the original.
# Resumable: rerun the same command; each run continues from its OUT/humaneval.progress.jsonl.
# Usage: bash docs/results/real-model/run_humaneval.sh [ORIGINAL_DIR] [CONVERTED_DIR]
set -u
cd "$(dirname "$0")/../../.."
ORIG=${1:-out/smollm2}
CONV=${2:-out/smollm2-iha}
OUT=docs/results/real-model
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH=$PWD/src
PY=${PY:-python}
run() {  # OUTDIR, then iha eval arguments
  local out=$1; shift
  local resume=()
  [ -f "$out/humaneval.progress.jsonl" ] && resume=(--resume)
  [ -f "$out/humaneval.json" ] && { echo "$out: done"; return 0; }
  nice -n 10 /usr/bin/time -v $PY -m iha eval humaneval "$@" --cross-check on --out "$out" "${resume[@]}" \
    > "$out.log" 2>&1
}
mkdir -p $OUT
run $OUT/greedy-original "$ORIG" --temperature 0 --batch-size 8 &
run $OUT/greedy-converted "$CONV" --temperature 0 --batch-size 8 &
wait %1
# --decoder hf: this run began with model.generate (every row kept to its batch's end), and a
# resumed run keeps the random stream it started with; the greedy runs above were also decoded
# that way (the compact decoder, now the default, gives the same greedy tokens)
run $OUT/sampled-original "$ORIG" --temperature 0.6 --n-samples 16 --k 1 10 --batch-size 16 --seed 0 \
  --decoder hf
wait
