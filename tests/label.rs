//! `flywheel label` on a real generate run: the tiny model on the user task it passes often, so
//! groups have both outcomes. Every example is checked against the store it came from, and the
//! README's `train.parquet` table against the declared columns.

mod common;

use std::collections::HashMap;
use std::path::Path;

use flywheel::commands::generate::{self, GenerateArgs};
use flywheel::commands::label::{self, LabelArgs};
use flywheel_store::{read_train, ReflectionRecord, Store};

fn generate_args(out: &Path) -> GenerateArgs {
    let (task, data) = common::tiny_task();
    GenerateArgs {
        task: task.display().to_string(),
        input: data,
        limit: Some(24),
        max_new_tokens: 12,
        seed: 3,
        prefix_cache_mib: 64,
        ..common::tiny_generate_args(out)
    }
}

fn label_args(run: &Path) -> LabelArgs {
    common::label_args(run)
}

#[test]
fn examples_are_the_stored_reflections_token_for_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("run");
    let gen = generate::run(&generate_args(&run)).expect("generate");
    assert!(
        gen.store.attempts_passed > 0,
        "the user task must pass sometimes"
    );
    assert!(gen.store.retries_passed > 0, "and some retries must pass");
    let report = label::run(&label_args(&run)).expect("label");
    assert!(
        report.counts.groups_mixed > 0,
        "no mixed group: the fixture task no longer exercises the pass path ({:?})",
        report.counts
    );
    assert_eq!(report.counts.reflections, gen.store.reflections);
    let (_, examples) = read_train(&run.join("train.parquet")).expect("train.parquet");
    assert_eq!(examples.len() as u64, report.counts.kept);
    assert!(!examples.is_empty());

    let store = Store::open_existing(&run).expect("store");
    let mut reflections: HashMap<(u64, u32, u32), ReflectionRecord> = HashMap::new();
    store
        .for_each_reflection(|r| {
            reflections.insert((r.task_index, r.attempt, r.reflection), r);
            Ok(())
        })
        .expect("reflections");
    let mut retries = HashMap::new();
    store
        .for_each_retry(|r| {
            retries.insert((r.task_index, r.attempt, r.reflection), r.pass);
            Ok(())
        })
        .expect("retries");
    for e in &examples {
        let key = (e.task_index, e.attempt, e.reflection);
        let span = (e.span_start as usize, e.span_end as usize);
        let r = &reflections[&key];
        let g = &r.generation;
        assert_eq!(
            &e.input_ids[..span.0],
            g.prompt_ids.as_slice(),
            "{key:?}: prompt"
        );
        assert_eq!(
            &e.input_ids[span.0..span.1],
            g.token_ids.as_slice(),
            "{key:?}: span"
        );
        assert_eq!(span.1, e.input_ids.len());
        assert_eq!(e.sampler_logprobs, g.logprobs, "{key:?}: sampler log-probs");
        assert_eq!(
            e.reward,
            if retries[&key] { 1.0 } else { 0.0 },
            "{key:?}: reward"
        );
    }

    // For the independent check (tests/scripts/label_check.py), keep the run where asked.
    if let Some(keep) = std::env::var_os("FLYWHEEL_KEEP_LABEL_RUN") {
        let keep = Path::new(&keep);
        std::fs::create_dir_all(keep).expect("keep dir");
        for f in ["rollouts.parquet", "train.parquet"] {
            std::fs::copy(run.join(f), keep.join(f)).expect("keep");
        }
    }
    // A rerun replaces the file with the same rows (labelling is a pure function of the run).
    let again = label::run(&label_args(&run)).expect("label again");
    assert_eq!(again.counts, report.counts);
    let (_, rows) = read_train(&run.join("train.parquet")).expect("train.parquet");
    assert_eq!(rows, examples);
}

#[test]
fn attempt_span_examples_are_the_stored_attempts_grouped_by_task() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("run");
    generate::run(&GenerateArgs {
        attempts: 4,
        reflections: 0,
        ..generate_args(&run)
    })
    .expect("generate");
    let report = label::run(&LabelArgs {
        span: label::SpanArg::Attempt,
        ..label_args(&run)
    })
    .expect("label");
    assert!(
        report.counts.groups_mixed > 0,
        "no task with both outcomes: {:?}",
        report.counts
    );
    assert_eq!(report.counts.reflections, 24 * 4, "every attempt is a span");
    let (meta, examples) = read_train(&run.join("train.parquet")).expect("train.parquet");
    assert_eq!(meta.span, flywheel_store::Span::Attempt);
    assert_eq!(examples.len() as u64, report.counts.kept);
    let store = Store::open_existing(&run).expect("store");
    let mut attempts = HashMap::new();
    store
        .for_each_attempt(|a| {
            attempts.insert((a.task_index, a.attempt), a);
            Ok(())
        })
        .expect("attempts");
    let mut groups: HashMap<u64, Vec<f32>> = HashMap::new();
    for e in &examples {
        let a = &attempts[&(e.task_index, e.attempt)];
        let g = &a.generation;
        let s = e.span_start as usize;
        assert_eq!(e.reflection, 0);
        assert_eq!(&e.input_ids[..s], g.prompt_ids.as_slice());
        assert_eq!(&e.input_ids[s..], g.token_ids.as_slice());
        assert_eq!(e.sampler_logprobs, g.logprobs);
        assert_eq!(e.reward, if a.pass { 1.0 } else { 0.0 });
        groups.entry(e.task_index).or_default().push(e.advantage);
    }
    // For the independent check (`label_check.py --span attempt`), keep the run where asked.
    if let Some(keep) = std::env::var_os("FLYWHEEL_KEEP_LABEL_RUN") {
        let keep = Path::new(&keep).join("attempt");
        std::fs::create_dir_all(&keep).expect("keep dir");
        for f in ["rollouts.parquet", "train.parquet"] {
            std::fs::copy(run.join(f), keep.join(f)).expect("keep");
        }
    }
    // A group is a task: its advantages sum to zero and it holds all four attempts.
    for (t, adv) in &groups {
        assert_eq!(adv.len(), 4, "task {t}");
        assert!(adv.iter().sum::<f32>().abs() < 1e-4, "task {t}: {adv:?}");
    }
}

#[test]
fn label_cli_prints_json_and_a_summary_and_fails_cleanly_on_a_missing_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flywheel"))
        .args(["label", "--run"])
        .arg(dir.path().join("missing"))
        .output()
        .expect("flywheel");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: cannot open"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn readme_documents_every_train_parquet_column() {
    common::assert_readme_documents("train.parquet", flywheel_store::TRAIN_COLUMNS);
}
