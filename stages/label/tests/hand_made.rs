//! `flywheel label` on hand-made rollouts, written through the store's own writer and export, with
//! known verdicts, truncations and group sizes: the kept rows and advantages equal values
//! computed by hand here, for the three scalings and the filters.

use std::path::{Path, PathBuf};

use arrow::array::{Array, Float32Array, ListArray, StringArray};
use flywheel_label::{label_runs, LabelConfig, LabelError};
use flywheel_store::{
    export_rollouts, read_train, AttemptRecord, FinishReason, Generation, LabelMeta,
    ReflectionRecord, RetryRecord, RunMeta, Scale, Span, Store, TaskRecord, TrainExample,
    WriteBatch, ROLLOUTS_FILE,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn meta(shard: u32, shards: u32) -> RunMeta {
    RunMeta {
        model_hash: "m".repeat(64),
        model_files_hash: "f".repeat(64),
        task: "countdown".into(),
        task_hash: "t".repeat(64),
        attempts: 2,
        reflections: 4,
        temperature: 0.7,
        reflection_temperature: None,
        top_p: 0.95,
        top_k: 50,
        max_new_tokens: 3,
        seed: 1,
        shard_index: shard,
        shard_count: shards,
        limit: None,
    }
}

fn generation(prompt: Vec<u32>, tokens: Vec<u32>, finish: FinishReason) -> Generation {
    let logprobs = tokens.iter().map(|&t| -(t as f32) / 1000.0).collect();
    Generation {
        prompt_ids: prompt,
        token_ids: tokens,
        logprobs,
        text: "x".into(),
        finish_reason: finish,
        seed: 0,
        started_unix_ms: 0,
        seconds: 0.0,
    }
}

/// One failed attempt of task `t` with reflections whose retries pass as `passes` and which are
/// cut at the token limit where `truncated`.
fn failed_group(b: &mut WriteBatch, t: u64, passes: &[bool], truncated: &[bool]) {
    b.tasks.push(TaskRecord {
        task_index: t,
        id: format!("task-{t}"),
        level: t.is_multiple_of(2).then(|| "easy".to_string()),
        fields_json: "{}".into(),
    });
    b.attempts.push(AttemptRecord {
        task_index: t,
        attempt: 0,
        generation: generation(vec![1, 2], vec![7, 2], FinishReason::Eos),
        pass: false,
        reason: "wrong_value".into(),
    });
    for (g, (&pass, &cut)) in passes.iter().zip(truncated).enumerate() {
        let g32 = g as u32;
        let (tokens, finish) = if cut {
            (vec![100 + g32, 101, 102], FinishReason::Length)
        } else {
            (vec![100 + g32, 2], FinishReason::Eos)
        };
        b.reflections.push(ReflectionRecord {
            task_index: t,
            attempt: 0,
            reflection: g32,
            generation: generation(vec![1, 2, 7, 2, 9, t as u32], tokens, finish),
        });
        b.retries.push(RetryRecord {
            task_index: t,
            attempt: 0,
            reflection: g32,
            generation: generation(
                vec![1, 2, 7, 2, 9, 100 + g32, 2, 11],
                vec![8, 2],
                FinishReason::Eos,
            ),
            pass,
            reason: if pass {
                "ok".into()
            } else {
                "wrong_value".into()
            },
        });
    }
}

/// Writes a run through the store and exports its rollouts.
fn write_run(dir: &Path, meta: &RunMeta, batch: &WriteBatch) -> PathBuf {
    let store = Store::open(dir, meta).expect("store");
    store.write(batch).expect("write");
    export_rollouts(&store, &dir.join(ROLLOUTS_FILE)).expect("export");
    dir.to_path_buf()
}

/// The hand-made round: five tasks.
/// - task 0: retries [pass, fail, fail, pass] — mixed, G = 4;
/// - task 1: retries all fail — zero variance;
/// - task 2: retries [pass, fail, pass, pass], reflections 0 and 3 truncated;
/// - task 3: retries [pass, fail, fail, fail], the three failing reflections truncated (with
///   --drop-truncated one row is left: zero variance);
/// - task 4: the attempt passed, no reflections.
fn hand_made(dir: &Path) -> PathBuf {
    let mut b = WriteBatch::default();
    let (t, f) = (true, false);
    failed_group(&mut b, 0, &[t, f, f, t], &[f, f, f, f]);
    failed_group(&mut b, 1, &[f, f, f, f], &[f, f, f, f]);
    failed_group(&mut b, 2, &[t, f, t, t], &[t, f, f, t]);
    failed_group(&mut b, 3, &[t, f, f, f], &[f, t, t, t]);
    b.tasks.push(TaskRecord {
        task_index: 4,
        id: "task-4".into(),
        level: None,
        fields_json: "{}".into(),
    });
    b.attempts.push(AttemptRecord {
        task_index: 4,
        attempt: 0,
        generation: generation(vec![1], vec![5, 2], FinishReason::Eos),
        pass: true,
        reason: "ok".into(),
    });
    write_run(dir, &meta(0, 1), &b)
}

/// The rows of a `train.parquet`, read through the store's reader (which checks the columns
/// against the declaration).
fn read(path: &Path) -> (Vec<TrainExample>, LabelMeta) {
    let (meta, rows) = read_train(path).expect("train.parquet");
    (rows, meta)
}

fn keys(rows: &[TrainExample]) -> Vec<(u64, u32)> {
    rows.iter().map(|r| (r.task_index, r.reflection)).collect()
}

fn close(got: f32, want: f64) -> bool {
    (f64::from(got) - want).abs() <= 1e-6 * want.abs().max(1.0)
}

fn run(config: &LabelConfig) -> (Vec<TrainExample>, flywheel_label::LabelReport) {
    let dir = tempfile::tempdir().unwrap();
    let run = hand_made(dir.path());
    let out = dir.path().join("train.parquet");
    let report = label_runs(&[run], &out, config).expect("label");
    let (rows, meta) = read(&out);
    assert_eq!(meta.scale, config.scale);
    assert_eq!((meta.temperature, meta.top_p, meta.top_k), (0.7, 0.95, 50));
    (rows, report)
}

#[test]
fn default_settings_keep_mixed_groups_with_group_scaled_advantages() {
    let (rows, report) = run(&LabelConfig::default());
    // Tasks 1 (all fail) and 3 (1 pass of 4 is mixed, so kept) — only task 1 is zero variance.
    assert_eq!(
        keys(&rows),
        vec![
            (0, 0),
            (0, 1),
            (0, 2),
            (0, 3),
            (2, 0),
            (2, 1),
            (2, 2),
            (2, 3),
            (3, 0),
            (3, 1),
            (3, 2),
            (3, 3)
        ]
    );
    // Task 0: rewards 1,0,0,1: mean 0.5, unbiased std sqrt(4 * 0.25 / 3).
    let s0 = (1.0f64 / 3.0).sqrt();
    let a0 = 0.5 / (s0 + 1e-4);
    // Task 2: 1,0,1,1: mean 0.75, std sqrt((3 * 0.0625 + 0.5625) / 3) = 0.5.
    let a2_pass = 0.25 / (0.5 + 1e-4);
    let a2_fail = -0.75 / (0.5 + 1e-4);
    // Task 3: 1,0,0,0: mean 0.25, std 0.5.
    let a3_pass = 0.75 / (0.5 + 1e-4);
    let a3_fail = -0.25 / (0.5 + 1e-4);
    let want = [
        a0, -a0, -a0, a0, a2_pass, a2_fail, a2_pass, a2_pass, a3_pass, a3_fail, a3_fail, a3_fail,
    ];
    for (r, w) in rows.iter().zip(want) {
        assert!(close(r.advantage, w), "{r:?}: want advantage {w}");
    }
    // Truncated reflections are kept by default, their finish reason kept beside them.
    assert_eq!(rows[4].finish_reason, "length");
    assert_eq!(report.counts.groups_seen, 4);
    assert_eq!(report.counts.groups_mixed, 3);
    assert_eq!(report.counts.zero_std_groups, 1);
    assert_eq!(report.counts.dropped_zero_std, 4);
    assert_eq!(report.counts.kept, 12);
    assert!((report.frac_reward_zero_std - 0.25).abs() < 1e-12);
    assert_eq!(report.counts.retries_passed, 2 + 3 + 1);
    assert!((report.reward_mean - 6.0 / 12.0).abs() < 1e-12);
}

#[test]
fn spans_are_the_reflection_tokens_exactly() {
    let (rows, _) = run(&LabelConfig::default());
    for r in &rows {
        let prompt = vec![1, 2, 7, 2, 9, r.task_index as u32];
        let (s, e) = (r.span_start as usize, r.span_end as usize);
        assert_eq!(&r.input_ids[..s], prompt.as_slice(), "{r:?}");
        assert_eq!(e, r.input_ids.len());
        let tokens = &r.input_ids[s..e];
        assert_eq!(tokens[0], 100 + r.reflection);
        let cut = r.finish_reason == "length";
        assert_eq!(
            tokens.len(),
            if cut { 3 } else { 2 },
            "EOS kept, nothing added"
        );
        let want: Vec<f32> = tokens.iter().map(|&t| -(t as f32) / 1000.0).collect();
        assert_eq!(
            r.sampler_logprobs, want,
            "sampler log-probs of the span tokens"
        );
        assert_eq!(r.reward, if r.advantage > 0.0 { 1.0 } else { 0.0 });
    }
}

#[test]
fn drop_truncated_rescores_groups_over_what_is_left() {
    let config = LabelConfig {
        drop_truncated: true,
        ..Default::default()
    };
    let (rows, report) = run(&config);
    // Task 2 keeps reflections 1 (fail) and 2 (pass): mean 0.5, std sqrt(0.5).
    // Task 3 keeps reflection 0 alone: a group of one has no variance and is dropped.
    assert_eq!(
        keys(&rows),
        vec![(0, 0), (0, 1), (0, 2), (0, 3), (2, 1), (2, 2)]
    );
    let a2 = 0.5 / (0.5f64.sqrt() + 1e-4);
    assert!(close(rows[4].advantage, -a2), "{:?}", rows[4]);
    assert!(close(rows[5].advantage, a2), "{:?}", rows[5]);
    assert_eq!(report.counts.dropped_truncated, 2 + 3);
    assert_eq!(
        report.counts.zero_std_groups, 2,
        "task 1, and task 3 left with one row"
    );
    assert_eq!(report.counts.dropped_zero_std, 4 + 1);
}

#[test]
fn keep_zero_std_keeps_a_single_row_group_with_advantage_zero() {
    let config = LabelConfig {
        drop_truncated: true,
        keep_zero_std: true,
        ..Default::default()
    };
    let (rows, _) = run(&config);
    let lone: Vec<&TrainExample> = rows.iter().filter(|r| r.task_index == 3).collect();
    assert_eq!(lone.len(), 1);
    assert_eq!((lone[0].reward, lone[0].advantage), (1.0, 0.0));
    let all_fail: Vec<&TrainExample> = rows.iter().filter(|r| r.task_index == 1).collect();
    assert_eq!(all_fail.len(), 4);
    assert!(all_fail
        .iter()
        .all(|r| r.advantage == 0.0 && r.reward == 0.0));
}

#[test]
fn batch_scaling_divides_by_the_std_of_every_kept_reward() {
    let config = LabelConfig {
        scale: Scale::Batch,
        drop_truncated: true,
        ..Default::default()
    };
    let (rows, _) = run(&config);
    // Kept rewards: task 0 [1,0,0,1], task 2 [0,1]: mean 0.5, unbiased std sqrt(6*0.25/5).
    let s = (1.5f64 / 5.0).sqrt();
    let a = 0.5 / (s + 1e-4);
    let want = [a, -a, -a, a, -a, a];
    for (r, w) in rows.iter().zip(want) {
        assert!(close(r.advantage, w), "{r:?}: want {w}");
    }
}

#[test]
fn no_scaling_centres_on_the_group_mean() {
    let config = LabelConfig {
        scale: Scale::None,
        ..Default::default()
    };
    let (rows, _) = run(&config);
    let want = [
        0.5, -0.5, -0.5, 0.5, 0.25, -0.75, 0.25, 0.25, 0.75, -0.25, -0.25, -0.25,
    ];
    for (r, w) in rows.iter().zip(want) {
        assert!(close(r.advantage, w), "{r:?}: want {w}");
    }
}

#[test]
fn span_length_bounds_drop_rows_before_scoring() {
    // Truncated spans are 3 tokens, the others 2: max 2 drops the truncated ones (as
    // --drop-truncated does here), min 3 keeps only them.
    let short = LabelConfig {
        max_tokens: Some(2),
        ..Default::default()
    };
    let (rows, report) = run(&short);
    assert_eq!(
        keys(&rows),
        vec![(0, 0), (0, 1), (0, 2), (0, 3), (2, 1), (2, 2)]
    );
    assert_eq!(report.counts.dropped_too_long, 5);
    let long = LabelConfig {
        min_tokens: 3,
        keep_zero_std: true,
        ..Default::default()
    };
    let (rows, report) = run(&long);
    assert!(rows.iter().all(|r| r.span_end - r.span_start == 3));
    assert_eq!(report.counts.dropped_too_short, 16 - 5);
}

#[test]
fn shards_concatenate_and_mismatched_or_repeated_shards_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = WriteBatch::default();
    failed_group(&mut a, 0, &[true, false], &[false, false]);
    let mut b = WriteBatch::default();
    failed_group(&mut b, 1, &[false, true], &[false, false]);
    let r0 = write_run(&dir.path().join("s0"), &meta(0, 2), &a);
    let r1 = write_run(&dir.path().join("s1"), &meta(1, 2), &b);
    let out = dir.path().join("train.parquet");
    let report = label_runs(&[r0.clone(), r1.clone()], &out, &LabelConfig::default()).unwrap();
    assert_eq!(report.meta.shards, vec![0, 1]);
    let (rows, _) = read(&out);
    assert_eq!(keys(&rows), vec![(0, 0), (0, 1), (1, 0), (1, 1)]);

    let err = label_runs(&[r0.clone(), r0.clone()], &out, &LabelConfig::default()).unwrap_err();
    assert!(
        matches!(err, LabelError::DuplicateShard { shard: 0, .. }),
        "{err}"
    );

    let mut other = meta(1, 2);
    other.temperature = 1.0;
    let r2 = write_run(&dir.path().join("s2"), &other, &b);
    let before = std::fs::read(&out).unwrap();
    let err = label_runs(&[r0, r2], &out, &LabelConfig::default()).unwrap_err();
    match &err {
        LabelError::ShardMismatch { field, .. } => assert_eq!(field, "temperature"),
        e => panic!("{e}"),
    }
    assert!(err.to_string().contains("temperature"), "{err}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        before,
        "a refused run leaves the old file"
    );
}

