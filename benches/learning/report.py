"""Per-round table of the learning experiment (benches/README.md), read from a run directory.

For every round: held-out first-try and second-try accuracy with their 95% Wilson intervals and
the paired change from round 0 with its 95% paired-bootstrap interval (all from RUN_DIR/eval.parquet,
level `all` unless --level), and, from the round's own files, the training signal: groups with both
outcomes among the groups labelled, examples and optimizer steps, the mean length of the trained
span (in tokens: all reflections generated that round, or all attempts for the control) and the
wall time of each stage (round.json).
Usage: python benches/learning/report.py [--level L] RUN_DIR
(needs python polars in the environment: `.venv/bin/python -m pip install polars`)
"""
import glob
import json
import os
import sys

import polars as pl


def pct(v: float) -> str:
    return f"{100 * v:.1f}"


def interval(row: dict, key: str) -> str:
    return f"{pct(row[key])} [{pct(row[key + '_low'])}, {pct(row[key + '_high'])}]"


def change(row: dict, key: str) -> str:
    if row["round"] == 0:
        return "–"
    c = f"{key}_change"
    return f"{100 * row[c]:+.1f} [{100 * row[c + '_low']:+.1f}, {100 * row[c + '_high']:+.1f}] p={row[key + '_p']:.3f}"


def round_rollouts(round_dir: str) -> pl.DataFrame | None:
    """The rollouts a round generated (every shard), or None before its generate finished."""
    files = glob.glob(f"{round_dir}/generate/rollouts.parquet") + glob.glob(
        f"{round_dir}/generate/shard-*/rollouts.parquet"
    )
    return pl.concat([pl.read_parquet(f) for f in files]) if files else None


def signal(round_dir: str) -> tuple[str, str]:
    """Mixed groups / groups and mean trained-span tokens of the round's rollouts (every shard)."""
    df = round_rollouts(round_dir)
    if df is None:
        return "–", "–"
    refl = df.filter(pl.col("kind") == "reflection")
    rewarded = df.filter(pl.col("kind") == "retry")
    keys = ["task_index", "attempt"]
    if rewarded.height == 0:  # the attempt-span control: a group is a task's attempts
        rewarded, keys = df.filter(pl.col("kind") == "attempt"), ["task_index"]
    groups = rewarded.group_by(keys).agg(pl.col("pass").sum().alias("p"), pl.len().alias("n"))
    mixed = groups.filter((pl.col("p") > 0) & (pl.col("p") < pl.col("n"))).height
    share = f"{mixed}/{groups.height} ({100 * mixed / groups.height:.1f}%)" if groups.height else "0/0"
    span = refl if refl.height else df.filter(pl.col("kind") == "attempt")  # the control trains attempts
    length = f"{span['new_tokens'].mean():.1f}" if span.height else "–"
    return share, length


def main() -> None:
    args = sys.argv[1:]
    level = "all"
    if "--level" in args:
        i = args.index("--level")
        level = args[i + 1]
        del args[i : i + 2]
    run = args[0]
    ev = pl.read_parquet(f"{run}/eval.parquet").filter(pl.col("level") == level).sort("round")
    print(
        "| round | first try % [95% CI] | second try % [95% CI] | first try change vs round 0 "
        "(pts) [95% CI] | second try change (pts) [95% CI] | mixed groups | examples | steps "
        "| trained span tokens (mean) | wall s: generate / label / train / export / eval |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in ev.iter_rows(named=True):
        k = row["round"]
        d = f"{run}/rounds/{k:04d}"
        outcome = {}
        if os.path.isfile(f"{d}/round.json"):
            with open(f"{d}/round.json") as f:
                outcome = json.load(f)
        share, length = signal(d) if k > 0 else ("–", "–")
        secs = outcome.get("seconds", {})
        wall = " / ".join(
            f"{secs[s]:.0f}" if s in secs else "–" for s in ["generate", "label", "train", "export", "eval"]
        )
        if k == 0:  # the baseline: evaluated, never trained
            wall = "–"
        print(
            f"| {k} | {interval(row, 'first')} | {interval(row, 'second')} | {change(row, 'first')} "
            f"| {change(row, 'second')} | {share} | {outcome.get('examples', '–')} "
            f"| {outcome.get('steps', '–')} | {length} | {wall} |"
        )
    print(f"\n{ev['tasks'][0]} held-out tasks ({level}), {ev['samples_per_task'][0]} sample(s) each.")


if __name__ == "__main__":
    main()
