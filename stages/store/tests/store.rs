//! The run store: record round trips, idempotent and conflicting writes, run-settings checks,
//! crash safety under `kill -9`, and the Parquet export.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use arrow::array::{Array, BooleanArray, ListArray, StringArray, UInt32Array, UInt64Array};
use arrow::datatypes::DataType;
use flywheel_store::{
    export_rollouts, rollouts_schema, AttemptRecord, Counts, FinishReason, Generation,
    ParquetExportError, ReflectionRecord, RetryRecord, RunMeta, Store, StoreError, TaskRecord,
    WriteBatch, COLUMNS, ROLLOUTS_FILE, ROW_GROUP_ROWS, STORE_FILE,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;

fn meta() -> RunMeta {
    RunMeta {
        model_hash: "ab12".into(),
        model_files_hash: "cd34".into(),
        task: "countdown".into(),
        task_hash: "ef56".into(),
        attempts: 2,
        reflections: 2,
        reflection_temperature: None,
        temperature: 0.7,
        top_p: 0.95,
        top_k: 0,
        max_new_tokens: 64,
        seed: 17,
        shard_index: 0,
        shard_count: 1,
        limit: None,
    }
}

/// A deterministic generation; `salt` makes each one distinct.
fn generation(salt: u64, len: usize) -> Generation {
    let base = u32::try_from(salt % 50_000).unwrap();
    let token_ids: Vec<u32> = (0..len as u32).map(|i| base + i * 7).collect();
    Generation {
        prompt_ids: (0..(len as u32 + 3)).map(|i| 1000 + base + i).collect(),
        logprobs: token_ids
            .iter()
            .map(|&t| -((t % 97) as f32) / 8.0)
            .collect(),
        token_ids,
        text: format!("generation {salt}"),
        finish_reason: match salt % 3 {
            0 => FinishReason::Eos,
            1 => FinishReason::Stop,
            _ => FinishReason::Length,
        },
        seed: salt.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        started_unix_ms: 1_700_000_000_000 + salt,
        seconds: salt as f64 / 4.0,
    }
}

/// Everything one task produces: attempt 0 fails and gets two reflections and retries (retry 0
/// passes), attempt 1 passes. The records of one task always go in one batch.
fn task_batch(t: u64, len: usize) -> WriteBatch {
    let salt = |a: u64, g: u64, k: u64| t * 100 + a * 10 + g * 3 + k;
    let mut b = WriteBatch::default();
    b.tasks.push(TaskRecord {
        task_index: t,
        id: format!("task-{t}"),
        level: t.is_multiple_of(2).then(|| format!("level-{}", t % 5)),
        fields_json: format!(r#"{{"n":{t}}}"#),
    });
    for a in 0..2u32 {
        b.attempts.push(AttemptRecord {
            task_index: t,
            attempt: a,
            generation: generation(salt(a.into(), 0, 0), len),
            pass: a == 1,
            reason: if a == 1 {
                "ok".into()
            } else {
                "wrong answer".into()
            },
        });
    }
    for g in 0..2u32 {
        b.reflections.push(ReflectionRecord {
            task_index: t,
            attempt: 0,
            reflection: g,
            generation: generation(salt(0, g.into(), 1), len),
        });
        b.retries.push(RetryRecord {
            task_index: t,
            attempt: 0,
            reflection: g,
            generation: generation(salt(0, g.into(), 2), len),
            pass: g == 0,
            reason: format!("retry verdict {g}"),
        });
    }
    b
}

fn merge(batches: impl IntoIterator<Item = WriteBatch>) -> WriteBatch {
    let mut all = WriteBatch::default();
    for b in batches {
        all.tasks.extend(b.tasks);
        all.attempts.extend(b.attempts);
        all.reflections.extend(b.reflections);
        all.retries.extend(b.retries);
    }
    all
}

/// Reads every record back through the streaming API.
fn read_all(store: &Store) -> WriteBatch {
    let mut all = WriteBatch::default();
    store
        .for_each_task(|r| {
            all.tasks.push(r);
            Ok(())
        })
        .unwrap();
    store
        .for_each_attempt(|r| {
            all.attempts.push(r);
            Ok(())
        })
        .unwrap();
    store
        .for_each_reflection(|r| {
            all.reflections.push(r);
            Ok(())
        })
        .unwrap();
    store
        .for_each_retry(|r| {
            all.retries.push(r);
            Ok(())
        })
        .unwrap();
    all
}

/// Counts computed from the records themselves, to check the maintained counters.
fn scanned_counts(all: &WriteBatch) -> Counts {
    Counts {
        tasks: all.tasks.len() as u64,
        attempts: all.attempts.len() as u64,
        attempts_passed: all.attempts.iter().filter(|a| a.pass).count() as u64,
        reflections: all.reflections.len() as u64,
        retries: all.retries.len() as u64,
        retries_passed: all.retries.iter().filter(|a| a.pass).count() as u64,
    }
}

fn sorted(mut b: WriteBatch) -> WriteBatch {
    b.tasks.sort_by_key(|r| r.task_index);
    b.attempts.sort_by_key(|r| (r.task_index, r.attempt));
    b.reflections
        .sort_by_key(|r| (r.task_index, r.attempt, r.reflection));
    b.retries
        .sort_by_key(|r| (r.task_index, r.attempt, r.reflection));
    b
}

#[test]
fn records_round_trip_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &meta()).unwrap();
    // Out of order, and with indices whose little-endian bytes would sort differently.
    let tasks = [300u64, 1, 256, 2, 70_000];
    let mut written = merge(tasks.iter().map(|&t| task_batch(t, 5)));
    written.attempts.reverse();
    written.retries.reverse();
    store.write(&written).unwrap();

    let back = read_all(&store);
    assert_eq!(back, sorted(written.clone()));
    let order: Vec<u64> = back.tasks.iter().map(|t| t.task_index).collect();
    assert_eq!(order, vec![1, 2, 256, 300, 70_000]);
    assert_eq!(store.counts().unwrap(), scanned_counts(&back));
    assert_eq!(
        store.counts().unwrap(),
        Counts {
            tasks: 5,
            attempts: 10,
            attempts_passed: 5,
            reflections: 10,
            retries: 10,
            retries_passed: 5,
        }
    );
    assert_eq!(store.meta().unwrap(), meta());
}

