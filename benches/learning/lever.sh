#!/usr/bin/env bash
# One training lever of the learning recipe, measured on the validation slice (benches/README.md):
# round 1 of benches/learning/recipe.toml done by hand (generate on the round's 64 training tasks
# with seed 1 + 1, label the reflections), then one `train` per setting from the base model, and the
# validation probe (lines 1953-2000 of the Countdown train split: 2 attempts and 8 reflections per
# failed attempt, T = 0.7, seed 1) with the trained model, read by signal.py. Settings are
# `NAME=TRAIN FLAGS` words, optionally `NAME=TRAIN FLAGS | LABEL FLAGS` to label the same rollouts
# differently for that setting; `train`'s defaults are the recipe's settings except the learning
# rate, so every setting names its --lr. Resumable: finished steps are kept.
# Usage: bash benches/learning/lever.sh BASE_MODEL_DIR NAME="--lr 1e-5" [NAME="--lr 1e-5 --epochs 4" ...]
#        [NAME="--lr 1e-5 | --max-tokens 64" ...]
#   BASE_MODEL_DIR: the model `init` imports (RUN/rounds/0000/model of any recipe run)
set -euo pipefail
cd "$(dirname "$0")/../.."
FLYWHEEL=${FLYWHEEL:-target/debug/flywheel}
BASE=$1
shift
OUT=${OUT:-runs/lever}
mkdir -p "$OUT"
PROMPTS=benches/learning/prompts/check
head -64 benches/learning/data/train.jsonl > "$OUT/round1.jsonl"
sed -n 1953,2000p datasets/data/countdown/train.jsonl > "$OUT/val48.jsonl"
gen() { # MODEL_ONNX INPUT OUT ATTEMPTS SEED
  "$FLYWHEEL" generate --model "$1" --task countdown --input "$2" --out "$3" --attempts "$4" \
    --reflections 8 --temperature 0.7 --max-new-tokens 128 --batch-size 32 --seed "$5" \
    --prompts "$PROMPTS" --quiet
}
[ -f "$OUT/round1/rollouts.parquet" ] || gen "$BASE/onnx" "$OUT/round1.jsonl" "$OUT/round1" 1 2
[ -f "$OUT/train.parquet" ] || "$FLYWHEEL" label --run "$OUT/round1" --out "$OUT/train.parquet"
for setting in "$@"; do
  name=${setting%%=*}
  flags=${setting#*=}
  d="$OUT/$name"
  data="$OUT/train.parquet"
  if [[ $flags == *"|"* ]]; then
    label_flags=${flags#*|}
    flags=${flags%%|*}
    data="$d/train.parquet"
    mkdir -p "$d"
    # shellcheck disable=SC2086 # the flags are words on purpose
    [ -f "$data" ] || "$FLYWHEEL" label --run "$OUT/round1" --out "$data" $label_flags
  fi
  # shellcheck disable=SC2086 # the flags are words on purpose
  [ -f "$d/train/model/model.safetensors" ] || "$FLYWHEEL" train --data "$data" \
    --model "$BASE" --out "$d/train" $flags
  [ -f "$d/train/model/onnx/model.onnx" ] || "$FLYWHEEL" export --model "$d/train/model" --fused
  [ -f "$d/val/rollouts.parquet" ] || gen "$d/train/model/onnx" "$OUT/val48.jsonl" "$d/val" 2 1
done
.venv/bin/python benches/learning/signal.py --markdown "$OUT"/*/val
