//! The figures of one round, read with polars from its Parquet files: `rollouts.parquet` (stage
//! one), `train.parquet` (stage two) and `metrics.parquet` (stage three). Plain paths in, plain
//! numbers out; a missing file gives `None` figures (a round that stopped before that stage).

use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::Serialize;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct StatsError {
    /// The file.
    pub path: PathBuf,
    /// The cause.
    pub source: PolarsError,
}

/// Stage one's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GenerateFigures {
    /// Distinct tasks.
    pub tasks: u64,
    /// Pass rate of the attempts.
    pub first_try: Option<f64>,
    /// Pass rate of the retries.
    pub retry_pass: Option<f64>,
    /// Fraction of (task, attempt) groups whose retries had both outcomes.
    pub mixed_fraction: Option<f64>,
    /// Median reflection length, in tokens.
    pub reflection_p50: Option<f64>,
    /// Generated tokens per second of wall time (first admission to last finish).
    pub tokens_per_second: Option<f64>,
}

/// Stage two's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LabelFigures {
    /// Training examples.
    pub examples: u64,
    /// Their mean reward.
    pub reward_mean: Option<f64>,
}

/// Stage three's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TrainFigures {
    /// Optimizer steps.
    pub steps: u64,
    /// Mean step loss.
    pub loss: Option<f64>,
    /// Mean KL estimate.
    pub kl: Option<f64>,
    /// Mean gradient norm (before clipping).
    pub grad_norm: Option<f64>,
    /// Padded tokens per second over all steps.
    pub tokens_per_second: Option<f64>,
}

/// `figures` of the file at `path` scanned lazily; `None` when there is no such file.
fn figures_of<T>(
    path: &Path,
    figures: impl FnOnce(LazyFrame) -> PolarsResult<T>,
) -> Result<Option<T>, StatsError> {
    if !path.is_file() {
        return Ok(None);
    }
    let run = || {
        let p = PlRefPath::try_from_path(path)?;
        figures(LazyFrame::scan_parquet(p, ScanArgsParquet::default())?)
    };
    run().map(Some).map_err(|source| StatsError {
        path: path.to_owned(),
        source,
    })
}

fn f64_of(df: &DataFrame, name: &str) -> PolarsResult<Option<f64>> {
    Ok(df
        .column(name)?
        .cast(&DataType::Float64)?
        .f64()?
        .get(0)
        .filter(|v| v.is_finite()))
}

fn u64_of(df: &DataFrame, name: &str) -> PolarsResult<u64> {
    Ok(df
        .column(name)?
        .cast(&DataType::UInt64)?
        .u64()?
        .get(0)
        .unwrap_or(0))
}

/// Figures of a round's `rollouts.parquet` files (one, or one per generate shard, read as one
/// table); `None` when there is none.
pub fn generate_figures(paths: &[PathBuf]) -> Result<Option<GenerateFigures>, StatsError> {
    let present: Vec<&PathBuf> = paths.iter().filter(|p| p.is_file()).collect();
    let Some(first) = present.first() else {
        return Ok(None);
    };
    let run = || {
        let refs = present
            .iter()
            .map(|p| PlRefPath::try_from_path(p))
            .collect::<PolarsResult<Vec<_>>>()?;
        let args = ScanArgsParquet {
            glob: false,
            ..Default::default()
        };
        generate(LazyFrame::scan_parquet_files(
            refs.into_iter().collect(),
            args,
        )?)
    };
    run().map(Some).map_err(|source| StatsError {
        path: (*first).clone(),
        source,
    })
}

fn generate(lf: LazyFrame) -> PolarsResult<GenerateFigures> {
    let kind = |k: &str| col("kind").eq(lit(k.to_owned()));
    let rate = |k: &str, name: &str| {
        col("pass")
            .filter(kind(k))
            .cast(DataType::Float64)
            .mean()
            .alias(name.to_owned())
    };
    let df = lf
        .clone()
        .select([
            col("task_index").n_unique().alias("tasks"),
            rate("attempt", "first"),
            rate("retry", "retry"),
            col("new_tokens")
                .filter(kind("reflection"))
                .cast(DataType::Float64)
                .median()
                .alias("p50"),
            col("new_tokens")
                .cast(DataType::Float64)
                .sum()
                .alias("tokens"),
            col("started_unix_ms")
                .cast(DataType::Float64)
                .min()
                .alias("t0"),
            (col("started_unix_ms").cast(DataType::Float64) + col("seconds") * lit(1000.0))
                .max()
                .alias("t1"),
        ])
        .collect()?;
    let groups = lf
        .filter(kind("retry"))
        .group_by([col("task_index"), col("attempt")])
        .agg([
            col("pass").cast(DataType::UInt32).sum().alias("passed"),
            len().cast(DataType::UInt32).alias("n"),
        ])
        .select([
            len().alias("groups"),
            col("passed")
                .gt(lit(0u32))
                .and(col("passed").lt(col("n")))
                .cast(DataType::UInt32)
                .sum()
                .alias("mixed"),
        ])
        .collect()?;
    let wall = match (f64_of(&df, "t0")?, f64_of(&df, "t1")?) {
        (Some(a), Some(b)) if b > a => Some((b - a) / 1000.0),
        _ => None,
    };
    let (g, m) = (u64_of(&groups, "groups")?, u64_of(&groups, "mixed")?);
    Ok(GenerateFigures {
        tasks: u64_of(&df, "tasks")?,
        first_try: f64_of(&df, "first")?,
        retry_pass: f64_of(&df, "retry")?,
        mixed_fraction: (g > 0).then(|| m as f64 / g as f64),
        reflection_p50: f64_of(&df, "p50")?,
        tokens_per_second: match (f64_of(&df, "tokens")?, wall) {
            (Some(t), Some(w)) => Some(t / w),
            _ => None,
        },
    })
}

/// Figures of a `train.parquet`.
pub fn label_figures(path: &Path) -> Result<Option<LabelFigures>, StatsError> {
    figures_of(path, |lf| {
        let df = lf
            .select([
                len().alias("n"),
                col("reward").cast(DataType::Float64).mean().alias("reward"),
            ])
            .collect()?;
        Ok(LabelFigures {
            examples: u64_of(&df, "n")?,
            reward_mean: f64_of(&df, "reward")?,
        })
    })
}

/// Figures of a `metrics.parquet`.
pub fn train_figures(path: &Path) -> Result<Option<TrainFigures>, StatsError> {
    figures_of(path, |lf| {
        let df = lf
            .select([
                len().alias("n"),
                col("loss").mean().alias("loss"),
                col("kl").mean().alias("kl"),
                col("grad_norm").mean().alias("grad_norm"),
                (col("tokens").cast(DataType::Float64).sum() / col("seconds").sum()).alias("tps"),
            ])
            .collect()?;
        Ok(TrainFigures {
            steps: u64_of(&df, "n")?,
            loss: f64_of(&df, "loss")?,
            kl: f64_of(&df, "kl")?,
            grad_norm: f64_of(&df, "grad_norm")?,
            tokens_per_second: f64_of(&df, "tps")?,
        })
    })
}
