"""Signal of a generate run before any training (issue: learning experiment, item 2).

Reads RUN_DIR/rollouts.parquet of a `flywheel generate --attempts 2 --reflections G` run and
reports, on the tasks whose first attempt (attempt 0) failed:
  - plain second sample: how often attempt 1 (an independent sample, no reflection) passes;
  - retry after reflection: how often a retry of attempt 0 passes (per retry, and per task: any);
  - mixed groups: the fraction of attempt 0's reflection groups with both outcomes;
  - echo: how often a retry repeats the failed attempt's text word for word.
Usage: python benches/learning/signal.py [--markdown] RUN_DIR [RUN_DIR ...]
(needs python polars in the environment: `.venv/bin/python -m pip install polars`)
"""
import sys

import polars as pl


def one(run: str) -> dict:
    df = pl.read_parquet(f"{run}/rollouts.parquet")
    att = df.filter(pl.col("kind") == "attempt")
    a0 = att.filter(pl.col("attempt") == 0).select("task_index", pl.col("pass").alias("p0"), pl.col("text").alias("t0"))
    a1 = att.filter(pl.col("attempt") == 1).select("task_index", pl.col("pass").alias("p1"))
    failed = a0.filter(~pl.col("p0")).join(a1, on="task_index", how="left")
    retries = df.filter((pl.col("kind") == "retry") & (pl.col("attempt") == 0)).join(
        a0.select("task_index", "t0"), on="task_index"
    )
    refl = df.filter((pl.col("kind") == "reflection") & (pl.col("attempt") == 0))
    groups = retries.group_by("task_index").agg(
        pl.col("pass").sum().alias("passed"), pl.len().alias("n")
    )
    mixed = groups.filter((pl.col("passed") > 0) & (pl.col("passed") < pl.col("n"))).height
    return {
        "run": run,
        "tasks": a0.height,
        "first_try": a0["p0"].mean(),
        "failed_first": failed.height,
        "plain_second_sample": failed["p1"].mean() if failed.height else None,
        "retries": retries.height,
        "retries_passed": int(retries["pass"].sum()),
        "plain_passed": int(failed["p1"].sum()),
        "mixed": mixed,
        "retry_pass_per_retry": retries["pass"].mean() if retries.height else None,
        "retry_pass_any_per_task": (groups["passed"] > 0).mean() if groups.height else None,
        "mixed_groups": mixed / groups.height if groups.height else None,
        "groups": groups.height,
        "retry_echoes_attempt": (retries["text"] == retries["t0"]).mean() if retries.height else None,
        "reflection_tokens_p50": refl["new_tokens"].median() if refl.height else None,
    }


def pct(v):
    return "–" if v is None else f"{100 * v:.1f}%"


if __name__ == "__main__":
    args = sys.argv[1:]
    markdown = "--markdown" in args
    runs = [a for a in args if a != "--markdown"]
    if markdown:
        print("| run | first try | plain 2nd sample on failures | retry passes (per retry) | a retry passes (per task) | mixed groups | retry = failed answer | reflection p50 |")
        print("|---|---|---|---|---|---|---|---|")
    for run in runs:
        r = one(run)
        if markdown:
            print(
                f"| {run.rstrip('/').split('/')[-1]} | {pct(r['first_try'])} ({round(r['first_try'] * r['tasks'])}/{r['tasks']}) "
                f"| {pct(r['plain_second_sample'])} ({r['plain_passed']}/{r['failed_first']}) "
                f"| {pct(r['retry_pass_per_retry'])} ({r['retries_passed']}/{r['retries']}) "
                f"| {pct(r['retry_pass_any_per_task'])} | {pct(r['mixed_groups'])} ({r['mixed']}/{r['groups']}) "
                f"| {pct(r['retry_echoes_attempt'])} | {r['reflection_tokens_p50']:.0f} |"
            )
        else:
            print(" | ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