#[test]
fn missing_truncated_or_foreign_input_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("train.parquet");
    let err = label_runs(&[dir.path().join("nope")], &out, &LabelConfig::default()).unwrap_err();
    assert!(matches!(err, LabelError::Open { .. }), "{err}");

    let run = hand_made(&dir.path().join("run"));
    let rollouts = run.join(ROLLOUTS_FILE);
    let bytes = std::fs::read(&rollouts).unwrap();
    let cut = dir.path().join("cut.parquet");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    // And the other way round: rollouts are not training examples.
    let err = read_train(&rollouts).unwrap_err();
    assert!(
        err.to_string().contains("not a complete train.parquet"),
        "{err}"
    );
    let err = label_runs(&[cut], &out, &LabelConfig::default()).unwrap_err();
    assert!(matches!(err, LabelError::NotRollouts { .. }), "{err}");
    assert!(err.to_string().contains("cut.parquet"), "{err}");

    // A Parquet file of another table (here: a train.parquet) is not rollouts.
    let train = dir.path().join("t.parquet");
    label_runs(&[run], &train, &LabelConfig::default()).unwrap();
    let err = label_runs(&[train], &out, &LabelConfig::default()).unwrap_err();
    assert!(err.to_string().contains("column 0"), "{err}");
    assert!(!out.exists(), "nothing half-written");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_run_without_reflections_gives_an_empty_valid_file_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = WriteBatch::default();
    b.tasks.push(TaskRecord {
        task_index: 0,
        id: "a".into(),
        level: None,
        fields_json: "{}".into(),
    });
    b.attempts.push(AttemptRecord {
        task_index: 0,
        attempt: 0,
        generation: generation(vec![1], vec![2], FinishReason::Eos),
        pass: true,
        reason: "ok".into(),
    });
    let run = write_run(&dir.path().join("run"), &meta(0, 1), &b);
    let out = dir.path().join("train.parquet");
    let report = label_runs(&[run], &out, &LabelConfig::default()).unwrap();
    assert_eq!(report.counts.kept, 0);
    assert!(report
        .empty_reason
        .as_deref()
        .unwrap_or("")
        .contains("no reflection"));
    let (rows, _) = read(&out);
    assert!(rows.is_empty());
}

