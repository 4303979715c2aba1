#!/usr/bin/env bash
# Calibration of the base model: for every level of both tasks, the first N instances (test
# split, then train) through `flywheel generate` (K = 1, G = 4, temperature 0.7, 128 new tokens). Each level's
# instances are split into SHARDS contiguous shards, run shard by shard across all levels, so
# every level has results early and later shards add to them. Every shard is a resumable run
# under $OUT/run-TASK-LEVEL/shard-I; rerunning continues where it stopped. Summarize with table.py.
#
#   N=200 SHARDS=4 OUT=runs/calibration benches/calibration/run.sh [TASK:LEVEL ...]
#
# FIRST_SHARD=I starts at shard I (earlier shards already done, e.g. by another model export).
# Default levels: all eight, easiest first. The model is $MODEL (default
# runs/models/smollm2/onnx, where the README's first command exports it).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-200}
SHARDS=${SHARDS:-4}
OUT=${OUT:-runs/calibration}
MODEL=${MODEL:-runs/models/smollm2/onnx}
BATCH=${BATCH:-32}
FIRST_SHARD=${FIRST_SHARD:-0}
FLYWHEEL=${FLYWHEEL:-target/debug/flywheel}
specs=("$@")
if [ ${#specs[@]} -eq 0 ]; then
  specs=(countdown:trivial function_calling:trivial countdown:easy function_calling:easy
         countdown:medium function_calling:medium countdown:hard function_calling:hard)
fi
mkdir -p "$OUT"
for ((shard = FIRST_SHARD; shard < SHARDS; shard++)); do
  for spec in "${specs[@]}"; do
    task=${spec%%:*}
    level=${spec#*:}
    input="$OUT/$task-$level.jsonl"
    # Test instances first; the train split tops a level up to N where the test split is
    # smaller (function calling has 150 per level).
    { grep "\"level\":\"$level\"" "datasets/data/$task/test.jsonl"
      grep "\"level\":\"$level\"" "datasets/data/$task/train.jsonl"; } | head -n "$N" > "$input" || true
    run="$OUT/run-$task-$level/shard-$shard"
    mkdir -p "$(dirname "$run")"
    echo "$(date +%T) $task $level shard $shard/$SHARDS"
      "$FLYWHEEL" generate --model "$MODEL" --task "$task" --input "$input" \
      --shard "$shard/$SHARDS" --out "$run" --reflections 4 --temperature 0.7 \
      --max-new-tokens 128 --batch-size "$BATCH" --quiet > "$run.json"
  done
done
echo "$(date +%T) done"
