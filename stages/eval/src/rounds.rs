//! Held-out results across the rounds of a run: the rows of `eval.parquet` (one per round and
//! level, each with the paired change from round 0 on the same tasks) and their Markdown table.

use flywheel_store::EvalRow;

use crate::summary::{compare, summarize, Outcome, PairedChange};

/// One evaluated model of a run.
pub struct RoundEval<'a> {
    /// The round whose model was evaluated.
    pub round: u32,
    /// SHA-256 of its weights.
    pub model_hash: &'a str,
    /// Samples per task.
    pub samples_per_task: u32,
    /// Sampling temperature (0: greedy).
    pub temperature: f64,
    /// Its outcomes.
    pub outcomes: &'a [Outcome],
}

/// The rows of one evaluated round, `all` first then each level; the changes are paired with
/// `baseline` (round 0's outcomes) on the (task, sample) pairs both hold, level by level.
pub fn rows(e: &RoundEval<'_>, baseline: &[Outcome]) -> Vec<EvalRow> {
    summarize(e.outcomes)
        .into_iter()
        .map(|s| {
            let of_level = |os: &[Outcome]| -> Vec<Outcome> {
                os.iter()
                    .filter(|o| s.level == "all" || o.level.as_deref() == Some(s.level.as_str()))
                    .cloned()
                    .collect()
            };
            // A level round 0 never saw has nothing to pair with: no change, p = 1.
            let change = compare(&of_level(baseline), &of_level(e.outcomes)).ok();
            let none = PairedChange {
                pairs: 0,
                broken: 0,
                fixed: 0,
                change: 0.0,
                interval: crate::Interval {
                    low: 0.0,
                    high: 0.0,
                },
                p_value: 1.0,
            };
            let (f, c) = change.map_or((none, none), |c| (c.first, c.second));
            EvalRow {
                round: e.round,
                level: s.level.clone(),
                model_hash: e.model_hash.to_owned(),
                samples_per_task: e.samples_per_task,
                temperature: e.temperature,
                tasks: s.tasks,
                samples: s.samples,
                first_passed: s.first.passed,
                first: s.first.rate,
                first_low: s.first.interval.low,
                first_high: s.first.interval.high,
                second_passed: s.second.passed,
                second: s.second.rate,
                second_low: s.second.interval.low,
                second_high: s.second.interval.high,
                pairs: f.pairs,
                first_change: f.change,
                first_change_low: f.interval.low,
                first_change_high: f.interval.high,
                first_p: f.p_value,
                second_change: c.change,
                second_change_low: c.interval.low,
                second_change_high: c.interval.high,
                second_p: c.p_value,
            }
        })
        .collect()
}

/// The rows as a Markdown table, one line per (round, level), in percent.
pub fn markdown(rows: &[EvalRow]) -> String {
    let acc = crate::summary::percent;
    let change = |v: f64, lo: f64, hi: f64, p: f64, round: u32| {
        if round == 0 {
            "–".to_owned()
        } else {
            format!(
                "{:+.1} [{:+.1}, {:+.1}] p={p:.3}",
                100.0 * v,
                100.0 * lo,
                100.0 * hi
            )
        }
    };
    let mut s = String::from(
        "| round | level | samples | first try (95% CI) | second try (95% CI) | first try change from round 0 (paired bootstrap 95%) | second try change from round 0 |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.round,
            r.level,
            r.samples,
            acc(r.first, r.first_low, r.first_high),
            acc(r.second, r.second_low, r.second_high),
            change(
                r.first_change,
                r.first_change_low,
                r.first_change_high,
                r.first_p,
                r.round
            ),
            change(
                r.second_change,
                r.second_change_low,
                r.second_change_high,
                r.second_p,
                r.round
            ),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(id: &str, level: &str, first: bool, second: bool) -> Outcome {
        Outcome {
            task_id: id.into(),
            level: Some(level.into()),
            attempt: 0,
            first,
            second,
        }
    }

    #[test]
    fn changes_are_paired_per_level_against_round_zero() {
        let base = vec![
            o("a", "easy", false, false),
            o("b", "easy", false, true),
            o("c", "hard", true, true),
        ];
        let after = vec![
            o("a", "easy", true, true),
            o("b", "easy", true, true),
            o("c", "hard", false, false),
        ];
        let r0 = rows(
            &RoundEval {
                round: 0,
                model_hash: "h0",
                samples_per_task: 1,
                temperature: 0.0,
                outcomes: &base,
            },
            &base,
        );
        assert_eq!(r0.len(), 3);
        assert!(r0.iter().all(|r| r.first_change == 0.0 && r.pairs > 0));
        let r1 = rows(
            &RoundEval {
                round: 1,
                model_hash: "h1",
                samples_per_task: 1,
                temperature: 0.0,
                outcomes: &after,
            },
            &base,
        );
        let by = |l: &str| r1.iter().find(|r| r.level == l).unwrap();
        // all: first try 1/3 → 2/3 (two fixed, one broken); easy: 0/2 → 2/2; hard: 1/1 → 0/1.
        assert_eq!((by("all").pairs, by("all").first_passed), (3, 2));
        assert!((by("all").first_change - 1.0 / 3.0).abs() < 1e-12);
        assert!((by("easy").first_change - 1.0).abs() < 1e-12);
        assert!((by("hard").first_change + 1.0).abs() < 1e-12);
        assert!((by("easy").second_change - 0.5).abs() < 1e-12);
        let table = markdown(&[r0[0].clone(), by("all").clone()]);
        assert!(table.contains("| 1 | all | 3 | 66.7% ["), "{table}");
        assert!(table.contains("+33.3 ["), "{table}");
    }
}
