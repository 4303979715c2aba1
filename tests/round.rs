//! `flywheel round` on the tiny model and the user task it passes often: three rounds lay out
//! their stages, each generates with the previous promoted model, `current` follows, retention
//! removes only old heavy files, `eval.parquet`/`eval.png` and `stats` agree with the stores; a
//! live lock holder makes a second invocation a no-op that names it; a round without signal ends
//! untrained; `kill -9` inside every stage, rerun, equals an uninterrupted run; two generate shard
//! processes then `round` equal one unsharded round.

mod common;

use std::path::Path;

use flywheel::commands::eval;
use flywheel::commands::init::{self, InitArgs};
use flywheel::commands::round::{self, RoundArgs};

fn init_with(
    dir: &Path,
    task: Option<(String, std::path::PathBuf)>,
    more: &[&str],
) -> std::path::PathBuf {
    let model = dir.join("tiny");
    flywheel_llama::tiny::create(&model, 17).expect("tiny");
    let (task, data) = match task {
        Some(t) => t,
        None => {
            let (t, d) = common::tiny_task();
            (t.display().to_string(), d)
        }
    };
    let run = dir.join("run");
    let sets = [
        "round.tasks=12",
        "generate.temperature=1.0",
        "generate.max_new_tokens=12",
        "generate.batch_size=8",
        "generate.threads=1",
        "generate.device=cpu",
        "generate.prefix_cache_mib=64",
        "train.lr=1e-3",
        "train.batch_size=4",
        "train.device=cpu",
        "train.checkpoint_every=2",
        "export.fused=false",
        "eval.limit=8",
        "eval.max_new_tokens=12",
    ];
    init::run(&InitArgs {
        run_dir: run.clone(),
        task: Some(task),
        train_input: Some(data.clone()),
        eval_input: Some(data),
        model: Some(model),
        gguf: None,
        config: None,
        sets: sets.iter().chain(more).map(|s| s.to_string()).collect(),
        threads: 1,
    })
    .expect("init");
    run
}

/// `flywheel round RUN_DIR --rounds N`, quiet.
fn round_args(run: &Path, rounds: u32) -> RoundArgs {
    RoundArgs {
        run_dir: run.to_owned(),
        rounds,
        stage: None,
        shard: None,
        quiet: true,
    }
}

/// `flywheel eval RUN_DIR [--model DIR]` with the run's own settings.
fn eval_args(run: &Path, model: Option<std::path::PathBuf>) -> eval::EvalArgs {
    eval::EvalArgs {
        run_dir: Some(run.to_owned()),
        round: None,
        model,
        task: None,
        input: None,
        task_flags: Default::default(),
        out: None,
        limit: None,
        samples: None,
        temperature: None,
        max_new_tokens: None,
        batch_size: None,
        seed: None,
        baseline: None,
        device: None,
        threads: None,
        prefix_cache_mib: None,
        json: false,
        quiet: true,
    }
}

