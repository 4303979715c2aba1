//! `flywheel generate` end to end on the tiny model: structure of the run, verdicts, store and
//! Parquet agreement, reproducibility, sharding, and resumption after `kill -9`.

use flywheel::commands::generate::{run, GenerateArgs, Shard};
use flywheel_datasets::task::{load_task, Instance};
use flywheel_store::{AttemptRecord, ReflectionRecord, RetryRecord, Store, TaskRecord};
use std::path::{Path, PathBuf};
use std::process::Command;

fn input() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/data/countdown/test.jsonl")
}

mod common;

fn model() -> &'static Path {
    common::tiny_onnx()
}

fn args(out: &Path) -> GenerateArgs {
    GenerateArgs {
        model: model().to_owned(),
        task: "countdown".into(),
        input: input(),
        limit: Some(30),
        out: out.to_owned(),
        attempts: 1,
        reflections: 4,
        batch_size: 8,
        temperature: 1.0,
        top_p: 1.0,
        top_k: 0,
        max_new_tokens: 24,
        seed: 7,
        shard: None,
        task_flags: Default::default(),
        device: flywheel::commands::DeviceArg::Cpu,
        threads: 1,
        prefix_cache_mib: 1024,
        quiet: true,
    }
}

#[derive(Debug, PartialEq)]
struct Dump {
    tasks: Vec<TaskRecord>,
    attempts: Vec<AttemptRecord>,
    reflections: Vec<ReflectionRecord>,
    retries: Vec<RetryRecord>,
}

fn dump(run_dir: &Path) -> Dump {
    let store = Store::open_existing(run_dir).expect("store");
    let mut d = Dump {
        tasks: vec![],
        attempts: vec![],
        reflections: vec![],
        retries: vec![],
    };
    store
        .for_each_task(|t| {
            d.tasks.push(t);
            Ok(())
        })
        .expect("tasks");
    store
        .for_each_attempt(|a| {
            d.attempts.push(a);
            Ok(())
        })
        .expect("attempts");
    store
        .for_each_reflection(|r| {
            d.reflections.push(r);
            Ok(())
        })
        .expect("reflections");
    store
        .for_each_retry(|r| {
            d.retries.push(r);
            Ok(())
        })
        .expect("retries");
    // Timings differ between runs by nature; everything else must be identical.
    for g in d
        .attempts
        .iter_mut()
        .map(|a| &mut a.generation)
        .chain(d.reflections.iter_mut().map(|r| &mut r.generation))
        .chain(d.retries.iter_mut().map(|r| &mut r.generation))
    {
        g.started_unix_ms = 0;
        g.seconds = 0.0;
    }
    d
}

