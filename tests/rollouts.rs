//! `rollouts.parquet` against the store it was exported from: row for row, every column, on
//! Countdown (where the tiny model always fails) and on the user task it passes often (so passed
//! attempts without reflections and passed retries are exported too).

mod common;

use flywheel::commands::generate::{run, GenerateArgs};
use flywheel_store::Store;
use std::path::Path;

/// One `rollouts.parquet` row, every column.
#[derive(Debug, PartialEq)]
struct ParquetRow {
    model_hash: String,
    task: String,
    task_index: u64,
    task_id: String,
    level: Option<String>,
    kind: String,
    attempt: u32,
    reflection: Option<u32>,
    prompt_ids: Vec<u32>,
    token_ids: Vec<u32>,
    logprobs: Vec<f32>,
    text: String,
    pass: Option<bool>,
    reason: Option<String>,
    finish_reason: String,
    seed: u64,
    prompt_tokens: u32,
    new_tokens: u32,
    started_unix_ms: u64,
    seconds: f64,
}

fn read_parquet(path: &Path) -> Vec<ParquetRow> {
    use arrow::array::{
        Array, BooleanArray, Float32Array, Float64Array, ListArray, StringArray, UInt32Array,
        UInt64Array,
    };
    let file = std::fs::File::open(path).expect("parquet");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("reader")
        .build()
        .expect("build");
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.expect("batch");
        let c = |n: &str| batch.column_by_name(n).expect(n).clone();
        let s = |n: &str| c(n).as_any().downcast_ref::<StringArray>().unwrap().clone();
        let u32a = |n: &str| c(n).as_any().downcast_ref::<UInt32Array>().unwrap().clone();
        let u64a = |n: &str| c(n).as_any().downcast_ref::<UInt64Array>().unwrap().clone();
        let list = |n: &str| c(n).as_any().downcast_ref::<ListArray>().unwrap().clone();
        let (model, task, id, level, kind) = (
            s("model_hash"),
            s("task"),
            s("task_id"),
            s("level"),
            s("kind"),
        );
        let (text, reason, finish) = (s("text"), s("reason"), s("finish_reason"));
        let (ti, seed, started) = (u64a("task_index"), u64a("seed"), u64a("started_unix_ms"));
        let (att, refl, pt, nt) = (
            u32a("attempt"),
            u32a("reflection"),
            u32a("prompt_tokens"),
            u32a("new_tokens"),
        );
        let (pids, tids, lps) = (list("prompt_ids"), list("token_ids"), list("logprobs"));
        let pass = c("pass");
        let pass = pass.as_any().downcast_ref::<BooleanArray>().unwrap();
        let secs = c("seconds");
        let secs = secs.as_any().downcast_ref::<Float64Array>().unwrap();
        let ids = |l: &ListArray, i: usize| -> Vec<u32> {
            l.value(i)
                .as_any()
                .downcast_ref::<UInt32Array>()
                .unwrap()
                .values()
                .to_vec()
        };
        let opt_s = |a: &StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_owned());
        for i in 0..batch.num_rows() {
            rows.push(ParquetRow {
                model_hash: model.value(i).into(),
                task: task.value(i).into(),
                task_index: ti.value(i),
                task_id: id.value(i).into(),
                level: opt_s(&level, i),
                kind: kind.value(i).into(),
                attempt: att.value(i),
                reflection: (!refl.is_null(i)).then(|| refl.value(i)),
                prompt_ids: ids(&pids, i),
                token_ids: ids(&tids, i),
                logprobs: lps
                    .value(i)
                    .as_any()
                    .downcast_ref::<Float32Array>()
                    .unwrap()
                    .values()
                    .to_vec(),
                text: text.value(i).into(),
                pass: (!pass.is_null(i)).then(|| pass.value(i)),
                reason: opt_s(&reason, i),
                finish_reason: finish.value(i).into(),
                seed: seed.value(i),
                prompt_tokens: pt.value(i),
                new_tokens: nt.value(i),
                started_unix_ms: started.value(i),
                seconds: secs.value(i),
            });
        }
    }
    rows
}

