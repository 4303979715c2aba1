//! `flywheel eval`: held-out accuracy of a model. One attempt per task (greedy) or `--samples K`
//! at a temperature, one reflection and retry after each failure, run as a resumable generate run
//! in `--out`; then first-try and second-try accuracy with 95% Wilson intervals, overall and per
//! level, and with `--baseline` the paired change from an earlier evaluation of the same tasks.

use std::path::PathBuf;

use flywheel_eval::{Change, EvalError, LevelSummary};
use flywheel_store::Store;

use super::generate::{self, GenerateArgs, GenerateError};
use super::{DeviceArg, TaskFlags};

#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Exported model folder to evaluate (MODEL/onnx).
    #[arg(long, value_name = "ONNX_DIR")]
    pub model: PathBuf,
    /// Task name or user task file.
    #[arg(long)]
    pub task: String,
    /// Held-out instances (JSONL).
    #[arg(long)]
    pub input: PathBuf,
    #[command(flatten)]
    pub task_flags: TaskFlags,
    /// Evaluation run directory (store, rollouts, eval.json); rerunning resumes.
    #[arg(long, value_name = "EVAL_DIR")]
    pub out: PathBuf,
    /// Evaluate only the first N instances.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Samples per task: 1 is greedy; more need --temperature > 0 and narrow the intervals.
    #[arg(long, default_value_t = 1)]
    pub samples: u32,
    /// Sampling temperature of attempts, reflections and retries (default: 0, greedy, for one
    /// sample; required above 0 for several).
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Token limit of every generation.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Concurrent sequences in the engine.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Seed of the sampler (with --samples > 1).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// An earlier evaluation run of the same tasks: report the paired change from it.
    #[arg(long, value_name = "EVAL_DIR")]
    pub baseline: Option<PathBuf>,
    /// Where ONNX Runtime runs.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// ONNX Runtime intra-op threads (0: its default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Memory for reusable prompt prefixes, in MiB.
    #[arg(long, default_value_t = 1024)]
    pub prefix_cache_mib: usize,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Why an evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalCommandError {
    /// A flag is out of range.
    #[error("{flag}: {detail}")]
    Setting {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The evaluation run failed.
    #[error(transparent)]
    Generate(#[from] GenerateError),
    /// Its records could not be summarized.
    #[error("{path}: {source}")]
    Summary {
        /// The run directory.
        path: PathBuf,
        /// The cause.
        source: EvalError,
    },
    /// The report could not be written.
    #[error(transparent)]
    Write(#[from] flywheel_model::atomic::AtomicDirError),
}

/// What an evaluation found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalReport {
    /// The evaluation run directory.
    pub out: PathBuf,
    /// SHA-256 of the evaluated model's weights.
    pub model_hash: String,
    /// Samples per task and their temperature.
    pub samples: u32,
    /// The temperature.
    pub temperature: f32,
    /// `all`, then each level.
    pub levels: Vec<LevelSummary>,
    /// The paired change from `--baseline`, on the tasks both evaluated.
    pub change: Option<Change>,
    /// Wall time.
    pub seconds: f64,
}

impl std::fmt::Display for EvalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", flywheel_eval::summary::markdown(&self.levels))?;
        if let Some(c) = &self.change {
            for (name, p) in [("first try", &c.first), ("second try", &c.second)] {
                writeln!(
                    f,
                    "change of {name} from the baseline on {} pairs: {:+.1} points [{:+.1}, {:+.1}] (paired bootstrap 95%), {} fixed, {} broken, exact McNemar p = {:.3}",
                    p.pairs,
                    100.0 * p.change,
                    100.0 * p.interval.low,
                    100.0 * p.interval.high,
                    p.fixed,
                    p.broken,
                    p.p_value
                )?;
            }
        }
        Ok(())
    }
}

fn outcomes_of(dir: &std::path::Path) -> Result<Vec<flywheel_eval::Outcome>, EvalCommandError> {
    let err = |source| EvalCommandError::Summary {
        path: dir.to_owned(),
        source,
    };
    let store = Store::open_existing(dir).map_err(|e| err(EvalError::Store(e)))?;
    flywheel_eval::outcomes(&store).map_err(err)
}

pub fn run(args: &EvalArgs) -> Result<EvalReport, EvalCommandError> {
    let start = std::time::Instant::now();
    let temperature = args.temperature.unwrap_or(0.0);
    if args.samples == 0 {
        return Err(EvalCommandError::Setting {
            flag: "--samples",
            detail: "must be at least 1".into(),
        });
    }
    if args.samples > 1 && (temperature.is_nan() || temperature <= 0.0) {
        return Err(EvalCommandError::Setting {
            flag: "--samples",
            detail: format!(
                "{} samples of a greedy model are one sample {} times: give --temperature > 0",
                args.samples, args.samples
            ),
        });
    }
    let gen = generate::run(&GenerateArgs {
        model: args.model.clone(),
        task: args.task.clone(),
        input: args.input.clone(),
        task_flags: args.task_flags.clone(),
        limit: args.limit,
        out: args.out.clone(),
        attempts: args.samples,
        reflections: 1,
        batch_size: args.batch_size,
        temperature,
        top_p: 1.0,
        top_k: 0,
        max_new_tokens: args.max_new_tokens,
        seed: args.seed,
        shard: None,
        device: args.device,
        threads: args.threads,
        prefix_cache_mib: args.prefix_cache_mib,
        quiet: args.quiet,
    })?;
    let outcomes = outcomes_of(&args.out)?;
    let change =
        match &args.baseline {
            Some(b) => Some(flywheel_eval::compare(&outcomes_of(b)?, &outcomes).map_err(
                |source| EvalCommandError::Summary {
                    path: b.clone(),
                    source,
                },
            )?),
            None => None,
        };
    let report = EvalReport {
        out: args.out.clone(),
        model_hash: gen.model_hash,
        samples: args.samples,
        temperature,
        levels: flywheel_eval::summarize(&outcomes),
        change,
        seconds: start.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
    flywheel_model::atomic::write_file(&args.out.join("eval.json"), &json)?;
    Ok(report)
}