#[test]
fn three_rounds_chain_their_models_and_a_held_lock_is_a_no_op() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = init_with(dir.path(), None, &["round.keep_rounds=2"]);
    let report = round::run(&round_args(&run, 3)).expect("round");
    assert_eq!(report.rounds.len(), 3);
    for r in &report.rounds {
        assert_eq!(r.status, "promoted", "{r:?}");
        assert!(r.steps > 0 && r.examples > 0);
    }
    assert_eq!(report.current, 3);
    assert_eq!(
        std::fs::read_to_string(run.join("current")).unwrap(),
        "0003\n"
    );
    for p in [
        "rounds/0000/eval/eval.json",
        "rounds/0001/tasks.jsonl",
        "rounds/0001/generate/rollouts.parquet",
        "rounds/0001/train.parquet",
        "rounds/0001/train/metrics.parquet",
        "rounds/0001/model/model.safetensors",
        "rounds/0003/model/onnx/model.onnx",
        "rounds/0001/eval/eval.json",
        "rounds/0001/round.json",
        "rounds/0002/round.json",
    ] {
        assert!(run.join(p).is_file(), "{p}");
    }
    // Round 2 generated with round 1's promoted model; round 1 with round 0's.
    let meta = |r: &str| {
        let store = flywheel_store::Store::open_existing(&run.join(format!("rounds/{r}/generate")))
            .unwrap();
        store.meta().unwrap()
    };
    let hash =
        |r: &str| flywheel_store::model_hash(&run.join(format!("rounds/{r}/model/onnx"))).unwrap();
    assert_eq!(meta("0001").model_hash, hash("0000"));
    assert_eq!(meta("0003").model_hash, hash("0002"));
    assert_ne!(hash("0002"), hash("0000"), "the rounds trained");
    // Retention (keep 2): round 1's export and moments are gone, its Parquet files and weights
    // stay; round 0's model and the promoted round are whole.
    assert!(!run.join("rounds/0001/model/onnx").exists());
    assert!(!run
        .join("rounds/0001/train/checkpoint/optimizer.safetensors")
        .exists());
    for p in [
        "rounds/0001/model/model.safetensors",
        "rounds/0001/train/metrics.parquet",
        "rounds/0001/eval/rollouts.parquet",
    ] {
        assert!(run.join(p).is_file(), "{p} is kept");
    }
    // Round slices are disjoint blocks of the training input.
    let a = std::fs::read_to_string(run.join("rounds/0001/tasks.jsonl")).unwrap();
    let b = std::fs::read_to_string(run.join("rounds/0002/tasks.jsonl")).unwrap();
    assert_eq!((a.lines().count(), b.lines().count()), (12, 12));
    assert!(a.lines().all(|l| !b.contains(l)));

    // stats: every round's figures agree with its stores and reports.
    let rows = flywheel::commands::stats::run(&flywheel::commands::stats::StatsArgs {
        run_dir: run.clone(),
        json: true,
    })
    .expect("stats");
    assert_eq!(
        rows.iter().map(|r| r.round).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert_eq!(rows[0].status, "initial");
    for (row, outcome) in rows[1..].iter().zip(&report.rounds) {
        let g = row.generate.as_ref().expect("generate figures");
        assert_eq!((row.status.as_str(), g.tasks), ("promoted", 12));
        assert_eq!(
            row.label.as_ref().expect("label").examples,
            outcome.examples
        );
        assert_eq!(row.train.as_ref().expect("train").steps, outcome.steps);
        assert_eq!(row.eval_first, outcome.eval_first);
        assert!(row.seconds.contains_key("train"));
        let store = flywheel_store::Store::open_existing(
            &run.join(format!("rounds/{:04}/generate", row.round)),
        )
        .unwrap();
        let (mut n, mut passed) = (0u64, 0u64);
        store
            .for_each_attempt(|a| {
                n += 1;
                passed += u64::from(a.pass);
                Ok(())
            })
            .unwrap();
        assert!((g.first_try.expect("rate") - passed as f64 / n as f64).abs() < 1e-12);
    }
    let table = flywheel::commands::stats::markdown(&rows);
    assert!(table.contains("| 1 | promoted | 12 |"), "{table}");

    // eval.parquet: one `all` row per evaluated round, equal to a recount of its eval store, the
    // change from round 0 paired on the same tasks; eval.png a PNG.
    let evals = flywheel_store::read_eval(&run.join("eval.parquet")).expect("eval.parquet");
    let all: Vec<&flywheel_store::EvalRow> = evals.iter().filter(|r| r.level == "all").collect();
    assert_eq!(
        all.iter().map(|r| r.round).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    let first_of = |r: u32| {
        let store =
            flywheel_store::Store::open_existing(&run.join(format!("rounds/{r:04}/eval"))).unwrap();
        let mut v = Vec::new();
        store
            .for_each_attempt(|a| {
                v.push(a.pass);
                Ok(())
            })
            .unwrap();
        v
    };
    let base = first_of(0);
    for row in &all {
        let now = first_of(row.round);
        let passed = now.iter().filter(|p| **p).count() as u64;
        assert_eq!((row.samples, row.first_passed, row.pairs), (8, passed, 8));
        let fixed = base.iter().zip(&now).filter(|(b, a)| !**b && **a).count() as f64;
        let broken = base.iter().zip(&now).filter(|(b, a)| **b && !**a).count() as f64;
        assert!((row.first_change - (fixed - broken) / 8.0).abs() < 1e-12);
        assert!(
            row.first_change_low <= row.first_change && row.first_change <= row.first_change_high
        );
        if let Some(o) = report.rounds.iter().find(|o| o.round == row.round) {
            assert_eq!(Some(row.first), o.eval_first);
        }
        let onnx = run.join(format!("rounds/{:04}/model/onnx", row.round));
        if onnx.is_dir() {
            assert_eq!(row.model_hash, flywheel_store::model_hash(&onnx).unwrap());
        }
    }
    common::assert_readme_documents("eval.parquet", flywheel_store::EVAL_COLUMNS);
    let png = std::fs::read(run.join("eval.png")).expect("eval.png");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // `flywheel eval RUN_DIR`: every round is cached, so it evaluates nothing and reports the
    // same table; `--model` of round 0's export is paired with round 0 and changes nothing.
    let again =
        eval::run(&eval_args(&run, Some(run.join("rounds/0000/model")))).expect("eval RUN_DIR");
    let eval::EvalCommandReport::Run(again) = again else {
        panic!("the run form reports the run");
    };
    assert_eq!(again.rows, evals);
    let m = again.model.clone().expect("model report");
    assert_eq!(m.change.expect("change").first.change, 0.0);
    assert!(again.to_string().contains("| 3 | all | 8 |"), "{again}");

    // A live holder: the second invocation says who and does nothing.
    std::fs::write(
        run.join("round.lock"),
        format!("{} 1700000000\n", std::process::id()),
    )
    .unwrap();
    let busy = round::run(&round_args(&run, 1)).expect("busy is not an error");
    let holder = busy.busy.expect("holder");
    assert!(
        holder.contains(&format!("pid {}", std::process::id())),
        "{holder}"
    );
    assert!(busy.rounds.is_empty());
    assert!(!run.join("rounds/0004").exists());
    assert!(
        run.join("round.lock").is_file(),
        "the holder's lock is left alone"
    );
}

#[test]
fn a_round_without_signal_ends_without_training_and_keeps_current() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The tiny model never solves Countdown: every group fails alike.
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/data/countdown/test.jsonl");
    let run = init_with(
        dir.path(),
        Some(("countdown".into(), input)),
        &["round.tasks=4", "eval.limit=4", "rounds=1"],
    );
    let r = round::run(&round_args(&run, 1)).expect("round");
    assert_eq!(r.rounds[0].status, "no_signal");
    assert_eq!((r.rounds[0].groups_mixed, r.rounds[0].steps), (0, 0));
    assert_eq!(r.current, 0);
    assert!(!run.join("rounds/0001/train").exists());
    assert!(run.join("rounds/0001/round.json").is_file());
    // `rounds = 1`: the planned total is reached, so the next invocation (cron) does nothing.
    let again = round_cli(&run, &["--rounds", "3"]).output().expect("again");
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{said}");
    assert!(said.contains("has its planned 1 rounds"), "{said}");
    assert!(!run.join("rounds/0002").exists());
}

