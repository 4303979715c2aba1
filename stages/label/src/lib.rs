//! Stage two of flywheel: turns the rollouts of a generate run (one or more shards of a round)
//! into training examples, one per reflection, labelled by whether the retry that followed it
//! passed, with GRPO group advantages. Only the reflection span will carry a loss. The control
//! ([`Span::Attempt`]) makes one example per attempt instead, grouped by task: plain GRPO.
//!
//! [`label_runs`] is what `flywheel label` calls: it checks the inputs, runs the polars engine
//! ([`frame::label`]) and writes `train.parquet` atomically (a rerun replaces it only when the
//! new file is complete). It links neither libtorch nor ONNX Runtime.

pub mod frame;
pub mod inputs;
mod write;

use std::path::{Path, PathBuf};
use std::time::Instant;

use flywheel_store::{LabelMeta, Span, TableError};
use polars::prelude::{LazyFrame, PlRefPath, PolarsError, ScanArgsParquet};

pub use frame::{Counts, LabelConfig, Labelled, STD_EPS};
pub use inputs::Input;

/// Why labelling failed. Nothing is written when it does.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    /// No input was given.
    #[error("no input: give at least one run directory or rollouts.parquet")]
    NoInput,
    /// An input could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An input is not a complete `rollouts.parquet` (truncated, foreign, or without settings).
    #[error("{path} is not a complete rollouts.parquet: {detail}")]
    NotRollouts {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Two inputs come from runs with different settings.
    #[error(
        "{other} and {first} are not shards of one round: {field} is {other_value} there and \
         {first_value} here"
    )]
    ShardMismatch {
        /// The first input.
        first: PathBuf,
        /// The input that differs.
        other: PathBuf,
        /// The differing run setting.
        field: String,
        /// Its value in the first input (JSON).
        first_value: String,
        /// Its value in the other (JSON).
        other_value: String,
    },
    /// The same shard was given twice.
    #[error("shard {shard} is given twice: {first} and {second}")]
    DuplicateShard {
        /// The shard index.
        shard: u32,
        /// One file.
        first: PathBuf,
        /// The other.
        second: PathBuf,
    },
    /// polars failed.
    #[error("cannot {what}: {source}")]
    Polars {
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: PolarsError,
    },
    /// Writing `train.parquet` failed.
    #[error(transparent)]
    Table(#[from] TableError),
    /// The finished file could not be renamed into place.
    #[error("cannot rename the finished examples to {path}: {source}")]
    Rename {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A bug, not bad input.
    #[error("internal error: {0}")]
    Internal(String),
}

/// p10 / p50 / p90 (linear interpolation, as numpy's default) and the mean.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Quantiles {
    /// 10th percentile.
    pub p10: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// Mean.
    pub mean: f64,
}

impl Quantiles {
    /// Of `values` (all zeros when empty).
    pub fn of(values: &mut [f64]) -> Quantiles {
        if values.is_empty() {
            return Quantiles::default();
        }
        values.sort_by(f64::total_cmp);
        let q = |p: f64| {
            let pos = p * (values.len() - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
        };
        Quantiles {
            p10: q(0.1),
            p50: q(0.5),
            p90: q(0.9),
            mean: values.iter().sum::<f64>() / values.len() as f64,
        }
    }
}

/// What a label run read, dropped and wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LabelReport {
    /// The file written.
    pub out: PathBuf,
    /// The inputs, in order.
    pub inputs: Vec<PathBuf>,
    /// The settings written to the file's footer.
    pub meta: LabelMeta,
    /// The engine's counts.
    pub counts: Counts,
    /// Fraction of scored groups with zero reward variance (TRL's `frac_reward_zero_std`).
    pub frac_reward_zero_std: f64,
    /// Mean reward of the kept examples.
    pub reward_mean: f64,
    /// Fraction of all retries that passed.
    pub retry_pass_rate: f64,
    /// Span lengths (tokens) of the kept examples.
    pub span_tokens: Quantiles,
    /// Why the file has no rows, when it has none.
    pub empty_reason: Option<String>,
    /// Wall time.
    pub seconds: f64,
}

impl std::fmt::Display for LabelReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.counts;
        let span = self.meta.span;
        writeln!(
            f,
            "label: {} {}s in {} groups ({} with mixed outcomes); {} passed {:.1}%",
            c.reflections,
            span.as_str(),
            c.groups_seen,
            c.groups_mixed,
            span.rewarded(),
            100.0 * self.retry_pass_rate
        )?;
        writeln!(
            f,
            "label: dropped {} without retry, {} truncated, {} too short, {} too long, {} in \
             zero-variance groups ({:.1}% of {} groups)",
            c.dropped_missing_retry,
            c.dropped_truncated,
            c.dropped_too_short,
            c.dropped_too_long,
            c.dropped_zero_std,
            100.0 * self.frac_reward_zero_std,
            c.groups_scored
        )?;
        write!(
            f,
            "label: kept {} examples in {} groups, mean reward {:.3}, span tokens p10/p50/p90 \
             {:.0}/{:.0}/{:.0} -> {}",
            c.kept,
            c.groups_kept,
            self.reward_mean,
            self.span_tokens.p10,
            self.span_tokens.p50,
            self.span_tokens.p90,
            self.out.display()
        )?;
        if let Some(why) = &self.empty_reason {
            write!(f, "\nlabel: no examples: {why}")?;
        }
        Ok(())
    }
}