#[test]
fn task_state_holds_exactly_one_tasks_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &meta()).unwrap();
    for t in [1, 2, 3] {
        store.write(&task_batch(t, 4)).unwrap();
    }
    let state = store.task_state(2).unwrap();
    let expected = sorted(task_batch(2, 4));
    assert_eq!(state.task.as_ref(), expected.tasks.first());
    assert_eq!(state.attempts, expected.attempts);
    assert_eq!(state.reflections, expected.reflections);
    assert_eq!(state.retries, expected.retries);

    let empty = store.task_state(4).unwrap();
    assert!(empty.task.is_none() && empty.attempts.is_empty());
    assert!(empty.reflections.is_empty() && empty.retries.is_empty());
}

#[test]
fn writing_the_same_batch_twice_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &meta()).unwrap();
    let batch = merge([task_batch(0, 3), task_batch(1, 3)]);
    store.write(&batch).unwrap();
    let before = (read_all(&store), store.counts().unwrap());
    store.write(&batch).unwrap();
    // A partly overlapping batch adds only what is new.
    store
        .write(&merge([task_batch(1, 3), task_batch(2, 3)]))
        .unwrap();
    let after = read_all(&store);
    assert_eq!(after.tasks.len(), 3);
    assert_eq!(after.attempts.len(), 6);
    assert_eq!(store.counts().unwrap(), scanned_counts(&after));
    assert_eq!(before.1.tasks + 1, store.counts().unwrap().tasks);
    assert!(store.write(&WriteBatch::default()).is_ok());
}

#[test]
fn a_conflicting_record_fails_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &meta()).unwrap();
    store.write(&task_batch(0, 3)).unwrap();
    let before = (read_all(&store), store.counts().unwrap());

    // New records for task 1, plus a retry of task 0 with a different verdict.
    let mut batch = task_batch(1, 3);
    let mut changed = task_batch(0, 3).retries[1].clone();
    changed.pass = !changed.pass;
    batch.retries.push(changed);
    let err = store.write(&batch).unwrap_err();
    match &err {
        StoreError::Conflict { table, key, .. } => {
            assert_eq!(*table, "retries");
            assert_eq!(key, "task 0 attempt 0 reflection 1");
        }
        other => panic!("expected a conflict, got {other}"),
    }
    assert!(err.to_string().contains("different content"), "{err}");
    assert_eq!(read_all(&store), before.0, "the batch must be rolled back");
    assert_eq!(store.counts().unwrap(), before.1);
    assert!(store.task_state(1).unwrap().task.is_none());
}

