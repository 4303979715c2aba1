//! `flywheel init`: a new run directory for the whole loop: its documented `flywheel.toml`
//! (defaults, then `--config FILE`, then the flags and `--set section.key=value`) and round 0's
//! model in `rounds/0000/model/` (imported, exported to its `onnx/`, parity-checked), promoted
//! as `current`. Built in a hidden sibling and renamed into place: a failed init leaves nothing.

use std::path::{Path, PathBuf};

use flywheel_datasets::task::{load_task_with, read_instances};

use super::export::{self, ExportArgs, ExportCommandError};
use crate::run::config::{ConfigError, RunConfig, CONFIG_FILE};
use crate::run::{model_dir, CURRENT_FILE};

#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// The run directory to create (it must not exist).
    pub run_dir: PathBuf,
    /// Task name (countdown, function_call) or a user task file.
    #[arg(long)]
    pub task: Option<String>,
    /// Training instances (JSONL).
    #[arg(long, value_name = "FILE")]
    pub train_input: Option<PathBuf>,
    /// Held-out instances (JSONL).
    #[arg(long, value_name = "FILE")]
    pub eval_input: Option<PathBuf>,
    /// Start from this Hugging Face model directory (default: the embedded SmolLM2 GGUF).
    #[arg(long, value_name = "DIR", conflicts_with = "gguf")]
    pub model: Option<PathBuf>,
    /// Start from this GGUF file.
    #[arg(long, value_name = "FILE")]
    pub gguf: Option<PathBuf>,
    /// Start from this settings file instead of the defaults (the flags override it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Set one setting (repeatable), e.g. `--set train.lr=1e-5 --set round.tasks=32`.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub sets: Vec<String>,
    /// ONNX Runtime threads of the parity check (0: its default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// Why a run directory could not be made.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// Settings are missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The task, its name or its options are wrong.
    #[error("task {name}: {detail}")]
    Task {
        /// The task.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// An input file is missing, malformed or empty.
    #[error("{path}: {detail}")]
    Input {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A setting has a value no stage takes.
    #[error("{key} = {value:?}: expected one of {allowed}")]
    Value {
        /// `section.key`.
        key: &'static str,
        /// The value.
        value: String,
        /// The values taken.
        allowed: &'static str,
    },
    /// The starting model could not be imported.
    #[error(transparent)]
    Import(#[from] flywheel_llama::import::ImportError),
    /// Its export or parity check failed.
    #[error(transparent)]
    Export(#[from] ExportCommandError),
    /// Round 0's export could not be hashed (the store's error names the file).
    #[error(transparent)]
    Hash(#[from] flywheel_store::StoreError),
    /// The run directory could not be written (or exists).
    #[error(transparent)]
    Output(#[from] flywheel_model::atomic::AtomicDirError),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// What `init` made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InitReport {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Its settings.
    pub config: RunConfig,
    /// Training and held-out instances.
    pub train_tasks: u64,
    /// Held-out instances.
    pub eval_tasks: u64,
    /// SHA-256 of round 0's weights.
    pub model_hash: String,
    /// Round 0's export parity (max |Δlogit|); `None` when the directory already existed.
    pub parity_max_abs_diff: Option<f64>,
    /// The directory existed with these very settings: nothing was done.
    pub already: bool,
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// The settings the flags describe.
pub fn settings(args: &InitArgs) -> Result<RunConfig, InitError> {
    let missing = |flag: &str| ConfigError::Invalid {
        path: PathBuf::from("flywheel init"),
        detail: format!("{flag} is required without --config"),
    };
    let mut config = match &args.config {
        Some(path) => RunConfig::load(path)?,
        None => RunConfig::defaults(
            args.task.as_deref().ok_or_else(|| missing("--task"))?,
            &args
                .train_input
                .clone()
                .ok_or_else(|| missing("--train-input"))?,
            &args
                .eval_input
                .clone()
                .ok_or_else(|| missing("--eval-input"))?,
        ),
    };
    if let Some(t) = &args.task {
        config.task.name = t.clone();
    }
    if let Some(p) = &args.train_input {
        config.task.train_input = p.clone();
    }
    if let Some(p) = &args.eval_input {
        config.task.eval_input = p.clone();
    }
    let mut config = config.with_sets(&args.sets)?;
    // A run is resumed from anywhere: its inputs are named absolutely.
    config.task.train_input = absolute(&config.task.train_input);
    config.task.eval_input = absolute(&config.task.eval_input);
    if !config.task.prompts.is_empty() {
        config.task.prompts = absolute(Path::new(&config.task.prompts))
            .display()
            .to_string();
    }
    check_values(&config)?;
    Ok(config)
}

fn check_values(c: &RunConfig) -> Result<(), InitError> {
    let one_of = |key: &'static str, value: &str, allowed: &'static str| {
        if allowed.split(", ").any(|a| a == value) {
            Ok(())
        } else {
            Err(InitError::Value {
                key,
                value: value.to_owned(),
                allowed,
            })
        }
    };
    one_of("label.scale", &c.label.scale, "group, batch, none")?;
    one_of("label.span", &c.label.span, "reflection, attempt")?;
    one_of("train.loss", &c.train.loss, "grpo, bnpo, dr_grpo, dapo")?;
    one_of("train.dtype", &c.train.dtype, "f32, bf16")?;
    one_of("train.device", &c.train.device, "auto, cpu, cuda")?;
    one_of("generate.device", &c.generate.device, "auto, cpu, cuda")?;
    one_of(
        "train.is_correction",
        &c.train.is_correction,
        "none, token-truncate, token-mask, sequence-truncate, sequence-mask",
    )?;
    if c.round.tasks == 0 {
        return Err(InitError::Value {
            key: "round.tasks",
            value: "0".into(),
            allowed: "a count of at least 1",
        });
    }
    // One attempt per task is a group of one: no spread, so the control would never train.
    if c.label.span == "attempt" && c.generate.attempts < 2 {
        return Err(InitError::Value {
            key: "generate.attempts",
            value: c.generate.attempts.to_string(),
            allowed: "2 or more with label.span = attempt (the group is the task's attempts)",
        });
    }
    Ok(())
}

/// Counts the instances of `path`, refusing a malformed line or an empty file.
fn count(task: &dyn flywheel_datasets::task::Task, path: &Path) -> Result<u64, InitError> {
    let mut n = 0;
    for item in read_instances(task, path) {
        item.map_err(|e| InitError::Input {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        n += 1;
    }
    if n == 0 {
        return Err(InitError::Input {
            path: path.to_owned(),
            detail: "no instances".into(),
        });
    }
    Ok(n)
}

pub fn run(args: &InitArgs) -> Result<InitReport, InitError> {
    let config = settings(args)?;
    let options = super::eval::task_flags_of(&config).options();
    let task = load_task_with(&config.task.name, &options).map_err(|e| InitError::Task {
        name: config.task.name.clone(),
        detail: e.to_string(),
    })?;
    let train_tasks = count(task.as_ref(), &config.task.train_input)?;
    let eval_tasks = count(task.as_ref(), &config.task.eval_input)?;
    let run_dir = absolute(&args.run_dir);
    // The same init again is a no-op (so a set-up command can be rerun); other settings are not.
    let existing = run_dir.join(CONFIG_FILE);
    if existing.is_file() {
        let found = RunConfig::load(&existing)?;
        if found != config {
            return Err(InitError::Config(ConfigError::Invalid {
                path: existing,
                detail: "the run directory exists with other settings (round settings are edited there, or use a new RUN_DIR)".into(),
            }));
        }
        let onnx = model_dir(&run_dir, 0).join("onnx");
        let model_hash = flywheel_store::model_hash(&onnx)?;
        return Ok(InitReport {
            run_dir,
            config,
            train_tasks,
            eval_tasks,
            model_hash,
            parity_max_abs_diff: None,
            already: true,
        });
    }
    let (model_hash, parity) =
        flywheel_model::atomic::write_dir(&run_dir, false, |tmp| -> Result<_, InitError> {
            let path = tmp.join(CONFIG_FILE);
            std::fs::write(&path, config.to_toml()).map_err(|source| InitError::Io {
                path: path.clone(),
                source,
            })?;
            let model = model_dir(tmp, 0);
            super::import::run(&super::import::ImportArgs {
                gguf: args.gguf.clone(),
                hf: args.model.clone(),
                out: model.clone(),
                force: false,
            })?;
            let report = export::run(&ExportArgs {
                model: model.clone(),
                out: None,
                dtype: export::DtypeChoice::F32,
                fused: config.export.fused,
                force: false,
                check: true,
                threads: args.threads,
            })?;
            let path = tmp.join(CURRENT_FILE);
            std::fs::write(&path, "0000\n").map_err(|source| InitError::Io {
                path: path.clone(),
                source,
            })?;
            let hash = flywheel_store::model_hash(&model.join("onnx"))?;
            Ok((hash, report.parity.map(|p| p.max_abs_diff())))
        })?;
    Ok(InitReport {
        run_dir,
        config,
        train_tasks,
        eval_tasks,
        model_hash,
        parity_max_abs_diff: parity,
        already: false,
    })
}