fn polars_err(what: &'static str) -> impl FnOnce(PolarsError) -> LabelError {
    move |source| LabelError::Polars { what, source }
}

/// Labels the rollouts of `runs` (run directories or `rollouts.parquet` files, shards of one
/// round) into `out`.
pub fn label_runs(
    runs: &[PathBuf],
    out: &Path,
    config: &LabelConfig,
) -> Result<LabelReport, LabelError> {
    let start = Instant::now();
    let inputs: Vec<Input> = runs
        .iter()
        .map(|r| inputs::open(&inputs::rollouts_path(r)))
        .collect::<Result<_, _>>()?;
    inputs::check_shards(&inputs)?;
    let paths: Vec<PlRefPath> = inputs
        .iter()
        .map(|i| PlRefPath::try_from_path(&i.path))
        .collect::<Result<_, _>>()
        .map_err(polars_err("name the inputs"))?;
    // Paths are taken literally (no glob), and files concatenate in the order given.
    let args = ScanArgsParquet {
        glob: false,
        ..Default::default()
    };
    let lf = LazyFrame::scan_parquet_files(paths.into_iter().collect(), args)
        .map_err(polars_err("scan the rollouts"))?;
    let Labelled { examples, counts } =
        frame::label(lf, config).map_err(polars_err("label the rollouts"))?;
    let first = &inputs[0].meta;
    let meta = LabelMeta {
        model_hash: first.model_hash.clone(),
        model_files_hash: first.model_files_hash.clone(),
        task: first.task.clone(),
        span: config.span,
        // The span's log-probs were taken at its own temperature.
        temperature: match config.span {
            Span::Reflection => first.reflection_temperature.unwrap_or(first.temperature),
            Span::Attempt => first.temperature,
        },
        top_p: first.top_p,
        top_k: first.top_k,
        max_new_tokens: first.max_new_tokens,
        reflections: first.reflections,
        scale: config.scale,
        keep_zero_std: config.keep_zero_std,
        drop_truncated: config.drop_truncated,
        min_tokens: config.min_tokens,
        max_tokens: config.max_tokens,
        shards: inputs.iter().map(|i| i.meta.shard_index).collect(),
        shard_count: first.shard_count,
    };
    let rows = flywheel_model::atomic::replace_file(
        out,
        |tmp| write::write(tmp, &examples, &meta),
        |source| LabelError::Rename {
            path: out.to_owned(),
            source,
        },
    )?;
    if rows != counts.kept {
        return Err(LabelError::Internal(format!(
            "wrote {rows} rows for {} examples",
            counts.kept
        )));
    }
    let (rewards, mut spans) = summary(&examples).map_err(polars_err("summarize"))?;
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let empty_reason = (counts.kept == 0).then(|| empty_reason(&counts, config.span));
    Ok(LabelReport {
        out: out.to_owned(),
        inputs: inputs.into_iter().map(|i| i.path).collect(),
        meta,
        frac_reward_zero_std: ratio(counts.zero_std_groups, counts.groups_scored),
        reward_mean: if rewards.is_empty() {
            0.0
        } else {
            rewards.iter().sum::<f64>() / rewards.len() as f64
        },
        retry_pass_rate: ratio(counts.retries_passed, counts.retries),
        span_tokens: Quantiles::of(&mut spans),
        counts,
        empty_reason,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Rewards and span lengths of the kept examples.
fn summary(
    examples: &polars::prelude::DataFrame,
) -> polars::prelude::PolarsResult<(Vec<f64>, Vec<f64>)> {
    let rewards = examples
        .column("reward")?
        .f32()?
        .iter()
        .flatten()
        .map(f64::from)
        .collect();
    let starts = examples.column("span_start")?.u32()?;
    let ends = examples.column("span_end")?.u32()?;
    let spans = starts
        .iter()
        .zip(ends.iter())
        .filter_map(|(s, e)| Some(f64::from(e? - s?)))
        .collect();
    Ok((rewards, spans))
}

fn empty_reason(c: &Counts, span: Span) -> String {
    if span == Span::Attempt && c.reflections == 0 {
        "the rollouts hold no attempt".into()
    } else if span == Span::Attempt && c.groups_seen == c.reflections {
        "every task has a single attempt, so no group has a spread: the attempt span needs \
         --attempts 2 or more"
            .into()
    } else if c.reflections == 0 {
        "the rollouts hold no reflection (every attempt passed, or the run had --reflections 0)"
            .into()
    } else if c.groups_scored == 0 {
        "every reflection was filtered out before scoring (see the dropped counts)".into()
    } else {
        let what = match span {
            Span::Reflection => "every retry of a group passed, or every one failed",
            Span::Attempt => "every attempt at a task passed, or every one failed",
        };
        format!(
            "all {} groups have zero reward variance ({what}); --keep-zero-std keeps them with \
             advantage 0",
            c.groups_scored
        )
    }
}