/// `rollouts.parquet` equals the store row for row, every column, in the documented order.
fn assert_parquet_equals_store(run_dir: &Path) {
    let store = Store::open_existing(run_dir).expect("store");
    let meta = store.meta().expect("meta");
    let mut tasks = std::collections::HashMap::new();
    store
        .for_each_task(|t| {
            tasks.insert(t.task_index, t);
            Ok(())
        })
        .expect("tasks");
    let row = |t: u64,
               kind: &str,
               a: u32,
               r: Option<u32>,
               g: &flywheel_store::Generation,
               pass: Option<bool>,
               reason: Option<&str>| {
        let task = &tasks[&t];
        ParquetRow {
            model_hash: meta.model_hash.clone(),
            task: meta.task.clone(),
            task_index: t,
            task_id: task.id.clone(),
            level: task.level.clone(),
            kind: kind.into(),
            attempt: a,
            reflection: r,
            prompt_ids: g.prompt_ids.clone(),
            token_ids: g.token_ids.clone(),
            logprobs: g.logprobs.clone(),
            text: g.text.clone(),
            pass,
            reason: reason.map(str::to_owned),
            finish_reason: g.finish_reason.as_str().into(),
            seed: g.seed,
            prompt_tokens: g.prompt_ids.len() as u32,
            new_tokens: g.token_ids.len() as u32,
            started_unix_ms: g.started_unix_ms,
            seconds: g.seconds,
        }
    };
    let d = {
        let mut d = (vec![], vec![], vec![]);
        store
            .for_each_attempt(|a| {
                d.0.push(a);
                Ok(())
            })
            .expect("attempts");
        store
            .for_each_reflection(|r| {
                d.1.push(r);
                Ok(())
            })
            .expect("reflections");
        store
            .for_each_retry(|r| {
                d.2.push(r);
                Ok(())
            })
            .expect("retries");
        d
    };
    let mut want = Vec::new();
    for a in &d.0 {
        want.push(row(
            a.task_index,
            "attempt",
            a.attempt,
            None,
            &a.generation,
            Some(a.pass),
            Some(&a.reason),
        ));
        for r in
            d.1.iter()
                .filter(|r| (r.task_index, r.attempt) == (a.task_index, a.attempt))
        {
            want.push(row(
                r.task_index,
                "reflection",
                r.attempt,
                Some(r.reflection),
                &r.generation,
                None,
                None,
            ));
            if let Some(x) = d.2.iter().find(|x| {
                (x.task_index, x.attempt, x.reflection) == (r.task_index, r.attempt, r.reflection)
            }) {
                want.push(row(
                    x.task_index,
                    "retry",
                    x.attempt,
                    Some(x.reflection),
                    &x.generation,
                    Some(x.pass),
                    Some(&x.reason),
                ));
            }
        }
    }
    let got = read_parquet(&run_dir.join("rollouts.parquet"));
    assert_eq!(got.len(), want.len(), "row count");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "row {i}");
    }
}

#[test]
fn parquet_equals_the_store_every_column_on_the_pass_path_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("countdown");
    run(&common::tiny_generate_args(&out)).expect("countdown run");
    assert_parquet_equals_store(&out);
    // The user task the tiny model passes often: passed attempts (no reflections) and passed
    // retries appear, so every branch of the export is taken.
    let (task, data) = common::tiny_task();
    let user = dir.path().join("user");
    let report = run(&GenerateArgs {
        task: task.display().to_string(),
        input: data,
        limit: Some(16),
        max_new_tokens: 12,
        ..common::tiny_generate_args(&user)
    })
    .expect("user task run");
    assert!(
        report.store.attempts_passed > 0 && report.store.attempts_passed < 16,
        "{:?}",
        report.store
    );
    assert!(report.store.retries_passed > 0, "{:?}", report.store);
    assert_parquet_equals_store(&user);
}
