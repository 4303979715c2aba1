//! `flywheel round RUN_DIR`: the next round's missing stages in order — generate on the round's
//! slice of the training tasks → label → train → export (parity must pass) → evaluate on the
//! held-out tasks → promote (`current` is replaced atomically, only after the export passed).
//! Each stage resumes itself after `kill -9`; finished work is never redone. One `round` per run
//! directory at a time: a second one prints the holder and exits 0, so cron can fire freely.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use clap::ValueEnum;

use super::eval::{self, EvalCommandError};
use super::export::{self, ExportArgs, ExportCommandError};
use super::generate::{self, GenerateArgs, GenerateError, Shard};
use super::label::{self, LabelArgs, ScaleArg, SpanArg};
use super::train::{self as train_cmd, IsArg, LossArg, TrainArgs, TrainDevice, TrainDtype};
use super::DeviceArg;
use crate::run::config::{ConfigError, RunConfig, CONFIG_FILE};
use crate::run::{generate_dir, model_dir, round_dir, shard_dir, GenerateLayout, CURRENT_FILE};

/// The lock file of a run directory.
pub const LOCK_FILE: &str = "round.lock";
/// A finished round's report.
pub const ROUND_FILE: &str = "round.json";

#[derive(Debug, Clone, clap::Args)]
pub struct RoundArgs {
    /// The run directory (made by `flywheel init`).
    pub run_dir: PathBuf,
    /// Rounds to run (each continues from the last promoted model).
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// Run only this stage of the next round, for a scheduler's array job (with `--shard`).
    #[arg(long, value_enum, requires = "shard")]
    pub stage: Option<StageArg>,
    /// This process's part `I/N` (0-based) of the stage; the plain `round` continues once all N
    /// shards are complete.
    #[arg(long, value_name = "I/N", requires = "stage")]
    pub shard: Option<Shard>,
    /// No per-stage progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

/// The stages that can run on their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StageArg {
    /// Stage one: attempts, reflections and retries on the round's slice.
    Generate,
}

/// Why a round stopped.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    /// The settings could not be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Not a run directory, or a damaged one.
    #[error("{path}: {detail}")]
    Layout {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The training input has no instances left for this round.
    #[error("round {round}: the training input has {total} instances, none left for instances {start}..{end}")]
    Exhausted {
        /// The round.
        round: u32,
        /// Instances in the input.
        total: u64,
        /// The round's slice.
        start: u64,
        /// Its end.
        end: u64,
    },
    /// A setting of the file has a value the stage refuses.
    #[error("{key} = {value:?} is not a value the stage takes")]
    Value {
        /// The key.
        key: &'static str,
        /// The value.
        value: String,
    },
    /// Stage one failed.
    #[error("round {round}: generate: {source}")]
    Generate {
        /// The round.
        round: u32,
        /// The cause.
        source: GenerateError,
    },
    /// Stage two failed.
    #[error("round {round}: label: {source}")]
    Label {
        /// The round.
        round: u32,
        /// The cause.
        source: flywheel_label::LabelError,
    },
    /// Stage three failed.
    #[error("round {round}: train: {source}")]
    Train {
        /// The round.
        round: u32,
        /// The cause.
        source: flywheel_train::TrainError,
    },
    /// The export or its parity check failed: the round is not promoted.
    #[error("round {round}: export: {source}; `current` stays on round {current}")]
    Export {
        /// The round.
        round: u32,
        /// The promoted round.
        current: u32,
        /// The cause.
        source: ExportCommandError,
    },
    /// The evaluation failed.
    #[error("round {round}: eval: {source}")]
    Eval {
        /// The round.
        round: u32,
        /// The cause.
        source: EvalCommandError,
    },
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An atomic write failed.
    #[error(transparent)]
    Atomic(#[from] flywheel_model::atomic::AtomicDirError),
}

/// How a round ended.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RoundOutcome {
    /// The round.
    pub round: u32,
    /// `promoted`, or `no_signal` (too few mixed groups: not trained).
    pub status: String,
    /// The model it started from (the promoted round then).
    pub from_round: u32,
    /// Training instances of its slice.
    pub tasks: u64,
    /// Groups with both outcomes, and the minimum the settings ask for.
    pub groups_mixed: u64,
    /// Training examples kept by label.
    pub examples: u64,
    /// Optimizer steps.
    pub steps: u64,
    /// Held-out first-try and second-try accuracy of the round's model (promoted rounds).
    pub eval_first: Option<f64>,
    /// See `eval_first`.
    pub eval_second: Option<f64>,
    /// Wall seconds per stage in the invocation that finished it (`generate`, `label`, `train`,
    /// `export`, `eval`; a stage resumed after a crash counts only its last invocation).
    pub seconds: std::collections::BTreeMap<String, f64>,
}

