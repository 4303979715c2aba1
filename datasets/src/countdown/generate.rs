//! Deterministic Countdown generator: named difficulty levels, targets reachable by construction.
//!
//! A problem is built by drawing the numbers and then combining random pairs with a random allowed
//! operator until one value is left (the classic Countdown rule: every intermediate result a
//! positive integer). The target is that value, so it is reachable and the construction is the
//! `solution`. Problems are unique per file set by (sorted numbers, target).

use std::collections::HashSet;

use serde::Serialize;

use crate::countdown::expr::Op;
use flywheel_core::SplitMix64;

/// Generator parameters of one difficulty level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub name: &'static str,
    /// How many numbers a problem has (one is drawn uniformly).
    pub counts: &'static [usize],
    /// Numbers are drawn from `1..=max_value`.
    pub max_value: u64,
    /// Operators the construction may use (the verifier always accepts all four).
    pub ops: &'static [Op],
    /// Targets lie in `1..=max_target`.
    pub max_target: i64,
}

/// The levels, easiest first. `hard` is the paper's (TinyZero Countdown-Tasks-3to4) setting.
pub const LEVELS: [Level; 4] = [
    Level {
        name: "trivial",
        counts: &[2],
        max_value: 99,
        ops: &[Op::Add, Op::Sub],
        max_target: 100,
    },
    Level {
        name: "easy",
        counts: &[2],
        max_value: 99,
        ops: &Op::ALL,
        max_target: 100,
    },
    Level {
        name: "medium",
        counts: &[3],
        max_value: 50,
        ops: &Op::ALL,
        max_target: 100,
    },
    Level {
        name: "hard",
        counts: &[3, 4],
        max_value: 99,
        ops: &Op::ALL,
        max_target: 100,
    },
];

/// Looks a level up by name; `paper` is an alias of `hard`.
pub fn level(name: &str) -> Option<&'static Level> {
    let name = if name == "paper" { "hard" } else { name };
    LEVELS.iter().find(|l| l.name == name)
}

/// One generated problem, serialized in this field order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub id: String,
    pub level: String,
    pub nums: Vec<u64>,
    pub target: i64,
    pub solution: String,
}

/// Identity of a problem for de-duplication: order of the numbers does not matter.
pub type ProblemKey = (Vec<u64>, i64);

fn key(nums: &[u64], target: i64) -> ProblemKey {
    let mut sorted = nums.to_vec();
    sorted.sort_unstable();
    (sorted, target)
}

fn combine(op: Op, a: u64, b: u64) -> Option<u64> {
    match op {
        Op::Add => a.checked_add(b),
        Op::Sub => (a > b).then(|| a - b),
        Op::Mul => a.checked_mul(b),
        Op::Div => (a.checked_rem(b) == Some(0)).then(|| a / b),
    }
}

/// One random construction over `nums`; `None` when a step has no valid operator.
fn construct(rng: &mut SplitMix64, nums: &[u64], ops: &[Op]) -> Option<(u64, String)> {
    let mut pool: Vec<(u64, String)> = nums.iter().map(|n| (*n, n.to_string())).collect();
    while pool.len() > 1 {
        let i = rng.index(pool.len());
        let (a, ea) = pool.swap_remove(i);
        let j = rng.index(pool.len());
        let (b, eb) = pool.swap_remove(j);
        let mut options: Vec<(u64, String)> = Vec::with_capacity(8);
        for &op in ops {
            for (x, ex, y, ey) in [(a, &ea, b, &eb), (b, &eb, a, &ea)] {
                if let Some(v) = combine(op, x, y) {
                    options.push((v, format!("({ex} {} {ey})", op.symbol())));
                }
                // Commutative operators need only one orientation.
                if matches!(op, Op::Add | Op::Mul) {
                    break;
                }
            }
        }
        let pick = rng.choose(&options)?.clone();
        pool.push(pick);
    }
    let (v, e) = pool.pop()?;
    let e = e
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .map_or(e.clone(), str::to_string);
    Some((v, e))
}

/// Generates `count` distinct problems of `level`, skipping (and recording) keys in `seen`.
pub fn generate(
    level: &Level,
    count: usize,
    seed: u64,
    id_prefix: &str,
    seen: &mut HashSet<ProblemKey>,
) -> Vec<Problem> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(count);
    // Bounded so an impossible request (too few distinct problems) ends instead of spinning.
    let mut budget = count.saturating_mul(1_000).saturating_add(100_000);
    while out.len() < count && budget > 0 {
        budget -= 1;
        let n = *rng.choose(level.counts).unwrap_or(&2);
        let nums: Vec<u64> = (0..n).map(|_| rng.range(1, level.max_value)).collect();
        let Some((value, solution)) = construct(&mut rng, &nums, level.ops) else {
            continue;
        };
        let Ok(target) = i64::try_from(value) else {
            continue;
        };
        if !(1..=level.max_target).contains(&target) {
            continue;
        }
        // A target equal to one of the numbers is reachable but degenerate-looking; keep it
        // only for 3+ numbers where it still needs real work.
        if n == 2 && nums.iter().any(|&x| x as i64 == target) {
            continue;
        }
        if !seen.insert(key(&nums, target)) {
            continue;
        }
        out.push(Problem {
            id: format!("{id_prefix}-{}-{:05}", level.name, out.len() + 1),
            level: level.name.to_string(),
            nums,
            target,
            solution,
        });
    }
    out
}

/// Problems per level in the shipped splits.
pub const TEST_PER_LEVEL: usize = 300;
pub const TRAIN_PER_LEVEL: usize = 2000;
const TEST_SEED: u64 = 0xC0DE_0001;
const TRAIN_SEED: u64 = 0xC0DE_0002;

/// Renders problems as JSONL.
pub fn to_jsonl(problems: &[Problem]) -> String {
    let mut s = String::new();
    for p in problems {
        if let Ok(line) = serde_json::to_string(p) {
            s.push_str(&line);
            s.push('\n');
        }
    }
    s
}

/// The shipped files as `(path relative to datasets/data, contents)`. The test split is generated
/// first and the train split skips its problems, so the splits are disjoint.
pub fn shipped_files() -> Vec<(String, String)> {
    let mut seen = HashSet::new();
    let mut test = Vec::new();
    let mut train = Vec::new();
    for (i, level) in LEVELS.iter().enumerate() {
        test.extend(generate(
            level,
            TEST_PER_LEVEL,
            TEST_SEED + i as u64,
            "cd-test",
            &mut seen,
        ));
    }
    for (i, level) in LEVELS.iter().enumerate() {
        train.extend(generate(
            level,
            TRAIN_PER_LEVEL,
            TRAIN_SEED + i as u64 * 1000,
            "cd-train",
            &mut seen,
        ));
    }
    vec![
        ("countdown/test.jsonl".to_string(), to_jsonl(&test)),
        ("countdown/train.jsonl".to_string(), to_jsonl(&train)),
    ]
}