#[test]
fn run_structure_verdicts_and_parquet_agree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("run");
    let report = run(&args(&out)).expect("generate");
    let d = dump(&out);
    assert_eq!(d.tasks.len(), 30);
    assert_eq!(d.attempts.len(), 30);
    let task = load_task("countdown").expect("task");
    let failed: Vec<&AttemptRecord> = d.attempts.iter().filter(|a| !a.pass).collect();
    for a in &failed {
        let refl = d
            .reflections
            .iter()
            .filter(|r| r.task_index == a.task_index && r.attempt == a.attempt)
            .count();
        let retr = d
            .retries
            .iter()
            .filter(|r| r.task_index == a.task_index && r.attempt == a.attempt)
            .count();
        assert_eq!(
            (refl, retr),
            (4, 4),
            "task {} attempt {}",
            a.task_index,
            a.attempt
        );
    }
    assert_eq!(d.reflections.len(), 4 * failed.len());
    assert_eq!(d.retries.len(), 4 * failed.len());
    assert!(d
        .attempts
        .iter()
        .filter(|a| a.pass)
        .all(|a| !d.reflections.iter().any(|r| r.task_index == a.task_index)));
    // Stored verdicts equal re-running the verifier on the stored text.
    for t in &d.tasks {
        let inst = Instance {
            id: t.id.clone(),
            fields: serde_json::from_str(&t.fields_json).expect("fields"),
        };
        for a in d.attempts.iter().filter(|a| a.task_index == t.task_index) {
            let v = task.verify(&inst, &a.generation.text);
            assert_eq!((v.pass, v.reason.as_str()), (a.pass, a.reason.as_str()));
        }
        for r in d.retries.iter().filter(|r| r.task_index == t.task_index) {
            let v = task.verify(&inst, &r.generation.text);
            assert_eq!((v.pass, v.reason.as_str()), (r.pass, r.reason.as_str()));
        }
    }
    for g in d
        .attempts
        .iter()
        .map(|a| &a.generation)
        .chain(d.reflections.iter().map(|r| &r.generation))
    {
        assert_eq!(g.token_ids.len(), g.logprobs.len());
        assert!(!g.prompt_ids.is_empty() && !g.token_ids.is_empty() && g.token_ids.len() <= 24);
    }
    // A reflection's prompt extends its attempt's conversation: it contains the attempt's tokens.
    let r0 = &d.reflections[0];
    let a0 = d
        .attempts
        .iter()
        .find(|a| a.task_index == r0.task_index)
        .expect("attempt");
    assert!(r0.generation.prompt_ids.len() > a0.generation.prompt_ids.len());
    assert!(r0
        .generation
        .prompt_ids
        .starts_with(&a0.generation.prompt_ids));

    // Parquet: one row per generation, in store order, same tokens.
    let file = std::fs::File::open(out.join("rollouts.parquet")).expect("parquet");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("reader")
        .build()
        .expect("build");
    let mut rows = 0usize;
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    let mut new_tokens = 0u64;
    for batch in reader {
        let batch = batch.expect("batch");
        rows += batch.num_rows();
        let kind = batch.column_by_name("kind").expect("kind");
        let kind = kind
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .expect("utf8");
        let nt = batch.column_by_name("new_tokens").expect("new_tokens");
        let nt = nt
            .as_any()
            .downcast_ref::<arrow::array::UInt32Array>()
            .expect("u32");
        for i in 0..batch.num_rows() {
            *kinds.entry(kind.value(i).to_owned()).or_default() += 1;
            new_tokens += u64::from(nt.value(i));
        }
    }
    assert_eq!(rows as u64, report.parquet_rows);
    assert_eq!(kinds.get("attempt"), Some(&30));
    assert_eq!(
        kinds.get("reflection").copied().unwrap_or(0),
        d.reflections.len()
    );
    assert_eq!(kinds.get("retry").copied().unwrap_or(0), d.retries.len());
    let stored: u64 = d
        .attempts
        .iter()
        .map(|a| a.generation.token_ids.len() as u64)
        .chain(
            d.reflections
                .iter()
                .map(|r| r.generation.token_ids.len() as u64),
        )
        .chain(
            d.retries
                .iter()
                .map(|r| r.generation.token_ids.len() as u64),
        )
        .sum();
    assert_eq!(new_tokens, stored);
}

#[test]
fn seeded_runs_are_reproducible_and_rerun_is_a_no_op() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    run(&args(&a)).expect("a");
    run(&args(&b)).expect("b");
    let da = dump(&a);
    assert_eq!(da, dump(&b));
    // Rerunning a finished run generates nothing and changes nothing.
    let again = run(&args(&a)).expect("again");
    assert_eq!(again.engine.completions, 0);
    assert_eq!(again.session.tasks_skipped_complete, 30);
    assert_eq!(dump(&a), da);
    // Different settings on the same run directory are refused, naming the field.
    let err = run(&GenerateArgs {
        temperature: 0.5,
        ..args(&a)
    })
    .expect_err("must refuse");
    assert!(err.to_string().contains("temperature"), "{err}");
}

