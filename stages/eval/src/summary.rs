//! From an evaluation run's records to accuracies: one [`Outcome`] per (task, attempt), then
//! per-level summaries, and the paired change between two evaluations of the same tasks.

use std::collections::{BTreeMap, HashMap};

use flywheel_store::{Store, StoreError};
use serde::Serialize;

use crate::stats::{mcnemar_exact, paired_bootstrap, wilson, Interval, Z95};

/// Bootstrap resamples of a paired change.
const RESAMPLES: usize = 10_000;

/// Why an evaluation cannot be summarized.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A failed attempt has no retry yet: the run is not finished.
    #[error(
        "task {task} attempt {attempt} failed and has no retry: the evaluation run is unfinished"
    )]
    Incomplete {
        /// The task id.
        task: String,
        /// The attempt.
        attempt: u32,
    },
    /// Two evaluations share no (task, sample).
    #[error("the two evaluations share no task: they are not of the same held-out set")]
    NoCommonTasks,
}

/// How one sample of one task went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The instance's id.
    pub task_id: String,
    /// Its level, where the task has levels.
    pub level: Option<String>,
    /// The sample (attempt number).
    pub attempt: u32,
    /// The first try passed.
    pub first: bool,
    /// The first try passed, or the retry after one reflection did.
    pub second: bool,
}

/// One accuracy with its interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Accuracy {
    /// Samples that passed.
    pub passed: u64,
    /// passed / samples.
    pub rate: f64,
    /// 95% Wilson interval of the rate.
    pub interval: Interval,
}

impl Accuracy {
    fn of(passed: u64, n: u64) -> Self {
        Self {
            passed,
            rate: if n == 0 {
                0.0
            } else {
                passed as f64 / n as f64
            },
            interval: wilson(passed, n, Z95),
        }
    }
}

/// Accuracies of one level (`all` for every task).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LevelSummary {
    /// The level, or `all`.
    pub level: String,
    /// Distinct tasks.
    pub tasks: u64,
    /// Samples (tasks × samples per task).
    pub samples: u64,
    /// First-try accuracy.
    pub first: Accuracy,
    /// Second-try accuracy (after one reflection and retry on each failure).
    pub second: Accuracy,
}

/// The outcomes of an evaluation run, in task order.
pub fn outcomes(store: &Store) -> Result<Vec<Outcome>, EvalError> {
    let mut tasks: HashMap<u64, (String, Option<String>)> = HashMap::new();
    store.for_each_task(|t| {
        tasks.insert(t.task_index, (t.id, t.level));
        Ok(())
    })?;
    let mut retried: HashMap<(u64, u32), bool> = HashMap::new();
    store.for_each_retry(|r| {
        *retried.entry((r.task_index, r.attempt)).or_default() |= r.pass;
        Ok(())
    })?;
    let mut out = Vec::new();
    let mut missing = None;
    store.for_each_attempt(|a| {
        let (id, level) = tasks.get(&a.task_index).cloned().unwrap_or_default();
        let second = a.pass
            || retried
                .get(&(a.task_index, a.attempt))
                .copied()
                .unwrap_or(false);
        if !a.pass && !retried.contains_key(&(a.task_index, a.attempt)) && missing.is_none() {
            missing = Some((id.clone(), a.attempt));
        }
        out.push(Outcome {
            task_id: id,
            level,
            attempt: a.attempt,
            first: a.pass,
            second,
        });
        Ok(())
    })?;
    if let Some((task, attempt)) = missing {
        return Err(EvalError::Incomplete { task, attempt });
    }
    Ok(out)
}

/// Accuracies overall (`all`, first) and per level (in name order).
pub fn summarize(outcomes: &[Outcome]) -> Vec<LevelSummary> {
    let mut groups: BTreeMap<String, Vec<&Outcome>> = BTreeMap::new();
    for o in outcomes {
        if let Some(l) = &o.level {
            groups.entry(l.clone()).or_default().push(o);
        }
    }
    let one = |level: String, os: &[&Outcome]| {
        let n = os.len() as u64;
        let mut ids: Vec<&str> = os.iter().map(|o| o.task_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        LevelSummary {
            level,
            tasks: ids.len() as u64,
            samples: n,
            first: Accuracy::of(os.iter().filter(|o| o.first).count() as u64, n),
            second: Accuracy::of(os.iter().filter(|o| o.second).count() as u64, n),
        }
    };
    let all: Vec<&Outcome> = outcomes.iter().collect();
    let mut out = vec![one("all".into(), &all)];
    out.extend(groups.into_iter().map(|(l, os)| one(l, &os)));
    out
}

/// The paired change of one accuracy between two evaluations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PairedChange {
    /// Pairs compared (same task, same sample).
    pub pairs: u64,
    /// Passed before, failed after.
    pub broken: u64,
    /// Failed before, passed after.
    pub fixed: u64,
    /// (fixed − broken) / pairs: the change of the accuracy on these pairs.
    pub change: f64,
    /// 95% paired-bootstrap percentile interval of `change` (10,000 resamples, seeded).
    pub interval: Interval,
    /// Two-sided exact McNemar p-value.
    pub p_value: f64,
}