#[test]
fn mismatched_logprobs_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &meta()).unwrap();
    let mut batch = task_batch(0, 3);
    batch.reflections[0].generation.logprobs.pop();
    let err = store.write(&batch).unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
    assert!(
        err.to_string().contains("2 log-probs for 3 token ids"),
        "{err}"
    );
    assert_eq!(store.counts().unwrap(), Counts::default());
}

#[test]
fn reopening_checks_the_run_settings() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &meta()).unwrap();
    store.write(&task_batch(0, 3)).unwrap();
    drop(store);

    type Change = (&'static str, fn(&mut RunMeta));
    let changes: [Change; 4] = [
        ("attempts", |m| m.attempts = 3),
        ("temperature", |m| m.temperature = 0.8),
        ("limit", |m| m.limit = Some(10)),
        ("model_hash", |m| m.model_hash = "cd34".into()),
    ];
    for (field, change) in changes {
        let mut other = meta();
        change(&mut other);
        let err = Store::open(dir.path(), &other).unwrap_err();
        match &err {
            StoreError::MetaMismatch { field: f, .. } => assert_eq!(f, field),
            e => panic!("expected a settings mismatch, got {e}"),
        }
        let text = err.to_string();
        assert!(text.contains(field) && text.contains(STORE_FILE), "{text}");
    }
    let store = Store::open(dir.path(), &meta()).unwrap();
    assert_eq!(store.counts().unwrap().tasks, 1);
    let err = Store::open(dir.path(), &meta()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    drop(store);
    let existing = Store::open_existing(dir.path()).unwrap();
    assert_eq!(existing.meta().unwrap(), meta());

    let empty = tempfile::tempdir().unwrap();
    let err = Store::open_existing(empty.path()).unwrap_err();
    assert!(matches!(err, StoreError::Missing { .. }), "{err}");
}

const CRASH_DIR_ENV: &str = "FLYWHEEL_STORE_CRASH_DIR";
const CRASH_TOKENS: usize = 400;

/// Not a test by itself: the writer process of `kill_9_loses_only_in_flight_batches`, which
/// runs this binary again with `CRASH_DIR_ENV` set. Resumes from what the store holds
/// (rewriting the last two tasks, which must be no-ops) and writes until killed.
#[test]
fn crash_writer_child() {
    let Ok(dir) = std::env::var(CRASH_DIR_ENV) else {
        return;
    };
    let store = Store::open(Path::new(&dir), &meta()).unwrap();
    let start = store.counts().unwrap().tasks.saturating_sub(2);
    for t in start..start + 100_000 {
        store.write(&task_batch(t, CRASH_TOKENS)).unwrap();
        println!("committed {t}");
    }
}

/// The store after a crash: tasks 0..n, each with all of its batch's records, nothing else.
fn check_whole_batches(store: &Store) -> u64 {
    let all = read_all(store);
    let n = all.tasks.len() as u64;
    let indices: Vec<u64> = all.tasks.iter().map(|t| t.task_index).collect();
    assert_eq!(
        indices,
        (0..n).collect::<Vec<_>>(),
        "tasks must be a prefix"
    );
    assert_eq!(
        all,
        sorted(merge((0..n).map(|t| task_batch(t, CRASH_TOKENS))))
    );
    assert_eq!(store.counts().unwrap(), scanned_counts(&all));
    n
}

#[test]
fn kill_9_loses_only_in_flight_batches() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut stored = 0u64;
    for round in 0..3u64 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("committed ") {
                    if tx.send(n.trim().parse::<u64>().unwrap()).is_err() {
                        break;
                    }
                }
            }
        });
        // Wait until a few batches beyond what the store already held are acknowledged.
        let target = stored + 3 + round;
        let mut acknowledged = None;
        while acknowledged.is_none_or(|a| a < target) {
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(n) => acknowledged = Some(n),
                Err(e) => {
                    let _ = child.kill();
                    panic!("writer stopped before task {target}: {e}");
                }
            }
        }
        // Kill at a varying moment, mostly in the middle of a later batch.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        std::thread::sleep(Duration::from_micros(u64::from(nanos % 30_000)));
        child.kill().unwrap();
        child.wait().unwrap();
        drop(rx);
        reader.join().unwrap();

        let store = Store::open(dir.path(), &meta()).unwrap();
        let n = check_whole_batches(&store);
        assert!(
            n > target,
            "acknowledged task {target} is missing: store has {n} tasks"
        );
        eprintln!(
            "round {round}: writer killed after acknowledging task {target}+, store has {n} tasks"
        );
        stored = n;
    }
    // Resuming by rewriting everything adds nothing.
    let store = Store::open(dir.path(), &meta()).unwrap();
    let before = store.counts().unwrap();
    for t in 0..stored {
        store.write(&task_batch(t, CRASH_TOKENS)).unwrap();
    }
    assert_eq!(store.counts().unwrap(), before);
}