#[test]
fn shards_cover_the_input_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut seen = Vec::new();
    for i in 0..3 {
        let out = dir.path().join(format!("s{i}"));
        let r = run(&GenerateArgs {
            shard: Some(Shard { index: i, count: 3 }),
            reflections: 1,
            ..args(&out)
        })
        .expect("shard");
        assert_eq!(r.tasks, 10);
        seen.extend(dump(&out).tasks.into_iter().map(|t| t.task_index));
    }
    assert_eq!(seen, (0..30).collect::<Vec<u64>>());
    assert!(
        "3/3".parse::<Shard>().is_err()
            && "1/0".parse::<Shard>().is_err()
            && "a/2".parse::<Shard>().is_err()
    );
}

#[test]
fn malformed_input_line_stops_before_any_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"nums\": [1, 2], \"target\": 3}\n{\"nums\": [1, 2]\n",
    )
    .expect("write");
    let out = dir.path().join("run");
    let err = run(&GenerateArgs {
        input: bad,
        ..args(&out)
    })
    .expect_err("must fail");
    let msg = err.to_string();
    assert!(msg.contains("bad.jsonl") && msg.contains("line 2"), "{msg}");
    assert!(!out.join("store.redb").exists());
}

/// Settings no sampler can honour are refused before anything is written.
#[test]
fn impossible_settings_are_refused_before_any_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("run");
    for (a, flag) in [
        (
            GenerateArgs {
                temperature: f32::NAN,
                ..args(&out)
            },
            "--temperature NaN",
        ),
        (
            GenerateArgs {
                temperature: -1.0,
                ..args(&out)
            },
            "--temperature -1",
        ),
        (
            GenerateArgs {
                top_p: 0.0,
                ..args(&out)
            },
            "--top-p 0",
        ),
        (
            GenerateArgs {
                batch_size: 0,
                ..args(&out)
            },
            "--batch-size 0",
        ),
    ] {
        let err = run(&a).expect_err("must refuse");
        assert!(err.to_string().starts_with(flag), "{err}");
        assert!(!out.exists(), "{flag}: run directory created");
    }
}

/// A run's input edited between two invocations is refused, not continued: stored attempts
/// were made for the old instance.
#[test]
fn edited_input_is_refused_on_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(input()).expect("input");
    let lines: Vec<&str> = text.lines().take(6).collect();
    let file = dir.path().join("six.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").expect("write");
    let out = dir.path().join("run");
    let a = GenerateArgs {
        input: file.clone(),
        limit: None,
        reflections: 1,
        ..args(&out)
    };
    run(&a).expect("first run");
    let before = dump(&out);
    // Same id, another target: the instance is a different problem.
    let mut edited: serde_json::Value = serde_json::from_str(lines[1]).expect("json");
    let target = edited["target"].as_i64().expect("target");
    edited["target"] = (target + 1).into();
    let mut new_lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    new_lines[1] = edited.to_string();
    std::fs::write(&file, new_lines.join("\n") + "\n").expect("write");
    let err = run(&a).expect_err("must refuse");
    assert!(err.to_string().contains("input line 2 changed"), "{err}");
    assert_eq!(dump(&out), before, "the store must be left as it was");
}

/// Kills `flywheel generate` with SIGKILL at several points, reruns it each time, and checks the
/// final store equals an uninterrupted run's record for record (tokens, log-probs, verdicts).
///
/// Batch size 1 makes every request's arithmetic independent of what else is in flight: with
/// larger batches, padding changes floating-point summation order in the last bits, which can
/// flip a near-tie sample of a request regenerated after the crash (keys and counts still match).
/// The prefix cache is off for the same reason: a reflection regenerated after the crash has no
/// cached attempt to extend, and a full prefill differs from an extended one in the last bits.
#[test]
fn kill_9_and_resume_equals_uninterrupted_run() {
    let (want, got) = kill_and_resume(1, 0);
    assert_eq!(got, want);
}