/// The paired changes of both accuracies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Change {
    /// First-try accuracy.
    pub first: PairedChange,
    /// Second-try accuracy.
    pub second: PairedChange,
}

/// The change from `before` to `after` on the (task, sample) pairs both hold.
pub fn compare(before: &[Outcome], after: &[Outcome]) -> Result<Change, EvalError> {
    let index: HashMap<(&str, u32), &Outcome> = before
        .iter()
        .map(|o| ((o.task_id.as_str(), o.attempt), o))
        .collect();
    let pairs: Vec<(&Outcome, &Outcome)> = after
        .iter()
        .filter_map(|a| index.get(&(a.task_id.as_str(), a.attempt)).map(|b| (*b, a)))
        .collect();
    if pairs.is_empty() {
        return Err(EvalError::NoCommonTasks);
    }
    let one = |pick: fn(&Outcome) -> bool, seed: u64| {
        let bits: Vec<(bool, bool)> = pairs.iter().map(|(b, a)| (pick(b), pick(a))).collect();
        let broken = bits.iter().filter(|(b, a)| *b && !*a).count() as u64;
        let fixed = bits.iter().filter(|(b, a)| !*b && *a).count() as u64;
        let n = bits.len() as u64;
        PairedChange {
            pairs: n,
            broken,
            fixed,
            change: (fixed as f64 - broken as f64) / n as f64,
            interval: paired_bootstrap(&bits, RESAMPLES, seed).unwrap_or(Interval {
                low: 0.0,
                high: 0.0,
            }),
            p_value: mcnemar_exact(broken, fixed),
        }
    };
    Ok(Change {
        first: one(|o| o.first, 1),
        second: one(|o| o.second, 2),
    })
}

/// A rate and its interval in percent, as the tables print them: `12.5% [3.5, 36.0]`.
pub fn percent(rate: f64, low: f64, high: f64) -> String {
    format!(
        "{:.1}% [{:.1}, {:.1}]",
        100.0 * rate,
        100.0 * low,
        100.0 * high
    )
}

/// The summaries as a Markdown table (accuracy and interval in percent).
pub fn markdown(rows: &[LevelSummary]) -> String {
    let pct = |a: &Accuracy| percent(a.rate, a.interval.low, a.interval.high);
    let mut s = String::from(
        "| level | tasks | samples | first try (95% CI) | second try (95% CI) |\n|---|---|---|---|---|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r.level,
            r.tasks,
            r.samples,
            pct(&r.first),
            pct(&r.second)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(id: &str, level: &str, attempt: u32, first: bool, second: bool) -> Outcome {
        Outcome {
            task_id: id.into(),
            level: Some(level.into()),
            attempt,
            first,
            second,
        }
    }

    #[test]
    fn levels_and_pairs_are_counted_by_hand() {
        let before = vec![
            o("a", "easy", 0, true, true),
            o("b", "easy", 0, false, true),
            o("c", "hard", 0, false, false),
            o("d", "hard", 0, false, false),
        ];
        let s = summarize(&before);
        assert_eq!(s.len(), 3);
        assert_eq!(
            (
                s[0].level.as_str(),
                s[0].samples,
                s[0].first.passed,
                s[0].second.passed
            ),
            ("all", 4, 1, 2)
        );
        assert_eq!(
            (s[1].level.as_str(), s[1].first.passed, s[1].second.passed),
            ("easy", 1, 2)
        );
        assert_eq!(
            (s[2].level.as_str(), s[2].first.passed, s[2].second.passed),
            ("hard", 0, 0)
        );
        assert_eq!(s[0].first.interval, wilson(1, 4, Z95));
        let after = vec![
            o("a", "easy", 0, false, true),
            o("b", "easy", 0, true, true),
            o("c", "hard", 0, true, true),
            o("d", "hard", 0, false, true),
            o("e", "hard", 0, true, true),
        ];
        let c = compare(&before, &after).unwrap();
        assert_eq!((c.first.pairs, c.first.broken, c.first.fixed), (4, 1, 2));
        assert!((c.first.change - 0.25).abs() < 1e-12);
        assert_eq!((c.second.broken, c.second.fixed), (0, 2));
        assert!((c.second.p_value - 0.5).abs() < 1e-12);
        assert!(markdown(&s).contains("| easy | 2 | 2 | 50.0% ["));
        assert!(matches!(
            compare(&before, &[o("z", "x", 0, true, true)]),
            Err(EvalError::NoCommonTasks)
        ));
    }
}