fn read_parquet(path: &Path) -> (Vec<arrow::record_batch::RecordBatch>, usize, Compression) {
    let file = std::fs::File::open(path).unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let meta = builder.metadata().clone();
    let groups = meta.num_row_groups();
    let compression = meta.row_group(0).column(0).compression();
    let batches = builder
        .build()
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (batches, groups, compression)
}

fn column<'a, T: 'static>(batch: &'a arrow::record_batch::RecordBatch, name: &str) -> &'a T {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_any()
        .downcast_ref::<T>()
        .unwrap_or_else(|| panic!("column {name} has another type"))
}

#[test]
fn parquet_export_has_one_row_per_generation() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &meta()).unwrap();
    // 210 tasks x 6 generations = 1260 rows: more than one row group.
    let tasks = 210u64;
    for chunk in (0..tasks).collect::<Vec<_>>().chunks(50) {
        store
            .write(&merge(chunk.iter().map(|&t| task_batch(t, 3))))
            .unwrap();
    }
    // Task 210: an attempt that passed, so no reflections.
    let mut single = task_batch(tasks, 2);
    single.attempts.truncate(1);
    single.attempts[0].pass = true;
    single.reflections.clear();
    single.retries.clear();
    store.write(&single).unwrap();

    let out = dir.path().join(ROLLOUTS_FILE);
    let rows = export_rollouts(&store, &out).unwrap();
    assert_eq!(rows, tasks * 6 + 1);
    let files: BTreeSet<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files,
        BTreeSet::from([STORE_FILE.into(), ROLLOUTS_FILE.into()])
    );

    let (batches, groups, compression) = read_parquet(&out);
    assert!(groups >= 2, "{groups} row groups");
    assert!(
        matches!(compression, Compression::ZSTD(_)),
        "{compression:?}"
    );
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(total as u64, rows);
    assert!(batches.iter().all(|b| b.num_rows() <= ROW_GROUP_ROWS));

    let schema = batches[0].schema();
    let expected = rollouts_schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let documented: Vec<&str> = COLUMNS.iter().map(|c| c.name).collect();
    assert_eq!(names, documented);
    for (got, want) in schema.fields().iter().zip(expected.fields()) {
        assert_eq!(got.data_type(), want.data_type(), "{}", want.name());
        assert_eq!(got.is_nullable(), want.is_nullable(), "{}", want.name());
    }
    assert!(matches!(
        schema.field_with_name("token_ids").unwrap().data_type(),
        DataType::List(_)
    ));

    // The first task's rows, in export order.
    let b = &batches[0];
    let kind = column::<StringArray>(b, "kind");
    let attempt = column::<UInt32Array>(b, "attempt");
    let reflection = column::<UInt32Array>(b, "reflection");
    let pass = column::<BooleanArray>(b, "pass");
    let reason = column::<StringArray>(b, "reason");
    let order: Vec<(&str, u32, Option<u32>)> = (0..6)
        .map(|i| {
            let g = (!reflection.is_null(i)).then(|| reflection.value(i));
            (kind.value(i), attempt.value(i), g)
        })
        .collect();
    assert_eq!(
        order,
        vec![
            ("attempt", 0, None),
            ("reflection", 0, Some(0)),
            ("retry", 0, Some(0)),
            ("reflection", 0, Some(1)),
            ("retry", 0, Some(1)),
            ("attempt", 1, None),
        ]
    );
    assert!(
        pass.is_null(1) && reason.is_null(1),
        "reflections have no verdict"
    );
    assert!(!pass.value(0) && pass.value(2) && !pass.value(4) && pass.value(5));
    assert_eq!(reason.value(0), "wrong answer");

    let expected0 = task_batch(0, 3);
    let token_ids = column::<ListArray>(b, "token_ids");
    let ids = token_ids.value(2);
    let ids = ids.as_any().downcast_ref::<UInt32Array>().unwrap();
    assert_eq!(
        ids.values().to_vec(),
        expected0.retries[0].generation.token_ids
    );
    let logprobs = column::<ListArray>(b, "logprobs").value(0);
    let logprobs = logprobs
        .as_any()
        .downcast_ref::<arrow::array::Float32Array>()
        .unwrap();
    assert_eq!(
        logprobs.values().to_vec(),
        expected0.attempts[0].generation.logprobs
    );
    let prompt_tokens = column::<UInt32Array>(b, "prompt_tokens");
    assert_eq!(prompt_tokens.value(0), 6);
    assert_eq!(column::<UInt32Array>(b, "new_tokens").value(0), 3);
    assert_eq!(column::<StringArray>(b, "task_id").value(0), "task-0");
    assert_eq!(column::<StringArray>(b, "model_hash").value(0), "ab12");
    assert_eq!(column::<StringArray>(b, "task").value(0), "countdown");
    let level = column::<StringArray>(b, "level");
    assert_eq!(level.value(0), "level-0");
    assert!(level.is_null(6), "task 1 has no level");
    let finish = column::<StringArray>(b, "finish_reason");
    assert!(["eos", "stop", "length"].contains(&finish.value(0)));

    // Task indices are non-decreasing across the whole file and end with the single attempt.
    let mut indices = Vec::new();
    for b in &batches {
        indices.extend(
            column::<UInt64Array>(b, "task_index")
                .values()
                .iter()
                .copied(),
        );
    }
    assert!(indices.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(indices.last(), Some(&tasks));
    let last = batches.last().unwrap();
    assert!(column::<UInt32Array>(last, "reflection").is_null(last.num_rows() - 1));
}

