"""Independent check of `flywheel label`: recomputes the examples, rewards and advantages from
rollouts.parquet alone (Python polars, written from the issue's definition, not from the Rust
code) and compares them with train.parquet.

    python3 tests/scripts/label_check.py RUN_DIR [RUN_DIR ...] --train TRAIN_PARQUET
        [--span reflection|attempt] [--scale group|batch|none] [--keep-zero-std] [--drop-truncated]
        [--min-tokens N] [--max-tokens N]

Needs `pip install polars`. Exits 1 with the first difference, 0 when every row agrees.
"""

import argparse
import math
import os
import sys

import polars as pl

EPS = 1e-4


def expected(runs, span, scale, keep_zero_std, drop_truncated, min_tokens, max_tokens):
    files = [os.path.join(r, "rollouts.parquet") if os.path.isdir(r) else r for r in runs]
    df = pl.concat([pl.read_parquet(f) for f in files])
    key = ["task_index", "attempt", "reflection"]
    if span == "attempt":
        # Plain GRPO: every attempt is rewarded by its own verdict; the group is the task.
        ex = df.filter(pl.col("kind") == "attempt").with_columns(
            pl.lit(0, dtype=pl.UInt32).alias("reflection"),
            pl.col("pass").alias("retry_pass"),
            pl.col("reason").alias("retry_reason"),
        )
    else:
        refl = df.filter(pl.col("kind") == "reflection")
        retry = df.filter(pl.col("kind") == "retry").select(
            key + [pl.col("pass").alias("retry_pass"), pl.col("reason").alias("retry_reason")]
        )
        ex = refl.join(retry, on=key, how="inner")
    ex = ex.with_columns(pl.col("token_ids").list.len().alias("span_len"))
    if drop_truncated:
        ex = ex.filter(pl.col("finish_reason") != "length")
    ex = ex.filter(pl.col("span_len") >= min_tokens)
    if max_tokens is not None:
        ex = ex.filter(pl.col("span_len") <= max_tokens)
    rows = ex.sort(key).to_dicts()
    groups = {}
    for r in rows:
        group = (r["task_index"],) if span == "attempt" else (r["task_index"], r["attempt"])
        groups.setdefault(group, []).append(r)
    kept = []
    for members in groups.values():
        rewards = [1.0 if m["retry_pass"] else 0.0 for m in members]
        n = len(rewards)
        mean = sum(rewards) / n
        std = math.sqrt(sum((x - mean) ** 2 for x in rewards) / (n - 1)) if n > 1 else 0.0
        if std == 0.0 and not keep_zero_std:
            continue
        for m, r in zip(members, rewards):
            m["reward"] = r
            m["centered"] = r - mean
            m["group_std"] = std
            kept.append(m)
    if scale == "batch":
        rs = [m["reward"] for m in kept]
        mean = sum(rs) / len(rs) if rs else 0.0
        bstd = math.sqrt(sum((x - mean) ** 2 for x in rs) / (len(rs) - 1)) if len(rs) > 1 else 0.0
    for m in kept:
        if scale == "group":
            m["advantage"] = m["centered"] / (m["group_std"] + EPS)
        elif scale == "batch":
            m["advantage"] = m["centered"] / (bstd + EPS)
        else:
            m["advantage"] = m["centered"]
    kept.sort(key=lambda m: (m["task_index"], m["attempt"], m["reflection"]))
    return kept


def main():
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+")
    p.add_argument("--train", required=True)
    p.add_argument("--span", default="reflection", choices=["reflection", "attempt"])
    p.add_argument("--scale", default="group", choices=["group", "batch", "none"])
    p.add_argument("--keep-zero-std", action="store_true")
    p.add_argument("--drop-truncated", action="store_true")
    p.add_argument("--min-tokens", type=int, default=1)
    p.add_argument("--max-tokens", type=int, default=None)
    a = p.parse_args()
    want = expected(a.runs, a.span, a.scale, a.keep_zero_std, a.drop_truncated, a.min_tokens, a.max_tokens)
    got = pl.read_parquet(a.train).to_dicts()
    if len(got) != len(want):
        print(f"rows: train.parquet has {len(got)}, expected {len(want)}")
        return 1
    worst = 0.0
    for g, w in zip(got, want):
        k = (w["task_index"], w["attempt"], w["reflection"])
        if (g["task_index"], g["attempt"], g["reflection"]) != k:
            print(f"row order: got {(g['task_index'], g['attempt'], g['reflection'])}, expected {k}")
            return 1
        ids = list(w["prompt_ids"]) + list(w["token_ids"])
        if list(g["input_ids"]) != ids:
            print(f"{k}: input_ids differ")
            return 1
        if (g["span_start"], g["span_end"]) != (len(w["prompt_ids"]), len(ids)):
            print(f"{k}: span {(g['span_start'], g['span_end'])}")
            return 1
        if list(g["sampler_logprobs"]) != [float(x) for x in w["logprobs"]]:
            print(f"{k}: sampler_logprobs differ")
            return 1
        if g["reward"] != w["reward"] or g["retry_reason"] != w["retry_reason"]:
            print(f"{k}: reward {g['reward']} / {w['reward']}")
            return 1
        diff = abs(g["advantage"] - w["advantage"])
        worst = max(worst, diff)
        if diff > 1e-5 * max(1.0, abs(w["advantage"])):
            print(f"{k}: advantage {g['advantage']} != {w['advantage']}")
            return 1
    per = (lambda w: w["task_index"]) if a.span == "attempt" else (lambda w: (w["task_index"], w["attempt"]))
    groups = len({per(w) for w in want})
    print(f"label_check: {len(want)} rows in {groups} groups agree (max |Δadvantage| {worst:.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
