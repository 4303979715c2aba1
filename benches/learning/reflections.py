"""Reflections before and after training, side by side (benches/README.md, "Learning").

Reads the held-out evaluation rollouts of two rounds of a run (RUN_DIR/rounds/NNNN/eval, greedy,
so a difference is the model's, not the sampler's) and prints, for the first N held-out tasks that
both rounds failed at first try, each round's failed attempt, reflection, retry and verdict, as a
Markdown table. Also prints the mean reflection length of each round and how many reflections
changed at all.
Usage: python benches/learning/reflections.py RUN_DIR BEFORE AFTER [N]
(needs python polars in the environment: `.venv/bin/python -m pip install polars`)
"""
import sys

import polars as pl


def load(run: str, k: int) -> pl.DataFrame:
    df = pl.read_parquet(f"{run}/rounds/{k:04d}/eval/rollouts.parquet")
    df = df.filter(pl.col("attempt") == 0)
    wide = None
    for kind in ["attempt", "reflection", "retry"]:
        part = df.filter((pl.col("kind") == kind) & (pl.col("reflection").fill_null(0) == 0)).select(
            "task_index",
            "task_id",
            pl.col("text").alias(kind),
            pl.col("pass").alias(f"{kind}_pass"),
            pl.col("reason").alias(f"{kind}_reason"),
            pl.col("new_tokens").alias(f"{kind}_tokens"),
        )
        wide = part if wide is None else wide.join(part.drop("task_id"), on="task_index", how="left")
    return wide


def cell(text) -> str:
    if text is None:
        return "–"
    return text.replace("|", "\\|").replace("\n", " ").strip()[:220]


def main() -> None:
    run, before, after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    b, a = load(run, before), load(run, after)
    both = b.join(a, on="task_index", suffix="_after").filter(
        ~pl.col("attempt_pass") & ~pl.col("attempt_pass_after") & pl.col("reflection").is_not_null()
        & pl.col("reflection_after").is_not_null()
    ).sort("task_index")
    changed = (both["reflection"] != both["reflection_after"]).sum()
    print(
        f"{both.height} held-out tasks failed at first try in both rounds; their reflection "
        f"changed in {changed}. Mean reflection tokens: round {before} "
        f"{both['reflection_tokens'].mean():.1f}, round {after} {both['reflection_tokens_after'].mean():.1f}.\n"
    )
    print(f"| task | round | failed attempt | reflection | retry | retry verdict |")
    print("|---|---|---|---|---|---|")
    shown = both.filter(pl.col("reflection") != pl.col("reflection_after")).head(n)
    for r in shown.iter_rows(named=True):
        for k, s in [(before, ""), (after, "_after")]:
            verdict = "pass" if r["retry_pass" + s] else r["retry_reason" + s]
            print(
                f"| {r['task_id']} | {k} | {cell(r['attempt' + s])} | {cell(r['reflection' + s])} "
                f"| {cell(r['retry' + s])} | {verdict} |"
            )


if __name__ == "__main__":
    main()
