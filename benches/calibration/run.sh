#!/usr/bin/env bash
# Calibration of the base model: for every level of both tasks, N test instances through
# `flywheel generate` (K = 1, G = 4, temperature 0.7, 128 new tokens), one resumable run per level
# under $OUT. Rerunning continues where it stopped. Summarize with table.py.
#
#   N=200 OUT=runs/calibration benches/calibration/run.sh [LEVEL_SPEC ...]
#
# LEVEL_SPEC is TASK:LEVEL (default: all eight, easiest first). The model is $MODEL (default
# runs/models/smollm2/onnx, as the README's first command exports it).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-200}
OUT=${OUT:-runs/calibration}
MODEL=${MODEL:-runs/models/smollm2/onnx}
BATCH=${BATCH:-32}
specs=("$@")
if [ ${#specs[@]} -eq 0 ]; then
  specs=(countdown:trivial function_calling:trivial countdown:easy function_calling:easy
         countdown:medium function_calling:medium countdown:hard function_calling:hard)
fi
mkdir -p "$OUT"
for spec in "${specs[@]}"; do
  task=${spec%%:*}
  level=${spec#*:}
  input="$OUT/$task-$level.jsonl"
  grep "\"level\":\"$level\"" "datasets/data/$task/test.jsonl" | head -n "$N" > "$input"
  echo "$(date +%T) $task $level: $(wc -l < "$input") tasks"
  target/debug/flywheel generate --model "$MODEL" --task "$task" --input "$input" \
    --out "$OUT/run-$task-$level" --reflections 4 --temperature 0.7 --max-new-tokens 128 \
    --batch-size "$BATCH" --quiet > "$OUT/report-$task-$level.json"
  echo "$(date +%T) $task $level: done"
done