/// A hostile rollouts file (written past the store, which would refuse it) whose reflection has
/// one log-prob fewer than tokens is refused, naming the row, and nothing is written.
#[test]
fn a_reflection_whose_logprobs_do_not_pair_with_its_tokens_is_refused() {
    use arrow::array::{ArrayRef, Float32Builder, ListBuilder};
    use arrow::datatypes::{DataType, Field};
    use flywheel_store::table::TableWriter;
    use flywheel_store::{COLUMNS, RUN_META_KEY};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let run = hand_made(&dir.path().join("run"));
    let file = std::fs::File::open(run.join(ROLLOUTS_FILE)).unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let meta = flywheel_store::table::footer_value(builder.metadata(), RUN_META_KEY).unwrap();
    let hostile = dir.path().join("hostile.parquet");
    let mut w = TableWriter::create(&hostile, COLUMNS, &[(RUN_META_KEY, meta)], 1024).unwrap();
    let mut cut = false;
    for batch in builder.build().unwrap() {
        let batch = batch.unwrap();
        let kinds = batch.column_by_name("kind").unwrap();
        let kinds = kinds.as_any().downcast_ref::<StringArray>().unwrap();
        let lps = batch.column_by_name("logprobs").unwrap();
        let lps = lps.as_any().downcast_ref::<ListArray>().unwrap();
        let mut b = ListBuilder::new(Float32Builder::new()).with_field(Field::new(
            "item",
            DataType::Float32,
            false,
        ));
        for i in 0..batch.num_rows() {
            let row = lps.value(i);
            let mut v = row
                .as_any()
                .downcast_ref::<Float32Array>()
                .unwrap()
                .values()
                .to_vec();
            if !cut && kinds.value(i) == "reflection" {
                v.pop();
                cut = true;
            }
            b.values().append_slice(&v);
            b.append(true);
        }
        let columns: Vec<(&str, ArrayRef)> = COLUMNS
            .iter()
            .map(|c| match c.name {
                "logprobs" => (c.name, Arc::new(b.finish()) as ArrayRef),
                n => (n, batch.column_by_name(n).unwrap().clone()),
            })
            .collect();
        w.write(columns).unwrap();
    }
    w.finish().unwrap();
    let out = dir.path().join("train.parquet");
    let err = label_runs(&[hostile], &out, &LabelConfig::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("task 0, attempt 0, reflection 0"), "{msg}");
    assert!(msg.contains("log-prob"), "{msg}");
    assert!(!out.exists());
}

