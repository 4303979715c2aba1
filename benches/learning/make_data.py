#!/usr/bin/env python3
"""Writes benches/learning/data/train.jsonl: the recipe's training instances, trivial and easy
Countdown from the training split, interleaved one by one so every round's slice holds both levels.

Lines 1953-2000 of each level (the validation slice the recipe was chosen on) are left out, so the
experiment never trains on them. The held-out set needs no copy: the first 600 lines of
datasets/data/countdown/test.jsonl are its 300 trivial and 300 easy instances (eval.limit = 600).
Deterministic: run it again and the file is byte-identical.
"""
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCE = ROOT / "datasets/data/countdown/train.jsonl"
OUT = ROOT / "benches/learning/data/train.jsonl"
LINES = 1024  # 16 rounds of 64 tasks
VALIDATION = range(1952, 2000)  # 0-based positions within a level


def main() -> None:
    by_level: dict[str, list[str]] = {"trivial": [], "easy": []}
    for line in SOURCE.read_text().splitlines():
        level = json.loads(line)["level"]
        if level in by_level:
            by_level[level].append(line)
    kept = {k: [l for i, l in enumerate(v) if i not in VALIDATION] for k, v in by_level.items()}
    out = []
    for trivial, easy in zip(kept["trivial"], kept["easy"]):
        out += [trivial, easy]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(out[:LINES]) + "\n")
    print(f"{OUT.relative_to(ROOT)}: {min(LINES, len(out))} instances")


if __name__ == "__main__":
    main()
