"""Calibration table from the runs benches/calibration/run.sh wrote (needs `pip install polars`).

    .venv/bin/python benches/calibration/table.py [runs/calibration]

Per task and level (all finished shards together): first-try pass rate, retry pass rate among
failed attempts, reflection groups with mixed retry outcomes (the groups GRPO learns from), and
the share of first attempts that used the requested answer format (`<answer>` tags; a JSON list
of calls).
"""
import glob
import os
import sys

import polars as pl

root = sys.argv[1] if len(sys.argv) > 1 else "runs/calibration"
order = {"trivial": 0, "easy": 1, "medium": 2, "hard": 3}
rows = []
for d in glob.glob(os.path.join(root, "run-*")):
    files = sorted(glob.glob(os.path.join(d, "shard-*", "rollouts.parquet")))
    if not files:
        continue
    # Task indices count from 0 in each input file: groups are per file.
    df = pl.concat([pl.read_parquet(f).with_columns(pl.lit(f).alias("src")) for f in files])
    task, level = os.path.basename(d)[len("run-"):].rsplit("-", 1)
    att = df.filter(pl.col("kind") == "attempt")
    ret = df.filter(pl.col("kind") == "retry")
    groups = ret.group_by(["src", "task_index", "attempt"]).agg(
        pl.col("pass").sum().alias("p"), pl.len().alias("n")
    )
    mixed = groups.filter((pl.col("p") > 0) & (pl.col("p") < pl.col("n"))).height
    fmt = r"<answer>" if task == "countdown" else r"\[\s*\{\s*\"name\""
    used = att["text"].str.contains(fmt).mean() if att.height else 0.0
    retry_rate = ret["pass"].mean() if ret.height else 0.0
    rows.append(
        (
            task,
            order.get(level, 9),
            f"| {task} | {level} | {att.height} | {att['pass'].mean():.1%} "
            f"| {retry_rate:.1%} ({ret['pass'].sum()}/{ret.height}) "
            f"| {mixed}/{groups.height} ({mixed / max(groups.height, 1):.1%}) | {used:.0%} |",
        )
    )
print("| task | level | tasks | first try | retry among failures | mixed groups | answer format |")
print("|---|---|---|---|---|---|---|")
for _, _, line in sorted(rows):
    print(line)
