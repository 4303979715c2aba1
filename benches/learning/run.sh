#!/usr/bin/env bash
# The learning experiment (issue 15): exactly `init --config recipe.toml`, `round --rounds N`,
# `eval`. Resumable: run it again after any stop and it goes on where the run stands (a finished
# run only prints its table). Usage: bash benches/learning/run.sh [RUN_DIR] [RECIPE] [INIT FLAGS]
#   INIT FLAGS go to `init` after the recipe, e.g. `--set train.iterations=2` for a one-setting
#   variant of a recipe without a second copy of its file.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${1:-runs/learning}
RECIPE=${2:-benches/learning/recipe.toml}
shift $(($# < 2 ? $# : 2))
FLYWHEEL=${FLYWHEEL:-target/debug/flywheel}
[ -x "$FLYWHEEL" ] || cargo build
[ -f "$RUN/flywheel.toml" ] || "$FLYWHEEL" init "$RUN" --config "$RECIPE" "$@"
# `round` stops by itself at the recipe's planned total (`rounds`).
"$FLYWHEEL" round "$RUN" --rounds 1000
"$FLYWHEEL" eval "$RUN"