/// Attempts of task `t` with verdicts `passes`; each failed one is followed by one reflection and
/// its passing retry, which the attempt span must ignore.
fn attempt_group(b: &mut WriteBatch, t: u64, passes: &[bool]) {
    b.tasks.push(TaskRecord {
        task_index: t,
        id: format!("task-{t}"),
        level: Some("trivial".into()),
        fields_json: "{}".into(),
    });
    for (a, &pass) in passes.iter().enumerate() {
        let a32 = a as u32;
        b.attempts.push(AttemptRecord {
            task_index: t,
            attempt: a32,
            generation: generation(
                vec![1, 2, t as u32],
                vec![50 + a32, 51, 2],
                FinishReason::Eos,
            ),
            pass,
            reason: if pass { "ok" } else { "wrong_value" }.into(),
        });
        if !pass {
            b.reflections.push(ReflectionRecord {
                task_index: t,
                attempt: a32,
                reflection: 0,
                generation: generation(vec![1, 2, 9], vec![100, 2], FinishReason::Eos),
            });
            b.retries.push(RetryRecord {
                task_index: t,
                attempt: a32,
                reflection: 0,
                generation: generation(vec![1, 2, 9, 100, 2], vec![8, 2], FinishReason::Eos),
                pass: true,
                reason: "ok".into(),
            });
        }
    }
}