/// What an invocation did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoundReport {
    /// Rounds finished by this invocation.
    pub rounds: Vec<RoundOutcome>,
    /// Another invocation held the lock: nothing was done.
    pub busy: Option<String>,
    /// The round's generate shards are not all complete: it stopped there, to be continued.
    pub waiting: Option<String>,
    /// What `--stage generate --shard I/N` did.
    pub shard: Option<ShardReport>,
    /// The run has its planned total of rounds (`rounds` in `flywheel.toml`): nothing to do.
    pub complete: Option<String>,
    /// The promoted round at the end.
    pub current: u32,
}

/// The run directory's lock, removed on drop.
struct Lock(PathBuf);

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Takes the lock, or names the live holder. A lock whose process is gone is taken over.
fn lock(run: &Path) -> Result<Result<Lock, String>, RoundError> {
    let path = run.join(LOCK_FILE);
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                writeln!(f, "{} {now}", std::process::id()).map_err(|source| RoundError::Io {
                    path: path.clone(),
                    source,
                })?;
                return Ok(Ok(Lock(path)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let mut it = text.split_whitespace();
                let pid: Option<u32> = it.next().and_then(|p| p.parse().ok());
                let since: u64 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
                if alive {
                    return Ok(Err(format!(
                        "round: {} is being worked on by pid {} since unix time {since}; nothing to do",
                        run.display(),
                        pid.unwrap_or(0)
                    )));
                }
                // The holder died (kill -9): its work resumes from the stores.
                let _ = std::fs::remove_file(&path);
            }
            Err(source) => return Err(RoundError::Io { path, source }),
        }
    }
    Err(RoundError::Layout {
        path,
        detail: "the lock file could not be taken".into(),
    })
}

fn current(run: &Path) -> Result<u32, RoundError> {
    let path = run.join(CURRENT_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| RoundError::Layout {
        path: path.clone(),
        detail: format!("{e} (not a run directory: make one with `flywheel init`)"),
    })?;
    text.trim().parse().map_err(|_| RoundError::Layout {
        path,
        detail: format!("{:?} is not a round number", text.trim()),
    })
}

/// The highest round with a directory (0 when only round 0 exists).
fn last_round(run: &Path) -> u32 {
    crate::run::rounds(run).last().copied().unwrap_or(0)
}

/// A settings string as the stage command's value.
fn value<T: ValueEnum>(key: &'static str, v: &str) -> Result<T, RoundError> {
    super::setting(v).ok_or_else(|| RoundError::Value {
        key,
        value: v.to_owned(),
    })
}

/// Writes round `k`'s slice of the training input (records k−1 … in blocks of `tasks`, blank
/// lines not counted) once; returns its instance count.
fn slice(c: &RunConfig, k: u32, path: &Path) -> Result<u64, RoundError> {
    let start = u64::from(k - 1) * c.round.tasks;
    let end = start + c.round.tasks;
    if path.is_file() {
        return Ok(count_lines(path));
    }
    let input = &c.task.train_input;
    let file = std::fs::File::open(input).map_err(|source| RoundError::Io {
        path: input.clone(),
        source,
    })?;
    let mut out = String::new();
    let mut record = 0u64;
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|source| RoundError::Io {
            path: input.clone(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        if (start..end).contains(&record) {
            out.push_str(&line);
            out.push('\n');
        }
        record += 1;
    }
    if record <= start {
        return Err(RoundError::Exhausted {
            round: k,
            total: record,
            start,
            end,
        });
    }
    flywheel_model::atomic::write_file(path, out.as_bytes())?;
    Ok(count_lines(path))
}

fn count_lines(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count() as u64)
        .unwrap_or(0)
}