/// The same with the defaults' batching and prefix cache: every record is there exactly once
/// (the tiny model never passes, so every attempt has G reflections and retries either way).
#[test]
fn kill_9_and_resume_with_batching_and_prefix_cache_has_every_record_once() {
    let (want, got) = kill_and_resume(8, 1024);
    let keys = |d: &Dump| {
        let mut k: Vec<(u64, u32, Option<u32>, &str)> = d
            .attempts
            .iter()
            .map(|a| (a.task_index, a.attempt, None, "attempt"))
            .chain(
                d.reflections
                    .iter()
                    .map(|r| (r.task_index, r.attempt, Some(r.reflection), "reflection")),
            )
            .chain(
                d.retries
                    .iter()
                    .map(|r| (r.task_index, r.attempt, Some(r.reflection), "retry")),
            )
            .collect();
        k.sort();
        k
    };
    let (w, g) = (keys(&want), keys(&got));
    assert_eq!(g, w);
    assert_eq!(got.tasks, want.tasks);
    // Sorted keys equal and the store refuses a second record under a key: no duplicates.
    assert_eq!(
        w.len(),
        40 + 2 * 4 * want.attempts.iter().filter(|a| !a.pass).count()
    );
}

/// An uninterrupted run and a run killed five times then finished, on 40 tasks.
fn kill_and_resume(batch: usize, prefix_cache_mib: usize) -> (Dump, Dump) {
    let dir = tempfile::tempdir().expect("tempdir");
    let reference = dir.path().join("reference");
    let a = GenerateArgs {
        limit: Some(40),
        batch_size: batch,
        prefix_cache_mib,
        ..args(&reference)
    };
    run(&a).expect("reference run");
    let crashed = dir.path().join("crashed");
    let (batch, mib) = (batch.to_string(), prefix_cache_mib.to_string());
    let cli = |out: &Path| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_flywheel"));
        c.args([
            "generate",
            "--task",
            "countdown",
            "--limit",
            "40",
            "--reflections",
            "4",
            "--batch-size",
            &batch,
            "--prefix-cache-mib",
            &mib,
        ])
        .args([
            "--temperature",
            "1.0",
            "--max-new-tokens",
            "24",
            "--seed",
            "7",
            "--threads",
            "1",
        ])
        .arg("--model")
        .arg(model())
        .arg("--input")
        .arg(input())
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
        c
    };
    // Acknowledgement protocol: the child prints `generate: N/40 tasks stored` once N tasks are
    // durably stored; each round kills it right after a later acknowledgement than the last.
    let mut kills = 0;
    for target in [4u64, 10, 16, 22, 28] {
        let mut child = cli(&crashed).spawn().expect("spawn");
        let stderr = child.stderr.take().expect("stderr");
        let mut acked = None;
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let Ok(line) = line else { break };
            let stored = line
                .strip_prefix("generate: ")
                .and_then(|l| l.split('/').next())
                .and_then(|n| n.parse::<u64>().ok());
            if stored.is_some_and(|n| n >= target) {
                acked = stored;
                break;
            }
        }
        if acked.is_some() && child.try_wait().expect("wait").is_none() {
            child.kill().expect("kill -9");
            kills += 1;
        }
        let _ = child.wait();
    }
    let status = cli(&crashed)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("final run");
    assert!(status.success());
    assert!(
        kills >= 2,
        "the run finished before it could be killed; make it longer"
    );
    let (want, got) = (dump(&reference), dump(&crashed));
    assert_eq!(got.tasks.len(), 40);
    assert_eq!(got.attempts.len(), want.attempts.len());
    assert_eq!(got.reflections.len(), want.reflections.len());
    assert_eq!(got.retries.len(), want.retries.len());
    (want, got)
}

#[test]
fn readme_documents_every_parquet_column() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README");
    let table = flywheel_store::columns_markdown();
    assert!(
        readme.contains(table.trim()),
        "README's Parquet table is out of date; it must contain:\n{table}"
    );
}