/// Children are written only with their parent stored (in the store or the same batch): an
/// attempt without its task, a reflection without its failed attempt (or on one that passed), a
/// retry without its reflection each fail the whole batch.
#[test]
fn orphan_records_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &meta()).unwrap();
    store.write(&task_batch(0, 3)).unwrap();
    let before = read_all(&store);
    let refused = |batch: WriteBatch, table: &str, detail: &str| {
        let err = store.write(&batch).unwrap_err();
        match &err {
            StoreError::Invalid {
                table: t,
                detail: d,
                ..
            } => {
                assert_eq!((*t, d.as_str()), (table, detail), "{err}")
            }
            e => panic!("{e}"),
        }
        assert_eq!(read_all(&store), before, "nothing of the batch is written");
    };
    let mut no_task = task_batch(1, 3);
    no_task.tasks.clear();
    refused(no_task, "attempts", "its task is not stored");
    let mut no_attempt = task_batch(1, 3);
    no_attempt.attempts.clear();
    no_attempt.retries.clear();
    refused(no_attempt, "reflections", "its attempt is not stored");
    let mut on_a_pass = task_batch(1, 3);
    for r in &mut on_a_pass.reflections {
        r.attempt = 1;
    }
    on_a_pass.retries.clear();
    refused(on_a_pass, "reflections", "its attempt passed");
    let mut no_reflection = task_batch(1, 3);
    no_reflection.reflections.clear();
    refused(no_reflection, "retries", "its reflection is not stored");
    // Parents written in an earlier batch count.
    let whole = task_batch(1, 3);
    let mut parents = whole.clone();
    parents.reflections.clear();
    parents.retries.clear();
    store.write(&parents).unwrap();
    store.write(&whole).unwrap();
}

#[test]
fn a_failed_export_leaves_the_previous_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &meta()).unwrap();
    store.write(&task_batch(0, 3)).unwrap();
    store.write(&task_batch(1, 3)).unwrap();
    // The target is a non-empty directory: the export is written in full, and its rename fails.
    let out = dir.path().join(ROLLOUTS_FILE);
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("previous"), b"previous export").unwrap();
    let err = export_rollouts(&store, &out).unwrap_err();
    assert!(matches!(err, ParquetExportError::Rename { .. }), "{err}");
    assert_eq!(
        std::fs::read(out.join("previous")).unwrap(),
        b"previous export"
    );
    let files: BTreeSet<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files,
        BTreeSet::from([STORE_FILE.into(), ROLLOUTS_FILE.into()]),
        "no temporary file left"
    );

    // With the way clear the export succeeds.
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::write(&out, b"previous export").unwrap();
    assert_eq!(export_rollouts(&store, &out).unwrap(), 12);
    let (batches, _, _) = read_parquet(&out);
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 12);
}