#[test]
fn the_attempt_span_control_trains_a_round_on_first_tries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = init_with(
        dir.path(),
        None,
        &[
            "label.span=attempt",
            "generate.attempts=4",
            "generate.reflections=0",
        ],
    );
    let r = round::run(&round_args(&run, 1)).expect("round");
    assert_eq!(r.rounds[0].status, "promoted", "{:?}", r.rounds[0]);
    assert!(r.rounds[0].steps > 0 && r.rounds[0].groups_mixed > 0);
    let (meta, rows) =
        flywheel_store::read_train(&run.join("rounds/0001/train.parquet")).expect("train.parquet");
    assert_eq!(meta.span, flywheel_store::Span::Attempt);
    assert!(rows.iter().all(|e| e.reflection == 0));
    // One attempt per task cannot make a group: refused when the run is made, by name.
    let other = tempfile::tempdir().expect("tempdir");
    let (task, data) = common::tiny_task();
    let e = init::run(&InitArgs {
        run_dir: other.path().join("run"),
        task: Some(task.display().to_string()),
        train_input: Some(data.clone()),
        eval_input: Some(data),
        model: None,
        gguf: None,
        config: None,
        sets: vec!["label.span=attempt".into()],
        threads: 1,
    })
    .expect_err("one attempt");
    assert!(e.to_string().contains("generate.attempts"), "{e}");
}