/// Held-out evaluation of round `r`'s model into `rounds/r/eval` (resumes itself), then the
/// table and plot across rounds brought up to date.
fn evaluate(
    c: &RunConfig,
    run: &Path,
    r: u32,
    quiet: bool,
) -> Result<eval::EvalReport, RoundError> {
    let err = |source| RoundError::Eval { round: r, source };
    let report = eval::evaluate(&eval::round_spec(c, run, r, quiet).map_err(err)?).map_err(err)?;
    eval::tabulate(run, eval::EVAL_DIR).map_err(err)?;
    Ok(report)
}

/// The round the next invocation works on, its directory and the round its model starts from.
struct Next {
    k: u32,
    dir: PathBuf,
    from: u32,
}

/// Finds the next unfinished round (finishing a half-done promotion first, so that it starts
/// from the right model), creates its directory and fixes the model it starts from.
fn next_round(run: &Path) -> Result<Next, RoundError> {
    let last = last_round(run);
    let outcome_of = |r: u32| -> Option<RoundOutcome> {
        let bytes = std::fs::read(round_dir(run, r).join(ROUND_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    let finished = outcome_of(last);
    // A kill between a round's report and `current` left the promotion half done: finish it.
    if let Some(o) = &finished {
        if o.status == "promoted" && current(run)? < last {
            flywheel_model::atomic::write_file(
                &run.join(CURRENT_FILE),
                format!("{last:04}\n").as_bytes(),
            )?;
        }
    }
    let k = if last == 0 || finished.is_some() {
        last + 1
    } else {
        last
    };
    let dir = round_dir(run, k);
    std::fs::create_dir_all(&dir).map_err(|source| RoundError::Io {
        path: dir.clone(),
        source,
    })?;
    // The model a round starts from is fixed when it starts, so a resumed round continues with
    // the model that generated its data.
    let from_file = dir.join("from");
    let from = match std::fs::read_to_string(&from_file) {
        Ok(t) => t.trim().parse().map_err(|_| RoundError::Layout {
            path: from_file.clone(),
            detail: format!("{:?} is not a round number", t.trim()),
        })?,
        Err(_) => {
            let from = current(run)?;
            flywheel_model::atomic::write_file(&from_file, format!("{from:04}\n").as_bytes())?;
            from
        }
    };
    Ok(Next { k, dir, from })
}

/// Stage one of round `k` (or shard `shard` of it) into `out`, with the run's settings; every
/// shard and the unsharded run share all settings but the shard, so their records agree.
fn generate_stage(
    c: &RunConfig,
    next: &Next,
    run: &Path,
    shard: Option<Shard>,
    out: PathBuf,
    quiet: bool,
) -> Result<generate::GenerateReport, RoundError> {
    let g = &c.generate;
    generate::run(&GenerateArgs {
        model: model_dir(run, next.from).join("onnx"),
        task: c.task.name.clone(),
        input: next.dir.join("tasks.jsonl"),
        task_flags: eval::task_flags_of(c),
        limit: None,
        out,
        attempts: g.attempts,
        reflections: g.reflections,
        batch_size: g.batch_size as usize,
        temperature: g.temperature as f32,
        reflection_temperature: (g.reflection_temperature > 0.0)
            .then_some(g.reflection_temperature as f32),
        top_p: g.top_p as f32,
        top_k: g.top_k as usize,
        max_new_tokens: g.max_new_tokens as usize,
        seed: g.seed + u64::from(next.k),
        shard,
        device: value::<DeviceArg>("generate.device", &g.device)?,
        threads: g.threads as usize,
        prefix_cache_mib: g.prefix_cache_mib as usize,
        quiet,
    })
    .map_err(|source| RoundError::Generate {
        round: next.k,
        source,
    })
}

/// What one shard of a round's generate stage did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShardReport {
    /// The round.
    pub round: u32,
    /// The shard, `I/N`.
    pub shard: String,
    /// Its run directory.
    pub out: PathBuf,
    /// Instances of the shard.
    pub tasks: u64,
    /// The first one's index in the round's slice.
    pub first_task_index: u64,
    /// Rollout rows written.
    pub rows: u64,
    /// Wall time.
    pub seconds: f64,
}

/// `round RUN_DIR --stage generate --shard I/N`: shard I of the next round's generate stage.
/// It takes no lock (the N shards run at once); a round already generating unsharded, or split
/// another way, is refused.
fn shard_stage(
    run: &Path,
    c: &RunConfig,
    shard: Shard,
    quiet: bool,
) -> Result<ShardReport, RoundError> {
    let next = next_round(run)?;
    let layout_err = |detail: String| RoundError::Layout {
        path: generate_dir(run, next.k),
        detail,
    };
    match GenerateLayout::of(run, next.k).map_err(layout_err)? {
        GenerateLayout::Single => {
            return Err(layout_err(format!(
                "round {} is already generated (or generating) unsharded; its shards cannot be run",
                next.k
            )))
        }
        GenerateLayout::Shards { count, .. } if count != shard.count => {
            return Err(layout_err(format!(
                "round {} is split into {count} shards, not {}",
                next.k, shard.count
            )))
        }
        _ => {}
    }
    slice(c, next.k, &next.dir.join("tasks.jsonl"))?;
    let out = shard_dir(run, next.k, shard.index, shard.count);
    if !quiet {
        eprintln!(
            "round {}: generate shard {}/{} with round {}'s model",
            next.k, shard.index, shard.count, next.from
        );
    }
    let g = generate_stage(c, &next, run, Some(shard), out.clone(), quiet)?;
    Ok(ShardReport {
        round: next.k,
        shard: format!("{}/{}", shard.index, shard.count),
        out,
        tasks: g.tasks,
        first_task_index: g.first_task_index,
        rows: g.parquet_rows,
        seconds: g.seconds,
    })
}

/// How an attempt at a round ended.
enum Step {
    /// The round finished (promoted or without signal).
    Done(RoundOutcome),
    /// Its generate shards are not all complete yet.
    Waiting(String),
}

/// Runs one round: the next unfinished one.
fn one_round(run: &Path, c: &RunConfig, quiet: bool) -> Result<Step, RoundError> {
    let next = next_round(run)?;
    let (k, from) = (next.k, next.from);
    let dir = next.dir.clone();
    let say = |stage: &str| {
        if !quiet {
            eprintln!("round {k}: {stage}");
        }
    };
    // Round 0's held-out accuracy is every later round's baseline.
    if !round_dir(run, 0)
        .join(eval::EVAL_DIR)
        .join("eval.json")
        .is_file()
    {
        say("evaluate round 0 (the baseline)");
        evaluate(c, run, 0, quiet)?;
    }
    let start_model = model_dir(run, from);
    let tasks = slice(c, k, &dir.join("tasks.jsonl"))?;
    let mut seconds = std::collections::BTreeMap::new();
    let mut clock = std::time::Instant::now();
    let mut lap = |name: &str, seconds: &mut std::collections::BTreeMap<String, f64>| {
        seconds.insert(name.to_owned(), clock.elapsed().as_secs_f64());
        clock = std::time::Instant::now();
    };
    // Generated as shards by a scheduler: continue once all are complete, else stop here.
    let layout = GenerateLayout::of(run, k).map_err(|detail| RoundError::Layout {
        path: generate_dir(run, k),
        detail,
    })?;
    let runs = match &layout {
        GenerateLayout::Shards { count, complete } if complete.len() < *count as usize => {
            let missing: Vec<String> = (0..*count)
                .filter(|i| !complete.contains(i))
                .map(|i| format!("{i}/{count}"))
                .collect();
            return Ok(Step::Waiting(format!(
                "round {k}: waiting for generate shards {} (complete: {} of {count}); run them with `flywheel round {} --stage generate --shard I/{count}`",
                missing.join(", "),
                complete.len(),
                run.display()
            )));
        }
        GenerateLayout::Shards { count, .. } => {
            say(&format!("generate: all {count} shards are complete"));
            layout.runs(run, k)
        }
        GenerateLayout::Empty | GenerateLayout::Single => {
            say(&format!(
                "generate on {tasks} training instances with round {from}'s model"
            ));
            generate_stage(c, &next, run, None, generate_dir(run, k), quiet)?;
            vec![generate_dir(run, k)]
        }
    };
    lap("generate", &mut seconds);
    say("label");
    let l = &c.label;
    let labelled = label::run(&LabelArgs {
        runs,
        out: Some(dir.join(flywheel_store::TRAIN_FILE)),
        span: value::<SpanArg>("label.span", &l.span)?,
        scale: value::<ScaleArg>("label.scale", &l.scale)?,
        keep_zero_std: l.keep_zero_std,
        drop_truncated: l.drop_truncated,
        min_tokens: l.min_tokens,
        max_tokens: (l.max_tokens > 0).then_some(l.max_tokens),
    })
    .map_err(|source| RoundError::Label { round: k, source })?;
    lap("label", &mut seconds);
    say(&format!(
        "label: {} examples; {} of {} {} groups have both outcomes; {} passed {} of {}",
        labelled.counts.kept,
        labelled.counts.groups_mixed,
        labelled.counts.groups_seen,
        labelled.meta.span.as_str(),
        labelled.meta.span.rewarded(),
        labelled.counts.retries_passed,
        labelled.counts.retries
    ));
    let mut outcome = RoundOutcome {
        round: k,
        status: "no_signal".into(),
        from_round: from,
        tasks,
        groups_mixed: labelled.counts.groups_mixed,
        examples: labelled.counts.kept,
        steps: 0,
        eval_first: None,
        eval_second: None,
        seconds: seconds.clone(),
    };
    if labelled.counts.groups_mixed < c.round.min_mixed_groups.max(1) || labelled.counts.kept == 0 {
        say(&format!(
            "{} groups with both outcomes (at least {} needed): not trained, `current` stays on round {from}",
            labelled.counts.groups_mixed, c.round.min_mixed_groups
        ));
        write_outcome(&dir, &outcome)?;
        return Ok(Step::Done(outcome));
    }
    say(&format!("train on {} examples", labelled.counts.kept));
    let t = &c.train;
    let trained = train_cmd::run(&TrainArgs {
        data: vec![dir.join(flywheel_store::TRAIN_FILE)],
        model: start_model.clone(),
        out: dir.join("train"),
        loss: value::<LossArg>("train.loss", &t.loss)?,
        lr: t.lr,
        beta: t.beta,
        ref_model: None,
        epsilon: t.epsilon,
        epsilon_high: Some(t.epsilon_high),
        batch_size: t.batch_size as usize,
        micro_batch_tokens: t.micro_batch_tokens as usize,
        steps: None,
        epochs: Some(t.epochs),
        iterations: t.iterations,
        warmup_ratio: t.warmup_ratio,
        weight_decay: t.weight_decay,
        max_grad_norm: t.max_grad_norm,
        seed: t.seed,
        checkpoint_every: t.checkpoint_every,
        device: value::<TrainDevice>("train.device", &t.device)?,
        dtype: value::<TrainDtype>("train.dtype", &t.dtype)?,
        is_correction: value::<IsArg>("train.is_correction", &t.is_correction)?,
        is_cap: t.is_cap,
        off_policy: false,
        quiet,
    })
    .map_err(|source| RoundError::Train { round: k, source })?;
    outcome.steps = trained.total_steps;
    lap("train", &mut seconds);
    // The round's model: the trained directory's files, linked (not copied) into `model/`.
    let model = model_dir(run, k);
    if !model.join("model.safetensors").is_file() {
        let trained_dir = dir.join("train").join(flywheel_train::MODEL_DIR);
        flywheel_model::atomic::write_dir(&model, true, |tmp| -> Result<(), RoundError> {
            for e in std::fs::read_dir(&trained_dir).map_err(|source| RoundError::Io {
                path: trained_dir.clone(),
                source,
            })? {
                let e = e.map_err(|source| RoundError::Io {
                    path: trained_dir.clone(),
                    source,
                })?;
                let to = tmp.join(e.file_name());
                std::fs::hard_link(e.path(), &to)
                    .or_else(|_| std::fs::copy(e.path(), &to).map(|_| ()))
                    .map_err(|source| RoundError::Io { path: to, source })?;
            }
            Ok(())
        })?;
    }
    say("export and check parity");
    export::run(&ExportArgs {
        model: model.clone(),
        out: None,
        dtype: export::DtypeChoice::F32,
        fused: c.export.fused,
        force: true,
        check: true,
        threads: c.generate.threads as usize,
    })
    .map_err(|source| RoundError::Export {
        round: k,
        current: from,
        source,
    })?;
    lap("export", &mut seconds);
    say("evaluate on the held-out instances");
    let e = evaluate(c, run, k, quiet)?;
    outcome.eval_first = Some(e.levels[0].first.rate);
    outcome.eval_second = Some(e.levels[0].second.rate);
    outcome.status = "promoted".into();
    lap("eval", &mut seconds);
    outcome.seconds = seconds;
    // Promote: `current` names the round only once its export passed parity; the report first,
    // so a kill between the two is finished by the next invocation.
    write_outcome(&dir, &outcome)?;
    flywheel_model::atomic::write_file(&run.join(CURRENT_FILE), format!("{k:04}\n").as_bytes())?;
    retain(run, k, c.round.keep_rounds)?;
    say(&format!(
        "promoted (held-out first try {:.1}%, second try {:.1}%)",
        100.0 * e.levels[0].first.rate,
        100.0 * e.levels[0].second.rate
    ));
    Ok(Step::Done(outcome))
}

/// With `keep > 0`, removes the heavy files (the ONNX export, the optimizer moments) of rounds
/// older than the last `keep`; never round 0's model, never the promoted round, never a Parquet
/// file or a model's safetensors.
fn retain(run: &Path, promoted: u32, keep: u64) -> Result<(), RoundError> {
    if keep == 0 {
        return Ok(());
    }
    for r in 1..promoted {
        if u64::from(promoted - r) < keep {
            continue;
        }
        let d = round_dir(run, r);
        let onnx = model_dir(run, r).join("onnx");
        if onnx.is_dir() {
            std::fs::remove_dir_all(&onnx)
                .map_err(|source| RoundError::Io { path: onnx, source })?;
        }
        let moments = d.join("train/checkpoint/optimizer.safetensors");
        if moments.is_file() {
            std::fs::remove_file(&moments).map_err(|source| RoundError::Io {
                path: moments,
                source,
            })?;
        }
    }
    Ok(())
}

fn write_outcome(dir: &Path, o: &RoundOutcome) -> Result<(), RoundError> {
    let json = serde_json::to_vec_pretty(o).unwrap_or_default();
    Ok(flywheel_model::atomic::write_file(
        &dir.join(ROUND_FILE),
        &json,
    )?)
}

pub fn run(args: &RoundArgs) -> Result<RoundReport, RoundError> {
    let run_dir = &args.run_dir;
    let config = RunConfig::load(&run_dir.join(CONFIG_FILE))?;
    let empty = RoundReport {
        rounds: vec![],
        busy: None,
        waiting: None,
        shard: None,
        complete: None,
        current: 0,
    };
    let finish = |r: RoundReport| -> Result<RoundReport, RoundError> {
        Ok(RoundReport {
            current: current(run_dir)?,
            ..r
        })
    };
    // The planned total: a cron-fired round (or shard) after the last one does nothing.
    let planned = |run: &Path| {
        let done = finished_rounds(run);
        (config.rounds > 0 && done >= config.rounds).then(|| {
            format!(
                "round: {} has its planned {} rounds (rounds = {} in {CONFIG_FILE}); nothing to do",
                run.display(),
                done,
                config.rounds
            )
        })
    };
    if let (Some(StageArg::Generate), Some(shard)) = (args.stage, args.shard) {
        if let Some(why) = planned(run_dir) {
            return finish(RoundReport {
                complete: Some(why),
                ..empty
            });
        }
        let done = shard_stage(run_dir, &config, shard, args.quiet)?;
        return finish(RoundReport {
            shard: Some(done),
            ..empty
        });
    }
    let _lock = match lock(run_dir)? {
        Ok(l) => l,
        Err(holder) => {
            return finish(RoundReport {
                busy: Some(holder),
                ..empty
            })
        }
    };
    let mut rounds = Vec::new();
    for _ in 0..args.rounds {
        if let Some(why) = planned(run_dir) {
            return finish(RoundReport {
                rounds,
                complete: Some(why),
                ..empty
            });
        }
        match one_round(run_dir, &config, args.quiet)? {
            Step::Done(o) => rounds.push(o),
            Step::Waiting(why) => {
                return finish(RoundReport {
                    rounds,
                    waiting: Some(why),
                    ..empty
                })
            }
        }
    }
    finish(RoundReport { rounds, ..empty })
}

/// Rounds (from 1) with a report: finished, promoted or not.
fn finished_rounds(run: &Path) -> u64 {
    (1..=last_round(run))
        .filter(|&r| round_dir(run, r).join(ROUND_FILE).is_file())
        .count() as u64
}
