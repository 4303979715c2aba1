"""Training-slice trend of a learning run: what each round's own generation did (benches/README.md).

Round k generates, with round k-1's model at the recipe's temperature, on a slice of training
tasks it has never trained on, and the slices are the same in every run of the same recipe data,
so rows of two runs (the recipe and its control) are paired by task. Per round: first tries passing
(attempt 0 only, the one both protocols sample with the same seed, and all attempts), the share of
first tries without `<answer>` tags, retries passing and without tags (the reflection span only),
and the mean length in tokens of the trained span (reflections, or attempts for the control).
Usage: python benches/learning/trend.py RUN_DIR [RUN_DIR ...]
(needs python polars in the environment: `.venv/bin/python -m pip install polars`)
"""
import glob
import json
import os
import sys

import polars as pl

from report import round_rollouts


def share(df: pl.DataFrame, cond: pl.Expr) -> str:
    if df.height == 0:
        return "–"
    k = df.filter(cond).height
    return f"{k}/{df.height} ({100 * k / df.height:.1f}%)"


def rows(run: str):
    for d in sorted(glob.glob(f"{run}/rounds/*/")):
        df = round_rollouts(d.rstrip("/"))
        if df is None:
            continue
        att = df.filter(pl.col("kind") == "attempt")
        first = att.filter(pl.col("attempt") == 0)
        retries = df.filter(pl.col("kind") == "retry")
        refl = df.filter(pl.col("kind") == "reflection")
        span = refl if refl.height else att
        k = int(d.rstrip("/").split("/")[-1])
        source = k - 1  # a round that did not train leaves the next one on the same model
        if os.path.isfile(f"{d}round.json"):
            with open(f"{d}round.json") as f:
                source = json.load(f).get("from_round", source)
        yield (
            f"| {run.rstrip('/').split('/')[-1]} | {k} ({source}'s model) | {share(first, pl.col('pass'))} "
            f"| {share(att, pl.col('pass'))} | {share(att, pl.col('reason') == 'no_answer')} "
            f"| {share(retries, pl.col('pass'))} | {share(retries, pl.col('reason') == 'no_answer')} "
            f"| {span['new_tokens'].mean():.1f} |"
        )


def main() -> None:
    print(
        "| run | round | first try (attempt 0) | all attempts | attempts without `<answer>` "
        "| retries passing | retries without `<answer>` | trained span tokens (mean) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for run in sys.argv[1:]:
        for line in rows(run):
            print(line)


if __name__ == "__main__":
    main()