/// Labels `batch`, written as a run in `dir`, with the attempt span.
fn label_attempts(dir: &Path, batch: &WriteBatch) -> (flywheel_label::LabelReport, PathBuf) {
    let run = write_run(dir, &meta(0, 1), batch);
    let out = dir.join("train.parquet");
    let config = LabelConfig {
        span: Span::Attempt,
        ..Default::default()
    };
    (label_runs(&[run], &out, &config).expect("label"), out)
}

#[test]
fn attempt_span_makes_plain_grpo_examples_grouped_by_task() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = WriteBatch::default();
    let (t, f) = (true, false);
    attempt_group(&mut b, 0, &[t, f, f]); // mixed, G = 3
    attempt_group(&mut b, 1, &[f, f, f]); // zero variance
    attempt_group(&mut b, 2, &[t, f]); // mixed, G = 2
    attempt_group(&mut b, 3, &[t]); // a group of one
    let (report, out) = label_attempts(dir.path(), &b);
    let (rows, meta) = read(&out);
    assert_eq!(meta.span, Span::Attempt);
    let got: Vec<(u64, u32, u32)> = rows
        .iter()
        .map(|r| (r.task_index, r.attempt, r.reflection))
        .collect();
    assert_eq!(
        got,
        vec![(0, 0, 0), (0, 1, 0), (0, 2, 0), (2, 0, 0), (2, 1, 0)]
    );
    // Task 0: rewards 1,0,0: mean 1/3, unbiased std sqrt(1/3). Task 2: 1,0: std sqrt(1/2).
    let s0 = (1.0f64 / 3.0).sqrt() + 1e-4;
    let s2 = 0.5f64.sqrt() + 1e-4;
    let want = [
        (2.0 / 3.0) / s0,
        (-1.0 / 3.0) / s0,
        (-1.0 / 3.0) / s0,
        0.5 / s2,
        -0.5 / s2,
    ];
    for (r, w) in rows.iter().zip(want) {
        assert!(close(r.advantage, w), "{r:?}: want advantage {w}");
        // The span is the attempt itself: its prompt, then its tokens, never the reflection's.
        let prompt = [1, 2, r.task_index as u32];
        let (s, e) = (r.span_start as usize, r.span_end as usize);
        assert_eq!(&r.input_ids[..s], prompt.as_slice(), "{r:?}");
        assert_eq!(&r.input_ids[s..e], &[50 + r.attempt, 51, 2], "{r:?}");
        assert_eq!(r.sampler_logprobs.len(), 3);
        assert_eq!(r.reward, if r.advantage > 0.0 { 1.0 } else { 0.0 });
        assert_eq!(
            r.retry_reason,
            if r.reward > 0.0 { "ok" } else { "wrong_value" }
        );
    }
    let c = &report.counts;
    assert_eq!((c.reflections, c.retries, c.retries_passed), (9, 9, 3));
    assert_eq!((c.groups_seen, c.groups_mixed), (4, 2));
    assert_eq!((c.zero_std_groups, c.dropped_zero_std), (2, 3 + 1));
    assert_eq!((c.kept, c.groups_kept), (5, 2));
    assert!(
        report.to_string().contains("9 attempts in 4 groups"),
        "{report}"
    );
}