/// `--device cuda` runs on CUDA when the installed ONNX Runtime has it, and otherwise fails with
/// a message naming the missing provider, exit 1, and no run directory left behind.
#[test]
fn device_cuda_runs_on_cuda_or_fails_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("run");
    let res = Command::new(env!("CARGO_BIN_EXE_flywheel"))
        .args(["generate", "--task", "countdown", "--limit", "2"])
        .args(["--max-new-tokens", "4", "--device", "cuda", "--quiet"])
        .arg("--model")
        .arg(model())
        .arg("--input")
        .arg(input())
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run flywheel");
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    if flywheel_runtime::cuda_available().expect("ONNX Runtime") {
        assert!(res.status.success(), "{stderr}");
        let report: serde_json::Value = serde_json::from_slice(&res.stdout).expect("report");
        assert_eq!(report["provider"], "cuda");
    } else {
        assert_eq!(res.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("CUDA execution provider was requested"),
            "{stderr}"
        );
        assert!(!out.exists(), "a failed run must leave no run directory");
    }
}

/// Copies a directory tree (the exported model) so a test can place it under relative paths.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).expect("copy");
        }
    }
}

/// A run made with relative paths resumes as a no-op from another directory with absolute paths
/// and through a symlink; an edited prompt template is refused, naming what changed.
#[test]
fn run_identity_survives_other_directories_and_spellings_but_not_edited_prompts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    copy_dir(model(), &root.join("runs/m/onnx"));
    let prompts = root.join("prompts/countdown");
    std::fs::create_dir_all(&prompts).expect("mkdir");
    std::fs::write(
        prompts.join("reflect.txt"),
        "What went wrong? Be brief.{feedback}",
    )
    .unwrap();
    let flywheel = |cwd: &Path, model: &Path, out: &Path, prompts: &Path| {
        Command::new(env!("CARGO_BIN_EXE_flywheel"))
            .current_dir(cwd)
            .args([
                "generate",
                "--task",
                "countdown",
                "--limit",
                "3",
                "--reflections",
                "2",
            ])
            .args(["--max-new-tokens", "6", "--threads", "1", "--quiet"])
            .arg("--model")
            .arg(model)
            .arg("--input")
            .arg(input())
            .arg("--out")
            .arg(out)
            .arg("--prompts")
            .arg(prompts)
            .output()
            .expect("flywheel")
    };
    let first = flywheel(
        root,
        Path::new("runs/m/onnx"),
        Path::new("runs/r"),
        Path::new("prompts"),
    );
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    std::os::unix::fs::symlink(root.join("runs"), root.join("link")).expect("symlink");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    for out in [root.join("runs/r"), root.join("link/r")] {
        let again = flywheel(
            elsewhere.path(),
            &root.join("runs/m/onnx"),
            &out,
            &root.join("prompts"),
        );
        let stderr = String::from_utf8_lossy(&again.stderr);
        assert!(again.status.success(), "{}: {stderr}", out.display());
        let report: serde_json::Value = serde_json::from_slice(&again.stdout).expect("report");
        assert_eq!(
            report["engine"]["completions"], 0,
            "a no-op resume: {report}"
        );
        assert_eq!(report["session"]["tasks_skipped_complete"], 3);
    }
    std::fs::write(
        prompts.join("reflect.txt"),
        "What went wrong? Be very brief.{feedback}",
    )
    .unwrap();
    let edited = flywheel(
        root,
        Path::new("runs/m/onnx"),
        Path::new("runs/r"),
        Path::new("prompts"),
    );
    let stderr = String::from_utf8_lossy(&edited.stderr);
    assert_eq!(edited.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("task_hash") && stderr.contains("prompt templates"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: "), "{stderr}");
}

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
    run(&args(&out)).expect("countdown run");
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
        ..args(&user)
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