/// Trained weights and training examples of every round, which a crashed-and-resumed run must
/// reproduce exactly.
fn outcome(run: &Path, rounds: u32) -> Vec<(Vec<u8>, Vec<flywheel_store::TrainExample>)> {
    (1..=rounds)
        .map(|r| {
            let d = run.join(format!("rounds/{r:04}"));
            (
                std::fs::read(d.join("model/model.safetensors")).expect("weights"),
                flywheel_store::read_train(&d.join("train.parquet"))
                    .expect("train")
                    .1,
            )
        })
        .collect()
}

/// Whether a line of a child's stderr is the moment to kill it.
type KillPoint = Box<dyn FnMut(&str) -> bool>;

/// `flywheel round RUN_DIR` (the binary, as cron runs it: an empty environment), with `args`.
fn round_cli(run: &Path, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_flywheel"));
    c.env_clear().arg("round").arg(run).args(args);
    c
}

/// Starts `cmd` with stderr piped and reads it until `point` accepts a line (the child's own
/// acknowledgement); returns the child, whether a line was accepted, and the rest of stderr.
fn spawn_until(
    mut cmd: std::process::Command,
    mut point: impl FnMut(&str) -> bool,
) -> (
    std::process::Child,
    bool,
    std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
) {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let hit = lines.any(|l| l.is_ok_and(|l| point(&l)));
    (child, hit, lines)
}

#[test]
fn kill_9_inside_every_stage_then_rerun_equals_an_uninterrupted_run() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().expect("tempdir");
    let reference = init_with(&dir.path().join("a"), None, &[]);
    round::run(&round_args(&reference, 2)).expect("reference");
    let crashed = init_with(&dir.path().join("b"), None, &[]);
    let cli = || round_cli(&crashed, &["--rounds", "1"]);
    // Acknowledgement protocol: kill right after a stage says it stored work. Each invocation
    // does one round (as from cron): killed inside round 1's generate, label, train and export,
    // then left to finish round 1, then killed inside round 2's generate, then inside its eval.
    fn stored(l: &str) -> bool {
        l.strip_prefix("generate: ")
            .and_then(|l| l.split('/').next())
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= 4)
    }
    // The last is inside round 2's held-out evaluation (a generate run of its own).
    let mut in_eval = false;
    let eval_stored = move |l: &str| {
        in_eval |= l.starts_with("round 2: evaluate on the held-out instances");
        in_eval && stored(l)
    };
    // Label and export print nothing between their announcement and their atomic write, so the
    // kill lands right after the round says it starts them.
    let mut points: Vec<KillPoint> = vec![
        Box::new(stored),
        Box::new(|l: &str| l.starts_with("round 1: label")),
        Box::new(|l: &str| l.starts_with("train: checkpoint after step 2")),
        Box::new(|l: &str| l.starts_with("round 1: export and check parity")),
        Box::new(|_: &str| false),
        Box::new(stored),
        Box::new(eval_stored),
    ];
    let mut kills = 0;
    for point in points.iter_mut() {
        let (mut child, hit, _) = spawn_until(cli(), point);
        if hit && child.try_wait().expect("wait").is_none() {
            child.kill().expect("kill -9");
            kills += 1;
        }
        let _ = child.wait();
    }
    assert_eq!(kills, 6, "a stage finished before it could be killed");
    for _ in 0..3 {
        if std::fs::read_to_string(crashed.join("current")).unwrap() == "0002\n" {
            break;
        }
        let status = cli().stderr(Stdio::null()).status().expect("rerun");
        assert!(status.success());
    }
    assert_eq!(
        std::fs::read_to_string(crashed.join("current")).unwrap(),
        std::fs::read_to_string(reference.join("current")).unwrap()
    );
    let eval = |run: &Path| -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run.join("rounds/0002/eval/eval.json")).unwrap())
                .unwrap();
        v["levels"].clone()
    };
    assert_eq!(eval(&crashed), eval(&reference), "held-out figures");
    assert_eq!(
        flywheel_store::read_eval(&crashed.join("eval.parquet")).unwrap(),
        flywheel_store::read_eval(&reference.join("eval.parquet")).unwrap(),
        "the table across rounds"
    );
    let (want, got) = (outcome(&reference, 2), outcome(&crashed, 2));
    for (r, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(g.1, w.1, "round {}: training examples", r + 1);
        assert!(g.0 == w.0, "round {}: trained weights differ", r + 1);
    }
}

