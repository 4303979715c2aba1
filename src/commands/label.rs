//! `flywheel label`: the rollouts of one or more shards of a round → `train.parquet`, one
//! example per reflection (or per attempt, the control) with its reward and group advantage
//! (stage two).

use flywheel_label::{LabelConfig, LabelError, LabelReport};
use flywheel_store::{Scale, Span, TRAIN_FILE};
use std::path::PathBuf;

/// Which generations carry the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum SpanArg {
    /// The reflections, rewarded by their retry, grouped by failed attempt (the paper's method).
    #[default]
    Reflection,
    /// The attempts, rewarded by their own verdict, grouped by task: plain GRPO on first tries,
    /// the control (generate with `--attempts G --reflections 0`).
    Attempt,
}

/// How advantages are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum ScaleArg {
    /// (r − group mean) / (group std + 1e-4), std unbiased (n − 1), as TRL's default.
    #[default]
    Group,
    /// (r − group mean) / (std of every kept reward + 1e-4).
    Batch,
    /// r − group mean.
    None,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LabelArgs {
    /// Run directory (or its rollouts.parquet); repeat for the shards of one round, which must
    /// share every setting but the shard.
    #[arg(long = "run", required = true, value_name = "RUN_DIR")]
    pub runs: Vec<PathBuf>,
    /// Output file (default: `train.parquet` in the first run directory); replaced atomically.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Which generations are the examples.
    #[arg(long, value_enum, default_value_t = SpanArg::Reflection)]
    pub span: SpanArg,
    /// Advantage scaling.
    #[arg(long, value_enum, default_value_t = ScaleArg::Group)]
    pub scale: ScaleArg,
    /// Keep groups whose rewards are all equal (advantage 0) instead of dropping them.
    #[arg(long)]
    pub keep_zero_std: bool,
    /// Drop spans cut at the token limit (kept by default, as TRL does); the rest of the group is
    /// re-scored without them.
    #[arg(long)]
    pub drop_truncated: bool,
    /// Drop spans shorter than N tokens.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub min_tokens: u32,
    /// Drop spans longer than N tokens.
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u32>,
}

impl LabelArgs {
    /// The engine settings these flags set.
    pub fn config(&self) -> LabelConfig {
        LabelConfig {
            span: match self.span {
                SpanArg::Reflection => Span::Reflection,
                SpanArg::Attempt => Span::Attempt,
            },
            scale: match self.scale {
                ScaleArg::Group => Scale::Group,
                ScaleArg::Batch => Scale::Batch,
                ScaleArg::None => Scale::None,
            },
            keep_zero_std: self.keep_zero_std,
            drop_truncated: self.drop_truncated,
            min_tokens: self.min_tokens,
            max_tokens: self.max_tokens,
        }
    }

    /// Where the examples go.
    pub fn out_path(&self) -> PathBuf {
        match (&self.out, self.runs.first()) {
            (Some(out), _) => out.clone(),
            (None, Some(run)) if run.is_dir() => run.join(TRAIN_FILE),
            (None, Some(file)) => file.with_file_name(TRAIN_FILE),
            (None, None) => PathBuf::from(TRAIN_FILE),
        }
    }
}

pub fn run(args: &LabelArgs) -> Result<LabelReport, LabelError> {
    flywheel_label::label_runs(&args.runs, &args.out_path(), &args.config())
}
