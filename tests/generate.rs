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
    common::tiny_generate_args(out)
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
    assert!(
        err.to_string()
            .contains("input record 2 (blank lines not counted) changed"),
        "{err}"
    );
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
    let (want, got) = kill_and_resume("countdown", &input(), 1, 0);
    assert_eq!(got, want);
}

/// The same on the user task the tiny model passes often, so the resumed run also skips passed
/// attempts (no reflections) and keeps passed retries exactly.
#[test]
fn kill_9_and_resume_equals_uninterrupted_run_on_the_pass_path() {
    let (task, data) = common::tiny_task();
    let (want, got) = kill_and_resume(&task.display().to_string(), &data, 1, 0);
    assert!(want.attempts.iter().any(|a| a.pass) && want.retries.iter().any(|r| r.pass));
    assert_eq!(got, want);
}

/// The same with the defaults' batching and prefix cache: every record is there exactly once
/// (the tiny model never passes, so every attempt has G reflections and retries either way).
#[test]
fn kill_9_and_resume_with_batching_and_prefix_cache_has_every_record_once() {
    let (want, got) = kill_and_resume("countdown", &input(), 8, 1024);
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
fn kill_and_resume(
    task: &str,
    input: &Path,
    batch: usize,
    prefix_cache_mib: usize,
) -> (Dump, Dump) {
    let dir = tempfile::tempdir().expect("tempdir");
    let reference = dir.path().join("reference");
    let a = GenerateArgs {
        task: task.to_owned(),
        input: input.to_owned(),
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
            task,
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
        .arg(input)
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

/// `--reflection-temperature` samples the reflections alone at their own temperature: greedy
/// reflections are identical within each group while the attempts (same seeds) are those of a
/// run without it and the retries still vary; the setting is part of the run's identity only when
/// it differs from `--temperature`, and labelling records it as the span's temperature.
#[test]
fn reflection_temperature_applies_to_the_reflections_only() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    run(&args(&plain)).expect("plain run");
    let greedy = dir.path().join("greedy");
    run(&GenerateArgs {
        reflection_temperature: Some(0.0),
        ..args(&greedy)
    })
    .expect("greedy reflections");
    let (p, g) = (dump(&plain), dump(&greedy));
    let tokens = |d: &Dump| -> Vec<Vec<u32>> {
        d.attempts
            .iter()
            .map(|a| a.generation.token_ids.clone())
            .collect()
    };
    assert_eq!(tokens(&p), tokens(&g), "attempts keep --temperature");
    assert!(!g.reflections.is_empty());
    let mut groups: std::collections::HashMap<(u64, u32), Vec<&Vec<u32>>> = Default::default();
    for r in &g.reflections {
        groups
            .entry((r.task_index, r.attempt))
            .or_default()
            .push(&r.generation.token_ids);
    }
    assert!(groups.values().all(|v| v.iter().all(|t| *t == v[0])));
    let sampled = p.reflections.iter().filter(|r| r.reflection == 1);
    assert!(
        sampled
            .zip(p.reflections.iter().filter(|r| r.reflection == 0))
            .any(|(a, b)| a.generation.token_ids != b.generation.token_ids),
        "at temperature 1 the reflections of a group differ"
    );
    let retry_texts: std::collections::HashSet<_> =
        g.retries.iter().map(|r| &r.generation.token_ids).collect();
    assert!(
        retry_texts.len() > groups.len(),
        "retries keep --temperature"
    );
    let meta = Store::open_existing(&greedy).unwrap().meta().unwrap();
    assert_eq!(meta.reflection_temperature, Some(0.0));
    // The same value as --temperature is no separate setting: the plain run resumes under it.
    let same = run(&GenerateArgs {
        reflection_temperature: Some(1.0),
        ..args(&plain)
    })
    .expect("resume with the same temperature spelled twice");
    assert_eq!(same.session.tasks_skipped_complete, 30);
    // A different one is: the greedy run refuses to resume under another, naming the field.
    let e = run(&GenerateArgs {
        reflection_temperature: Some(0.5),
        ..args(&greedy)
    })
    .expect_err("another reflection temperature");
    assert!(e.to_string().contains("reflection_temperature"), "{e}");
    let half = dir.path().join("half");
    run(&GenerateArgs {
        reflection_temperature: Some(0.5),
        ..args(&half)
    })
    .expect("reflections at 0.5");
    let labelled = flywheel::commands::label::run(&common::label_args(&half)).expect("label");
    assert_eq!(
        labelled.meta.temperature, 0.5,
        "the reflections' log-probs are at 0.5"
    );
}