#[test]
fn two_round_processes_at_once_one_works_the_other_names_it_and_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = init_with(dir.path(), None, &[]);
    // Acknowledgement: the first holds the lock once it reports its first stage.
    let (mut first, started, lines) =
        spawn_until(round_cli(&run, &[]), |l| l.starts_with("round 1:"));
    assert!(started, "the first round never started");
    let second = round_cli(&run, &[]).output().expect("second");
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{said}");
    assert!(
        said.contains(&format!("being worked on by pid {}", first.id())),
        "{said}"
    );
    for _ in lines {}
    assert!(first.wait().expect("wait").success());
    assert_eq!(
        std::fs::read_to_string(run.join("current")).unwrap(),
        "0001\n"
    );
    assert!(!run.join("round.lock").exists(), "the lock is released");
    assert!(!run.join("rounds/0002").exists(), "the second did nothing");
}

#[test]
fn a_failing_export_parity_check_keeps_current_and_exits_1_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = init_with(dir.path(), None, &[]);
    // Stop round 1 once its trained model is in place, before its export is checked.
    let (mut child, reached, _) = spawn_until(round_cli(&run, &[]), |l| {
        l.starts_with("round 1: export and check parity")
    });
    assert!(reached, "round 1 never reached its export");
    let _ = child.kill();
    let _ = child.wait();
    // Inject a NaN into one weight of the round's model (a new file: the trainer's is untouched).
    let model = run.join("rounds/0001/model");
    common::inject_nan(&model, "model.norm.weight");
    let o = round_cli(&run, &[]).output().expect("rerun");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("export parity failed") && stderr.contains("`current` stays on round 0"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("current")).unwrap(),
        "0000\n"
    );
    assert!(!run.join("rounds/0001/round.json").exists());
}

#[test]
fn a_promotion_cut_between_report_and_current_is_finished_by_the_next_round() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = init_with(dir.path(), None, &[]);
    let args = round_args(&run, 1);
    round::run(&args).expect("round 1");
    // As if killed after round 1's report was written but before `current` named it. The next
    // invocation is a generate shard (as from an array job): it too finishes the promotion
    // first, so round 2 generates with round 1's model.
    std::fs::write(run.join("current"), "0000\n").unwrap();
    let shard = round::run(&RoundArgs {
        stage: Some(round::StageArg::Generate),
        shard: Some("0/1".parse().unwrap()),
        ..args.clone()
    })
    .expect("shard of round 2");
    assert_eq!((shard.shard.expect("shard").round, shard.current), (2, 1));
    let r = round::run(&args).expect("round 2");
    assert_eq!(r.rounds[0].round, 2);
    assert_eq!(
        r.rounds[0].from_round, 1,
        "round 2 starts from the promoted round 1"
    );
    let store =
        flywheel_store::Store::open_existing(&run.join("rounds/0002/generate/shard-0-of-1"))
            .unwrap();
    assert_eq!(
        store.meta().unwrap().model_hash,
        flywheel_store::model_hash(&run.join("rounds/0001/model/onnx")).unwrap()
    );
}

/// Every record of a round's generate runs (shards in order) without its timings: key, tokens,
/// sampler seed and verdict; with the summed counts.
fn records(runs: &[std::path::PathBuf]) -> (Vec<String>, flywheel_store::Counts) {
    let mut out = Vec::new();
    let mut total = flywheel_store::Counts::default();
    let g = |g: &flywheel_store::Generation| {
        format!("{:?} {:?} {}", g.token_ids, g.finish_reason, g.seed)
    };
    for r in runs {
        let store = flywheel_store::Store::open_existing(r).unwrap();
        store
            .for_each_attempt(|a| {
                out.push(format!(
                    "a {} {} {} {}",
                    a.task_index,
                    a.attempt,
                    g(&a.generation),
                    a.pass
                ));
                Ok(())
            })
            .unwrap();
        store
            .for_each_reflection(|a| {
                out.push(format!(
                    "f {} {} {} {}",
                    a.task_index,
                    a.attempt,
                    a.reflection,
                    g(&a.generation)
                ));
                Ok(())
            })
            .unwrap();
        store
            .for_each_retry(|a| {
                out.push(format!(
                    "r {} {} {} {} {}",
                    a.task_index,
                    a.attempt,
                    a.reflection,
                    g(&a.generation),
                    a.pass
                ));
                Ok(())
            })
            .unwrap();
        let c = store.counts().unwrap();
        total.tasks += c.tasks;
        total.attempts += c.attempts;
        total.attempts_passed += c.attempts_passed;
        total.reflections += c.reflections;
        total.retries += c.retries;
        total.retries_passed += c.retries_passed;
    }
    out.sort();
    (out, total)
}

