//! `flywheel eval`: held-out accuracy of a model. One attempt per task (greedy) or `--samples K`
//! at a temperature, one reflection and retry after each failure, run as a resumable generate run
//! in `--out`; then first-try and second-try accuracy with 95% Wilson intervals, overall and per
//! level, and with `--baseline` the paired change from an earlier evaluation of the same tasks.
//! `flywheel eval RUN_DIR` does this for the rounds of a run (cached per round) and writes the
//! table across rounds (`eval.parquet`, paired changes from round 0) and its plot (`eval.png`).

use std::path::{Path, PathBuf};

use flywheel_eval::{Change, EvalError, LevelSummary};
use flywheel_store::{EvalRow, Store};

use super::generate::{self, GenerateArgs, GenerateError};
use super::{DeviceArg, TaskFlags};
use crate::run::config::{ConfigError, RunConfig, CONFIG_FILE};
use crate::run::{model_dir, round_dir};

/// One evaluation, every setting resolved (what `round` and both forms of `flywheel eval` run).
#[derive(Debug, Clone)]
pub struct EvalSpec {
    /// Exported model folder (MODEL/onnx).
    pub model: PathBuf,
    /// Task name or user task file.
    pub task: String,
    /// Held-out instances (JSONL).
    pub input: PathBuf,
    /// Prompt overrides and feedback.
    pub task_flags: TaskFlags,
    /// Evaluation run directory (store, rollouts, eval.json); rerunning resumes.
    pub out: PathBuf,
    /// Only the first N instances.
    pub limit: Option<u64>,
    /// Samples per task: 1 is greedy; more need a temperature above 0.
    pub samples: u32,
    /// Sampling temperature of attempts, reflections and retries (0: greedy).
    pub temperature: f32,
    /// Token limit of every generation.
    pub max_new_tokens: usize,
    /// Concurrent sequences in the engine.
    pub batch_size: usize,
    /// Seed of the sampler.
    pub seed: u64,
    /// An earlier evaluation run of the same tasks: report the paired change from it.
    pub baseline: Option<PathBuf>,
    /// Where ONNX Runtime runs.
    pub device: DeviceArg,
    /// ONNX Runtime intra-op threads (0: its default).
    pub threads: usize,
    /// Memory for reusable prompt prefixes, in MiB.
    pub prefix_cache_mib: usize,
    /// No progress output.
    pub quiet: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// A run directory (made by `flywheel init`): evaluate its rounds on its held-out set with its
    /// settings (cached per round in `rounds/NNNN/eval/`), then write `RUN_DIR/eval.parquet` and
    /// `RUN_DIR/eval.png` and print the table across rounds. Without it, `--model`, `--task`,
    /// `--input` and `--out` say what to evaluate.
    pub run_dir: Option<PathBuf>,
    /// With RUN_DIR: evaluate only this round's model (default: every round with a model of its
    /// own, round 0 and each promoted round).
    #[arg(long, requires = "run_dir")]
    pub round: Option<u32>,
    /// Model to evaluate: an exported folder (MODEL/onnx) or a model directory holding one. With
    /// RUN_DIR, any model on the run's held-out set, compared with round 0 (cached in
    /// `RUN_DIR/eval/models/`).
    #[arg(long, value_name = "DIR", required_unless_present = "run_dir")]
    pub model: Option<PathBuf>,
    /// Task name or user task file (without RUN_DIR).
    #[arg(long, required_unless_present = "run_dir", conflicts_with = "run_dir")]
    pub task: Option<String>,
    /// Held-out instances, JSONL (without RUN_DIR).
    #[arg(long, required_unless_present = "run_dir", conflicts_with = "run_dir")]
    pub input: Option<PathBuf>,
    #[command(flatten)]
    pub task_flags: TaskFlags,
    /// Evaluation run directory (store, rollouts, eval.json); rerunning resumes (without RUN_DIR).
    #[arg(
        long,
        value_name = "EVAL_DIR",
        required_unless_present = "run_dir",
        conflicts_with = "run_dir"
    )]
    pub out: Option<PathBuf>,
    /// Evaluate only the first N instances (default: all; with RUN_DIR: `eval.limit`).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Samples per task: 1 is greedy; more need --temperature > 0 and narrow the intervals
    /// (default 1; with RUN_DIR: `eval.samples`).
    #[arg(long)]
    pub samples: Option<u32>,
    /// Sampling temperature of attempts, reflections and retries (default 0, greedy; with
    /// RUN_DIR: `eval.temperature`).
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Token limit of every generation (default 256; with RUN_DIR: `eval.max_new_tokens`).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Concurrent sequences in the engine (default 16; with RUN_DIR: `generate.batch_size`).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Seed of the sampler, with --samples > 1 (default 0; with RUN_DIR: `generate.seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// An earlier evaluation run of the same tasks: report the paired change from it (without
    /// RUN_DIR, where the baseline is round 0).
    #[arg(long, value_name = "EVAL_DIR", conflicts_with = "run_dir")]
    pub baseline: Option<PathBuf>,
    /// Where ONNX Runtime runs (default auto; with RUN_DIR: `generate.device`).
    #[arg(long, value_enum)]
    pub device: Option<DeviceArg>,
    /// ONNX Runtime intra-op threads (0: its default; with RUN_DIR: `generate.threads`).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Memory for reusable prompt prefixes, in MiB (default 1024).
    #[arg(long)]
    pub prefix_cache_mib: Option<usize>,
    /// Print JSON instead of the Markdown table.
    #[arg(long)]
    pub json: bool,
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
    /// The run's settings could not be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A round has nothing to evaluate.
    #[error("round {round}: {detail}")]
    Round {
        /// The round.
        round: u32,
        /// Why.
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
    /// A cached report could not be read.
    #[error("{path}: {detail}")]
    Cached {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The report could not be written.
    #[error(transparent)]
    Write(#[from] flywheel_model::atomic::AtomicDirError),
    /// The table across rounds could not be written.
    #[error(transparent)]
    Table(#[from] flywheel_store::TableError),
    /// The plot could not be drawn.
    #[error(transparent)]
    Plot(#[from] flywheel_eval::plot::PlotError),
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

/// The fields of a cached `eval.json` that the table across rounds needs.
#[derive(serde::Deserialize)]
struct Cached {
    model_hash: String,
    samples: u32,
    temperature: f32,
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

/// What `flywheel eval RUN_DIR` found: the table across rounds and where it was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunEvalReport {
    /// One row per (round, level), as in the Parquet file.
    pub rows: Vec<EvalRow>,
    /// `RUN_DIR/eval.parquet` (or the file of the settings variant).
    pub table: PathBuf,
    /// `RUN_DIR/eval.png` (likewise).
    pub plot: PathBuf,
    /// Rounds that could not be evaluated, with the reason.
    pub skipped: Vec<String>,
    /// The `--model` evaluated on the run's held-out set, compared with round 0.
    pub model: Option<EvalReport>,
}

impl std::fmt::Display for RunEvalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", flywheel_eval::rounds::markdown(&self.rows))?;
        writeln!(
            f,
            "\n(changes: paired with round 0 on the same held-out tasks; 95% paired-bootstrap interval, exact McNemar p) table {}, plot {}",
            self.table.display(),
            self.plot.display()
        )?;
        for s in &self.skipped {
            writeln!(f, "not evaluated: {s}")?;
        }
        if let Some(m) = &self.model {
            writeln!(f, "\nmodel {} on the run's held-out set:", m.model_hash)?;
            write!(f, "{m}")?;
        }
        Ok(())
    }
}

/// The two forms of `flywheel eval`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum EvalCommandReport {
    /// `--model … --out …`.
    Single(EvalReport),
    /// `RUN_DIR`.
    Run(RunEvalReport),
}

impl std::fmt::Display for EvalCommandReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single(r) => write!(f, "{r}"),
            Self::Run(r) => write!(f, "{r}"),
        }
    }
}

fn outcomes_of(dir: &Path) -> Result<Vec<flywheel_eval::Outcome>, EvalCommandError> {
    let err = |source| EvalCommandError::Summary {
        path: dir.to_owned(),
        source,
    };
    let store = Store::open_existing(dir).map_err(|e| err(EvalError::Store(e)))?;
    flywheel_eval::outcomes(&store).map_err(err)
}

/// Runs one evaluation (resuming `spec.out`) and writes its `eval.json`.
pub fn evaluate(spec: &EvalSpec) -> Result<EvalReport, EvalCommandError> {
    let start = std::time::Instant::now();
    let temperature = spec.temperature;
    if spec.samples == 0 {
        return Err(EvalCommandError::Setting {
            flag: "--samples",
            detail: "must be at least 1".into(),
        });
    }
    if spec.samples > 1 && (temperature.is_nan() || temperature <= 0.0) {
        return Err(EvalCommandError::Setting {
            flag: "--samples",
            detail: format!(
                "{} samples of a greedy model are one sample {} times: give --temperature > 0",
                spec.samples, spec.samples
            ),
        });
    }
    let gen = generate::run(&GenerateArgs {
        model: spec.model.clone(),
        task: spec.task.clone(),
        input: spec.input.clone(),
        task_flags: spec.task_flags.clone(),
        limit: spec.limit,
        out: spec.out.clone(),
        attempts: spec.samples,
        reflections: 1,
        batch_size: spec.batch_size,
        temperature,
        reflection_temperature: None,
        top_p: 1.0,
        top_k: 0,
        max_new_tokens: spec.max_new_tokens,
        seed: spec.seed,
        shard: None,
        device: spec.device,
        threads: spec.threads,
        prefix_cache_mib: spec.prefix_cache_mib,
        quiet: spec.quiet,
    })?;
    let outcomes = outcomes_of(&spec.out)?;
    let change =
        match &spec.baseline {
            Some(b) => Some(flywheel_eval::compare(&outcomes_of(b)?, &outcomes).map_err(
                |source| EvalCommandError::Summary {
                    path: b.clone(),
                    source,
                },
            )?),
            None => None,
        };
    let report = EvalReport {
        out: spec.out.clone(),
        model_hash: gen.model_hash,
        samples: spec.samples,
        temperature,
        levels: flywheel_eval::summarize(&outcomes),
        change,
        seconds: start.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
    flywheel_model::atomic::write_file(&spec.out.join("eval.json"), &json)?;
    Ok(report)
}

/// The prompt settings of a run.
pub fn task_flags_of(c: &RunConfig) -> TaskFlags {
    TaskFlags {
        prompts: (!c.task.prompts.is_empty()).then(|| PathBuf::from(&c.task.prompts)),
        feedback: c.task.feedback,
        retry_without_attempt: c.task.retry_without_attempt,
    }
}

/// The held-out evaluation of round `r`'s model with the run's own settings, into
/// `rounds/r/eval` (round 0's evaluation is the baseline of every later one).
pub fn round_spec(
    c: &RunConfig,
    run: &Path,
    r: u32,
    quiet: bool,
) -> Result<EvalSpec, EvalCommandError> {
    Ok(EvalSpec {
        model: model_dir(run, r).join("onnx"),
        task: c.task.name.clone(),
        input: c.task.eval_input.clone(),
        task_flags: task_flags_of(c),
        out: round_dir(run, r).join(EVAL_DIR),
        limit: (c.eval.limit > 0).then_some(c.eval.limit),
        samples: c.eval.samples,
        temperature: c.eval.temperature as f32,
        max_new_tokens: c.eval.max_new_tokens as usize,
        batch_size: c.generate.batch_size as usize,
        seed: c.generate.seed,
        baseline: (r > 0).then(|| round_dir(run, 0).join(EVAL_DIR)),
        device: super::setting(&c.generate.device).ok_or_else(|| EvalCommandError::Setting {
            flag: "generate.device",
            detail: format!("{:?} is not auto, cpu or cuda", c.generate.device),
        })?,
        threads: c.generate.threads as usize,
        prefix_cache_mib: c.generate.prefix_cache_mib as usize,
        quiet,
    })
}

/// The directory name of a run's evaluations under the run's own settings (`rounds/NNNN/eval`,
/// `RUN_DIR/eval.parquet`, `RUN_DIR/eval.png`).
pub const EVAL_DIR: &str = "eval";

/// Collects the finished evaluations named `name` of every round (`rounds/NNNN/<name>/`) into
/// `RUN_DIR/<name>.parquet` and `RUN_DIR/<name>.png`; returns the rows (none, and nothing
/// written, until round 0 is evaluated: every change is paired with it).
pub fn tabulate(run: &Path, name: &str) -> Result<Vec<EvalRow>, EvalCommandError> {
    let baseline_dir = round_dir(run, 0).join(name);
    if !baseline_dir.join("eval.json").is_file() {
        return Ok(Vec::new());
    }
    let baseline = outcomes_of(&baseline_dir)?;
    let mut rows = Vec::new();
    for r in crate::run::rounds(run) {
        let dir = round_dir(run, r).join(name);
        let json = dir.join("eval.json");
        let Ok(bytes) = std::fs::read(&json) else {
            continue;
        };
        let cached: Cached =
            serde_json::from_slice(&bytes).map_err(|e| EvalCommandError::Cached {
                path: json.clone(),
                detail: e.to_string(),
            })?;
        let outcomes = outcomes_of(&dir)?;
        rows.extend(flywheel_eval::rounds::rows(
            &flywheel_eval::rounds::RoundEval {
                round: r,
                model_hash: &cached.model_hash,
                samples_per_task: cached.samples,
                temperature: f64::from(cached.temperature),
                outcomes: &outcomes,
            },
            &baseline,
        ));
    }
    flywheel_store::write_eval(&run.join(format!("{name}.parquet")), &rows)?;
    flywheel_eval::plot::draw(&run.join(format!("{name}.png")), &rows)?;
    Ok(rows)
}

/// The settings of `flywheel eval RUN_DIR`: the run's, each flag given overriding one. Settings
/// that change results other than the run's own get their own name (`eval-k4-t0.7`, …), so
/// their evaluations never mix with the rounds' cached ones.
fn run_spec(
    args: &EvalArgs,
    c: &RunConfig,
    run: &Path,
) -> Result<(EvalSpec, String), EvalCommandError> {
    let own = round_spec(c, run, 0, args.quiet)?;
    let spec = EvalSpec {
        limit: args.limit.or(own.limit),
        samples: args.samples.unwrap_or(own.samples),
        temperature: args.temperature.unwrap_or(own.temperature),
        max_new_tokens: args.max_new_tokens.unwrap_or(own.max_new_tokens),
        batch_size: args.batch_size.unwrap_or(own.batch_size),
        seed: args.seed.unwrap_or(own.seed),
        device: args.device.unwrap_or(own.device),
        threads: args.threads.unwrap_or(own.threads),
        prefix_cache_mib: args.prefix_cache_mib.unwrap_or(own.prefix_cache_mib),
        ..own.clone()
    };
    let mut name = String::from(EVAL_DIR);
    if (spec.samples, spec.temperature) != (own.samples, own.temperature) {
        name.push_str(&format!("-k{}-t{}", spec.samples, spec.temperature));
    }
    if spec.limit != own.limit {
        name.push_str(&format!("-n{}", spec.limit.unwrap_or(0)));
    }
    if spec.max_new_tokens != own.max_new_tokens {
        name.push_str(&format!("-m{}", spec.max_new_tokens));
    }
    if spec.seed != own.seed && spec.samples > 1 {
        name.push_str(&format!("-s{}", spec.seed));
    }
    Ok((spec, name))
}

/// An exported folder: `DIR` itself when it holds a model, else `DIR/onnx`.
fn onnx_of(dir: &Path) -> PathBuf {
    if dir.join("onnx").is_dir() && !dir.join("model.onnx").is_file() {
        dir.join("onnx")
    } else {
        dir.to_owned()
    }
}

fn run_dir_mode(args: &EvalArgs, run: &Path) -> Result<RunEvalReport, EvalCommandError> {
    let c = RunConfig::load(&run.join(CONFIG_FILE))?;
    let (template, name) = run_spec(args, &c, run)?;
    let of_round = |r: u32| EvalSpec {
        model: model_dir(run, r).join("onnx"),
        out: round_dir(run, r).join(&name),
        baseline: None,
        ..template.clone()
    };
    let has_model = |r: u32| model_dir(run, r).join("model.safetensors").is_file();
    let wanted: Vec<u32> = match args.round {
        Some(r) => {
            if !has_model(r) {
                return Err(EvalCommandError::Round {
                    round: r,
                    detail: format!(
                        "no model of its own in {} (not run yet, unfinished, or ended without training)",
                        model_dir(run, r).display()
                    ),
                });
            }
            let mut w = vec![0, r];
            w.dedup();
            w
        }
        None => crate::run::rounds(run)
            .into_iter()
            .filter(|&r| has_model(r))
            .collect(),
    };
    let mut skipped = Vec::new();
    for r in wanted {
        let spec = of_round(r);
        if spec.out.join("eval.json").is_file() {
            continue;
        }
        if !spec.model.join("model.onnx").is_file() {
            let why = format!(
                "round {r}: its ONNX export was removed (round.keep_rounds); re-export it with `flywheel export --model {}`",
                model_dir(run, r).display()
            );
            if r == 0 || args.round == Some(r) {
                return Err(EvalCommandError::Round {
                    round: r,
                    detail: why,
                });
            }
            skipped.push(why);
            continue;
        }
        if !args.quiet {
            eprintln!("eval: round {r} ({})", spec.out.display());
        }
        evaluate(&spec)?;
    }
    let rows = tabulate(run, &name)?;
    let model = match &args.model {
        Some(dir) => {
            let onnx = onnx_of(dir);
            let hash = flywheel_store::model_hash(&onnx).map_err(GenerateError::from)?;
            let spec = EvalSpec {
                model: onnx,
                out: run
                    .join(&name)
                    .join("models")
                    .join(hash.chars().take(16).collect::<String>()),
                baseline: Some(round_dir(run, 0).join(&name)),
                ..template.clone()
            };
            Some(evaluate(&spec)?)
        }
        None => None,
    };
    Ok(RunEvalReport {
        rows,
        table: run.join(format!("{name}.parquet")),
        plot: run.join(format!("{name}.png")),
        skipped,
        model,
    })
}

pub fn run(args: &EvalArgs) -> Result<EvalCommandReport, EvalCommandError> {
    if let Some(run) = &args.run_dir {
        return run_dir_mode(args, run).map(EvalCommandReport::Run);
    }
    let missing = |flag: &'static str| EvalCommandError::Setting {
        flag,
        detail: "required without RUN_DIR".into(),
    };
    let spec = EvalSpec {
        model: onnx_of(args.model.as_deref().ok_or_else(|| missing("--model"))?),
        task: args.task.clone().ok_or_else(|| missing("--task"))?,
        input: args.input.clone().ok_or_else(|| missing("--input"))?,
        task_flags: args.task_flags.clone(),
        out: args.out.clone().ok_or_else(|| missing("--out"))?,
        limit: args.limit,
        samples: args.samples.unwrap_or(1),
        temperature: args.temperature.unwrap_or(0.0),
        max_new_tokens: args.max_new_tokens.unwrap_or(256),
        batch_size: args.batch_size.unwrap_or(16),
        seed: args.seed.unwrap_or(0),
        baseline: args.baseline.clone(),
        device: args.device.unwrap_or_default(),
        threads: args.threads.unwrap_or(0),
        prefix_cache_mib: args.prefix_cache_mib.unwrap_or(1024),
        quiet: args.quiet,
    };
    evaluate(&spec).map(EvalCommandReport::Single)
}
