//! `flywheel eval` on the tiny model and the user task it passes often: the accuracies equal a
//! recount of the stored verdicts, a rerun resumes to the same figures, a baseline of the same
//! run changes nothing, samples multiply the count, and greedy samples are refused.

mod common;

use std::path::Path;

use flywheel::commands::eval::{self, EvalSpec};
use flywheel_store::Store;

fn args(out: &Path) -> EvalSpec {
    let (task, input) = common::tiny_task();
    EvalSpec {
        model: common::tiny_onnx().to_owned(),
        task: task.display().to_string(),
        input,
        task_flags: Default::default(),
        out: out.to_owned(),
        limit: Some(24),
        samples: 1,
        temperature: 0.0,
        max_new_tokens: 12,
        batch_size: 8,
        seed: 0,
        baseline: None,
        device: flywheel::commands::DeviceArg::Cpu,
        threads: 1,
        prefix_cache_mib: 64,
        quiet: true,
    }
}

/// (samples, first-try passes, second-try passes) counted straight from the store.
fn recount(dir: &Path) -> (u64, u64, u64) {
    let store = Store::open_existing(dir).expect("store");
    let mut attempts = Vec::new();
    store
        .for_each_attempt(|a| {
            attempts.push((a.task_index, a.attempt, a.pass));
            Ok(())
        })
        .expect("attempts");
    let mut fixed = std::collections::HashSet::new();
    store
        .for_each_retry(|r| {
            if r.pass {
                fixed.insert((r.task_index, r.attempt));
            }
            Ok(())
        })
        .expect("retries");
    let first = attempts.iter().filter(|a| a.2).count() as u64;
    let second = attempts
        .iter()
        .filter(|a| a.2 || fixed.contains(&(a.0, a.1)))
        .count() as u64;
    (attempts.len() as u64, first, second)
}

#[test]
fn accuracies_equal_the_stored_verdicts_and_a_baseline_pairs_every_task() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("eval");
    let r = eval::evaluate(&args(&out)).expect("eval");
    let all = &r.levels[0];
    assert_eq!(all.level, "all");
    let (n, first, second) = recount(&out);
    assert_eq!(
        (all.samples, all.first.passed, all.second.passed),
        (n, first, second)
    );
    assert_eq!(n, 24);
    assert!(second >= first);
    assert!(
        all.second.interval.low <= all.second.rate && all.second.rate < all.second.interval.high
    );
    assert!(out.join("eval.json").is_file());

    // A rerun resumes (nothing to generate) to the same figures; against itself nothing changed.
    let again = eval::evaluate(&EvalSpec {
        baseline: Some(out.clone()),
        ..args(&out)
    })
    .expect("rerun");
    assert_eq!(again.levels, r.levels);
    let c = again.change.expect("change");
    assert_eq!(
        (
            c.first.pairs,
            c.first.fixed,
            c.first.broken,
            c.first.p_value
        ),
        (24, 0, 0, 1.0)
    );
    assert_eq!(c.second.change, 0.0);

    // Sampled evaluation: K samples per task, a different count; greedy samples are refused.
    let sampled = dir.path().join("sampled");
    let s = eval::evaluate(&EvalSpec {
        samples: 2,
        temperature: 1.0,
        baseline: Some(out.clone()),
        ..args(&sampled)
    })
    .expect("sampled");
    assert_eq!((s.levels[0].tasks, s.levels[0].samples), (24, 48));
    let (n, first, second) = recount(&sampled);
    assert_eq!(
        (
            s.levels[0].samples,
            s.levels[0].first.passed,
            s.levels[0].second.passed
        ),
        (n, first, second)
    );
    assert!(
        first > 0 && second > first,
        "sampling, the tiny model passes sometimes and retries fix some: {first} {second}"
    );
    assert_eq!(s.change.expect("paired on sample 0").first.pairs, 24);
    let e = eval::evaluate(&EvalSpec {
        samples: 2,
        ..args(&dir.path().join("greedy"))
    })
    .unwrap_err();
    assert!(e.to_string().contains("--temperature > 0"), "{e}");
    assert!(!dir.path().join("greedy").exists());
}