#[test]
fn two_generate_shard_processes_then_round_equal_one_unsharded_round() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reference = init_with(&dir.path().join("a"), None, &[]);
    round::run(&round_args(&reference, 1)).expect("reference");
    let sharded = init_with(&dir.path().join("b"), None, &[]);
    let shard = |i: u32| {
        let mut c = round_cli(
            &sharded,
            &["--stage", "generate", "--shard", &format!("{i}/2")],
        );
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        c.spawn().expect("spawn shard")
    };
    // The two array tasks at once.
    let (a, b) = (shard(0), shard(1));
    for child in [a, b] {
        let o = child.wait_with_output().expect("shard");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let runs: Vec<_> = (0..2)
        .map(|i| sharded.join(format!("rounds/0001/generate/shard-{i}-of-2")))
        .collect();
    assert!(!sharded.join("rounds/0001/generate/store.redb").exists());
    let r = round::run(&round_args(&sharded, 1)).expect("round after the shards");
    assert_eq!(r.rounds[0].status, "promoted");
    let want = records(&[reference.join("rounds/0001/generate")]);
    assert_eq!(records(&runs), want, "records and counts");
    assert_eq!(want.1.tasks, 12);
    // The sampled tokens agree exactly; the sampler's log-probs only up to the float rounding of
    // other batch shapes (the shards batch other sequences together), and so the weights
    // trained on them.
    let (got, want) = (outcome(&sharded, 1), outcome(&reference, 1));
    assert_eq!(got[0].1.len(), want[0].1.len());
    for (g, w) in got[0].1.iter().zip(&want[0].1) {
        let strip = |e: &flywheel_store::TrainExample| flywheel_store::TrainExample {
            sampler_logprobs: vec![],
            ..e.clone()
        };
        assert_eq!(strip(g), strip(w), "training example");
        for (a, b) in g.sampler_logprobs.iter().zip(&w.sampler_logprobs) {
            assert!((a - b).abs() < 1e-4, "sampler log-prob {a} vs {b}");
        }
    }
    let (a, b) = (
        safetensors::SafeTensors::deserialize(&got[0].0).unwrap(),
        safetensors::SafeTensors::deserialize(&want[0].0).unwrap(),
    );
    for (name, t) in a.tensors() {
        let u = b.tensor(&name).unwrap();
        let f = |d: &[u8]| -> Vec<f32> {
            d.chunks(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let diff = f(t.data())
            .iter()
            .zip(f(u.data()))
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-4, "{name}: trained weights differ by {diff}");
    }
    let stats = flywheel::commands::stats::run(&flywheel::commands::stats::StatsArgs {
        run_dir: sharded.clone(),
        json: true,
    })
    .expect("stats");
    assert_eq!(stats[1].generate.as_ref().expect("both shards").tasks, 12);

    // The next round's shard 0 alone: the plain round waits for shard 1, does nothing, exits 0.
    let o = round_cli(&sharded, &["--stage", "generate", "--shard", "0/2"])
        .output()
        .expect("shard 0");
    assert!(o.status.success());
    let o = round_cli(&sharded, &[]).output().expect("waiting round");
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{said}");
    assert!(said.contains("waiting for generate shards 1/2"), "{said}");
    assert!(!sharded.join("rounds/0002/train.parquet").exists());
    assert_eq!(
        std::fs::read_to_string(sharded.join("current")).unwrap(),
        "0001\n"
    );
    // A shard of another split is refused by name.
    let o = round_cli(&sharded, &["--stage", "generate", "--shard", "0/3"])
        .output()
        .expect("other split");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("split into 2 shards"));
}