#[test]
fn attempt_span_with_one_attempt_per_task_is_empty_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = WriteBatch::default();
    attempt_group(&mut b, 0, &[false]);
    attempt_group(&mut b, 1, &[true]);
    let (report, out) = label_attempts(dir.path(), &b);
    assert_eq!(report.counts.kept, 0);
    let why = report.empty_reason.expect("a reason");
    assert!(why.contains("--attempts 2"), "{why}");
    assert!(read(&out).0.is_empty());
}

#[test]
fn attempt_span_with_one_attempt_per_task_says_so_even_when_a_filter_drops_some() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = WriteBatch::default();
    attempt_group(&mut b, 0, &[true]);
    attempt_group(&mut b, 1, &[false]);
    // Task 1's attempt is too long for --max-tokens 3 and is dropped before scoring.
    b.attempts[1].generation =
        generation(vec![1, 2, 1], vec![50, 51, 52, 53, 2], FinishReason::Eos);
    let run = write_run(dir.path(), &meta(0, 1), &b);
    let out = dir.path().join("train.parquet");
    let config = LabelConfig {
        span: Span::Attempt,
        max_tokens: Some(3),
        ..Default::default()
    };
    let report = label_runs(&[run], &out, &config).expect("label");
    assert_eq!((report.counts.dropped_too_long, report.counts.kept), (1, 0));
    let why = report.empty_reason.expect("a reason");
    assert!(why.contains("--attempts 2"), "{why}");
}
