//! `flywheel generate`: attempts, reflections and retries for a task's instances on an exported
//! ONNX model, into `RUN_DIR/store.redb` (resumable) and `RUN_DIR/rollouts.parquet`.

use super::{DeviceArg, TaskFlags};
use crate::pipeline::{Pipeline, PipelineConfig, PipelineError, Tally};
use flywheel_datasets::task::{load_task_with, read_instances, InstanceError, Task, TaskError};
use flywheel_generate::{Engine, EngineConfig, EngineError, RunStats, SamplingParams};
use flywheel_model::chat::{ChatError, ChatTemplate};
use flywheel_runtime::Provider;
use flywheel_store::{self as store, Counts, ParquetExportError, RunMeta, Store, StoreError};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// A contiguous block of the input: part `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("shard {s:?} is not I/N"))?;
        let index: u32 = i
            .trim()
            .parse()
            .map_err(|_| format!("shard index {i:?} is not a number"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("shard count {n:?} is not a number"))?;
        if count == 0 || index >= count {
            return Err(format!("shard {s:?}: need 0 <= I < N"));
        }
        Ok(Self { index, count })
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// Exported ONNX model folder (`flywheel export` output: model.onnx, genai_config.json, tokenizer files).
    #[arg(long)]
    pub model: PathBuf,
    /// Task: `countdown`, `function_calling`, or a path to a user task config.
    #[arg(long)]
    pub task: String,
    /// Task instances (JSONL, or Parquet for Countdown).
    #[arg(long)]
    pub input: PathBuf,
    /// Prompt overrides and the reflection feedback option.
    #[command(flatten)]
    pub task_flags: TaskFlags,
    /// Use only the first N instances of the input (before sharding).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Run directory: `store.redb` and `rollouts.parquet` are written there. Rerunning the same
    /// command resumes it.
    #[arg(long)]
    pub out: PathBuf,
    /// First attempts per instance (K).
    #[arg(long, default_value_t = 1)]
    pub attempts: u32,
    /// Reflections per failed attempt (G); each is followed by one retry.
    #[arg(long, default_value_t = 4)]
    pub reflections: u32,
    /// Rows decoded together (continuous batching refills freed rows).
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Sampling temperature of the reflections only (default: --temperature); attempts and
    /// retries keep --temperature.
    #[arg(long, value_name = "T")]
    pub reflection_temperature: Option<f32>,
    /// Nucleus sampling threshold (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Top-k cut-off (0: off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Maximum new tokens per generation.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Run seed; every request's seed derives from it and the request's place in the run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// This process's contiguous part of the input, `I/N` (0-based); the shards' Parquet files
    /// concatenate, in shard order, into the whole run.
    #[arg(long)]
    pub shard: Option<Shard>,
    /// ONNX Runtime execution provider: `auto` (CUDA when the installed ONNX Runtime has it,
    /// else the CPU), `cpu`, or `cuda` (an error when unavailable).
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// ONNX Runtime intra-op threads (0: its default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// MiB of finished attempts' and reflections' KV cache kept so that the reflections and
    /// retries extending them prefill only their new tokens (0: off, every prompt prefilled whole).
    #[arg(long, default_value_t = 1024)]
    pub prefix_cache_mib: usize,
    /// No progress output (a bar on a terminal, else one line per batch of stored tasks).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error("{path}: {source}")]
    Input {
        path: PathBuf,
        source: InstanceError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[error(transparent)]
    Parquet(#[from] ParquetExportError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("--{flag} {value}: must be {expected}")]
    Setting {
        flag: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// Settings no sampler can honour are refused before anything is loaded or written (a NaN
/// temperature would also never equal itself when a rerun compares settings).
fn check_settings(args: &GenerateArgs) -> Result<(), GenerateError> {
    let bad = |flag, value: String, expected| {
        Err(GenerateError::Setting {
            flag,
            value,
            expected,
        })
    };
    if !(args.temperature.is_finite() && args.temperature >= 0.0) {
        return bad(
            "temperature",
            args.temperature.to_string(),
            "a finite number >= 0 (0: greedy)",
        );
    }
    if let Some(t) = args.reflection_temperature {
        if !(t.is_finite() && t >= 0.0) {
            return bad(
                "reflection-temperature",
                t.to_string(),
                "a finite number >= 0 (0: greedy)",
            );
        }
    }
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        return bad("top-p", args.top_p.to_string(), "in (0, 1] (1: off)");
    }
    if args.batch_size == 0 {
        return bad("batch-size", "0".into(), "at least 1");
    }
    if args.attempts == 0 {
        return bad("attempts", "0".into(), "at least 1");
    }
    Ok(())
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct GenerateReport {
    pub out: PathBuf,
    pub model_hash: String,
    /// The execution provider the engine ran on.
    pub provider: Provider,
    /// Instances of this shard, and the input range they cover.
    pub tasks: u64,
    pub first_task_index: u64,
    /// What this invocation did.
    pub session: Tally,
    pub engine: RunStats,
    /// Everything the store holds (all invocations of this run).
    pub store: Counts,
    pub parquet_rows: u64,
    pub seconds: f64,
    pub tokens_per_second: f64,
    pub tasks_per_minute: f64,
    /// Peak resident memory of this process (Linux `VmHWM`; absent elsewhere).
    pub peak_rss_bytes: Option<u64>,
}

/// The process's peak resident set size, from `/proc/self/status` (`VmHWM`, in kB).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The reflections' own temperature, where it differs from the others' (the same value given
/// twice is no separate setting, so the run's identity does not change).
fn reflection_temperature(args: &GenerateArgs) -> Option<f32> {
    args.reflection_temperature
        .filter(|&t| t != args.temperature)
}

pub fn run(args: &GenerateArgs) -> Result<GenerateReport, GenerateError> {
    let start = Instant::now();
    check_settings(args)?;
    let task: Arc<dyn Task> = Arc::from(load_task_with(&args.task, &args.task_flags.options())?);
    // Validate the whole input first: a malformed line stops the run before any work.
    let mut total = 0u64;
    for item in read_instances(task.as_ref(), &args.input) {
        item.map_err(|source| GenerateError::Input {
            path: args.input.clone(),
            source,
        })?;
        total += 1;
    }
    let n = args.limit.map_or(total, |l| l.min(total));
    let shard = args.shard.unwrap_or(Shard { index: 0, count: 1 });
    let (lo, hi) = (
        n * u64::from(shard.index) / u64::from(shard.count),
        n * (u64::from(shard.index) + 1) / u64::from(shard.count),
    );

    let model_hash = store::model_hash(&args.model)?;
    let meta = RunMeta {
        model_hash: model_hash.clone(),
        model_files_hash: store::model_files_hash(&args.model)?,
        task: task.name().to_owned(),
        task_hash: store::text_hash(&task.identity().to_string()),
        attempts: args.attempts,
        reflections: args.reflections,
        temperature: args.temperature,
        reflection_temperature: reflection_temperature(args),
        top_p: args.top_p,
        top_k: args.top_k as u32,
        max_new_tokens: args.max_new_tokens as u32,
        seed: args.seed,
        shard_index: shard.index,
        shard_count: shard.count,
        limit: args.limit,
    };
    // The engine first: a model or provider that cannot load leaves no run directory behind.
    let mut engine = Engine::load(
        &args.model,
        EngineConfig {
            batch_size: args.batch_size,
            threads: args.threads,
            refill_min: None,
            prefix_cache_bytes: args.prefix_cache_mib << 20,
            provider: match args.device {
                DeviceArg::Auto => Provider::Auto,
                DeviceArg::Cpu => Provider::Cpu,
                DeviceArg::Cuda => Provider::Cuda,
            },
            ..Default::default()
        },
    )?;
    let store = Store::open(&args.out, &meta)?;
    let provider = engine.provider();
    let tokenizer = engine.tokenizer.clone();
    let template = ChatTemplate::load(&args.model)?;
    let input = args.input.clone();
    let instances = read_instances(task.as_ref(), &args.input)
        .enumerate()
        .skip(lo as usize)
        .take((hi - lo) as usize)
        .map(move |(i, r)| {
            r.map(|inst| (i as u64, inst))
                .map_err(|source| PipelineError::Input {
                    path: input.clone(),
                    source,
                })
        });
    let config = PipelineConfig {
        attempts: args.attempts,
        reflections: args.reflections,
        params: SamplingParams {
            temperature: args.temperature,
            top_p: args.top_p,
            top_k: args.top_k,
            max_new_tokens: args.max_new_tokens,
            stop: Vec::new(),
            ignore_eos: false,
        },
        reflection_temperature: reflection_temperature(args),
        seed: args.seed,
    };
    let mut pipeline = Pipeline::new(
        task.clone(),
        &template,
        &tokenizer,
        &store,
        config,
        Box::new(instances),
    )?;
    // On a terminal a progress bar; elsewhere (cron, a log file, a test) one line each time more
    // tasks are stored, which is what a log reader (or a test waiting to kill it) can rely on.
    let total = hi - lo;
    let bar = (!args.quiet && std::io::stderr().is_terminal())
        .then(|| super::progress_bar(total, "tasks | {msg}"));
    if !args.quiet {
        let bar = bar.clone();
        let mut rate = 0.0f64;
        let mut printed = 0u64;
        pipeline.progress = Some(Box::new(
            move |t: &Tally, s: &flywheel_generate::StepStats| {
                if s.seconds > 0.0 {
                    let r = s.new_tokens as f64 / s.seconds;
                    rate = if rate == 0.0 { r } else { 0.9 * rate + 0.1 * r };
                }
                let pct = |a: u64, b: u64| {
                    if b == 0 {
                        0.0
                    } else {
                        100.0 * a as f64 / b as f64
                    }
                };
                let msg = format!(
                    "first try {:.1}% | retry {:.1}% | {:.0} tok/s",
                    pct(t.attempts_passed, t.attempts),
                    pct(t.retries_passed, t.retries),
                    rate
                );
                match &bar {
                    Some(bar) => {
                        bar.set_position(t.tasks_done);
                        bar.set_message(msg);
                    }
                    None if t.tasks_done > printed => {
                        printed = t.tasks_done;
                        eprintln!("generate: {printed}/{total} tasks stored | {msg}");
                    }
                    None => {}
                }
            },
        ));
    }
    // The pipeline's own error (a store conflict, a changed input) is the cause of an engine
    // stop, so it is reported first.
    let engine_stats = engine.run(&mut pipeline);
    let tally = pipeline.finish()?;
    let engine_stats = engine_stats?;
    if !args.quiet && bar.is_none() {
        // The last verdicts land after the engine's last step: say where the run ended.
        eprintln!("generate: {}/{total} tasks stored | done", tally.tasks_done);
    }
    if let Some(bar) = bar {
        bar.finish();
    }
    let parquet_rows = store::export_rollouts(&store, &args.out.join(store::ROLLOUTS_FILE))?;
    let seconds = start.elapsed().as_secs_f64();
    Ok(GenerateReport {
        out: args.out.clone(),
        model_hash,
        provider,
        tasks: hi - lo,
        first_task_index: lo,
        tokens_per_second: tally.new_tokens as f64 / engine_stats.seconds.max(1e-9),
        tasks_per_minute: (tally.tasks_done - tally.tasks_skipped_complete) as f64
            / (engine_stats.seconds.max(1e-9) / 60.0),
        session: tally,
        engine: engine_stats,
        store: store.counts()?,
        parquet_rows,
        seconds,
        peak_rss_bytes: peak_rss_bytes(),
    })
}
