//! `metrics.parquet`: one row per optimizer step of `flywheel train`, declared here beside the
//! other tables so `train` writes it, `stats` reads it, and the README documents it from one list.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, UInt32Array, UInt64Array};

use crate::table::{col, Column, ColumnType, TableError};

/// File name of the step metrics inside a training output directory.
pub const METRICS_FILE: &str = "metrics.parquet";

/// The columns of `metrics.parquet`, in file order.
pub const METRICS_COLUMNS: &[Column] = &[
    col("step", ColumnType::UInt64, false, "1-based optimizer step"),
    col("epoch", ColumnType::UInt32, false, "0-based pass over the data the step's batch belongs to"),
    col("iteration", ColumnType::UInt32, false, "1-based use of the batch (1..=`--iterations`); π_old is fixed at iteration 1"),
    col("examples", ColumnType::UInt32, false, "examples in the step's batch"),
    col("loss", ColumnType::Float64, false, "the step's loss (sum over its micro-batches, each with step-wide denominators)"),
    col("grad_norm", ColumnType::Float64, false, "global L2 gradient norm before clipping"),
    col("lr", ColumnType::Float64, false, "learning rate of the step (warmup, then cosine)"),
    col("tokens", ColumnType::UInt64, false, "padded tokens the model ran on (all micro-batches)"),
    col("span_tokens", ColumnType::UInt64, false, "reflection tokens carrying the loss"),
    col("reward_mean", ColumnType::Float64, false, "mean reward of the batch's examples"),
    col("reward_std", ColumnType::Float64, false, "standard deviation (n − 1) of those rewards; 0 for one example"),
    col("advantage_abs_mean", ColumnType::Float64, false, "mean |advantage| of the batch"),
    col("clip_ratio_low", ColumnType::Float64, false, "fraction of span tokens whose ratio was clipped below (negative advantage)"),
    col("clip_ratio_high", ColumnType::Float64, false, "fraction of span tokens whose ratio was clipped above (positive advantage)"),
    col("kl", ColumnType::Float64, false, "mean k3 estimate of KL(π_θ ‖ π_ref) per span token; 0 with `--beta 0`"),
    col("entropy", ColumnType::Float64, false, "mean entropy (nats) of π_old at the span positions, at the sampling temperature"),
    col("logprob_diff_mean", ColumnType::Float64, false, "mean |log π_old − log π_sampler| over span tokens (trainer/sampler mismatch)"),
    col("logprob_diff_max", ColumnType::Float64, false, "max of that difference"),
    col("is_weight_mean", ColumnType::Float64, false, "mean importance weight π_old/π_sampler applied per span token after the cap; 1 with `--is-correction none`"),
    col("seconds", ColumnType::Float64, false, "wall time of the step (log-probs of π_old included on its first iteration)"),
    col("tokens_per_second", ColumnType::Float64, false, "`tokens` / `seconds`"),
];

/// One row of `metrics.parquet`, as [`METRICS_COLUMNS`] declares it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct StepMetrics {
    /// 1-based optimizer step.
    pub step: u64,
    /// 0-based epoch.
    pub epoch: u32,
    /// 1-based iteration over the batch.
    pub iteration: u32,
    /// Examples in the batch.
    pub examples: u32,
    /// Step loss.
    pub loss: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate.
    pub lr: f64,
    /// Padded tokens.
    pub tokens: u64,
    /// Loss tokens.
    pub span_tokens: u64,
    /// Mean reward.
    pub reward_mean: f64,
    /// Reward standard deviation (n − 1).
    pub reward_std: f64,
    /// Mean |advantage|.
    pub advantage_abs_mean: f64,
    /// Clipped-low fraction.
    pub clip_ratio_low: f64,
    /// Clipped-high fraction.
    pub clip_ratio_high: f64,
    /// Mean k3 KL.
    pub kl: f64,
    /// Mean entropy of π_old.
    pub entropy: f64,
    /// Mean |log π_old − log π_sampler|.
    pub logprob_diff_mean: f64,
    /// Max |log π_old − log π_sampler|.
    pub logprob_diff_max: f64,
    /// Mean importance weight.
    pub is_weight_mean: f64,
    /// Wall time.
    pub seconds: f64,
    /// Throughput.
    pub tokens_per_second: f64,
}

/// The float columns, in declaration order, with their fields.
fn floats(m: &StepMetrics) -> [(&'static str, f64); 15] {
    [
        ("loss", m.loss),
        ("grad_norm", m.grad_norm),
        ("lr", m.lr),
        ("reward_mean", m.reward_mean),
        ("reward_std", m.reward_std),
        ("advantage_abs_mean", m.advantage_abs_mean),
        ("clip_ratio_low", m.clip_ratio_low),
        ("clip_ratio_high", m.clip_ratio_high),
        ("kl", m.kl),
        ("entropy", m.entropy),
        ("logprob_diff_mean", m.logprob_diff_mean),
        ("logprob_diff_max", m.logprob_diff_max),
        ("is_weight_mean", m.is_weight_mean),
        ("seconds", m.seconds),
        ("tokens_per_second", m.tokens_per_second),
    ]
}

fn set_float(m: &mut StepMetrics, name: &str, v: f64) {
    let f = match name {
        "loss" => &mut m.loss,
        "grad_norm" => &mut m.grad_norm,
        "lr" => &mut m.lr,
        "reward_mean" => &mut m.reward_mean,
        "reward_std" => &mut m.reward_std,
        "advantage_abs_mean" => &mut m.advantage_abs_mean,
        "clip_ratio_low" => &mut m.clip_ratio_low,
        "clip_ratio_high" => &mut m.clip_ratio_high,
        "kl" => &mut m.kl,
        "entropy" => &mut m.entropy,
        "logprob_diff_mean" => &mut m.logprob_diff_mean,
        "logprob_diff_max" => &mut m.logprob_diff_max,
        "is_weight_mean" => &mut m.is_weight_mean,
        "seconds" => &mut m.seconds,
        "tokens_per_second" => &mut m.tokens_per_second,
        _ => return,
    };
    *f = v;
}

/// Writes `rows` to `path` atomically (a temporary sibling renamed into place).
pub fn write_metrics(path: &Path, rows: &[StepMetrics]) -> Result<(), TableError> {
    let u64s = |f: fn(&StepMetrics) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(f)))
    };
    let u32s = |f: fn(&StepMetrics) -> u32| -> ArrayRef {
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(f)))
    };
    let float = |i: usize| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| floats(r)[i].1),
        ))
    };
    let names = floats(&StepMetrics::default()).map(|(n, _)| n);
    let mut named: Vec<(&str, ArrayRef)> = vec![
        ("step", u64s(|r| r.step)),
        ("epoch", u32s(|r| r.epoch)),
        ("iteration", u32s(|r| r.iteration)),
        ("examples", u32s(|r| r.examples)),
    ];
    for (i, name) in names.iter().enumerate() {
        named.push((name, float(i)));
        if *name == "lr" {
            named.push(("tokens", u64s(|r| r.tokens)));
            named.push(("span_tokens", u64s(|r| r.span_tokens)));
        }
    }
    crate::table::write_table(path, METRICS_COLUMNS, named)
}

/// Reads a whole `metrics.parquet` (schema checked against [`METRICS_COLUMNS`] first).
pub fn read_metrics(path: &Path) -> Result<Vec<StepMetrics>, TableError> {
    let bad = |e: String| TableError::Column {
        path: path.to_owned(),
        index: 0,
        expected: "a readable metrics.parquet".into(),
        found: e,
    };
    let reader = crate::table::read_table(path, METRICS_COLUMNS)?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|source| TableError::Arrow {
            path: path.to_owned(),
            source,
        })?;
        let get = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| bad(format!("no `{name}`")))
        };
        let u64s = |name: &str| -> Result<UInt64Array, TableError> {
            get(name)?
                .as_any()
                .downcast_ref::<UInt64Array>()
                .cloned()
                .ok_or_else(|| bad(format!("`{name}` is not UInt64")))
        };
        let u32s = |name: &str| -> Result<UInt32Array, TableError> {
            get(name)?
                .as_any()
                .downcast_ref::<UInt32Array>()
                .cloned()
                .ok_or_else(|| bad(format!("`{name}` is not UInt32")))
        };
        let (step, tokens, span) = (u64s("step")?, u64s("tokens")?, u64s("span_tokens")?);
        let (epoch, iteration, examples) = (u32s("epoch")?, u32s("iteration")?, u32s("examples")?);
        let names = floats(&StepMetrics::default()).map(|(n, _)| n);
        let mut cols = Vec::with_capacity(names.len());
        for name in names {
            let a = get(name)?
                .as_any()
                .downcast_ref::<Float64Array>()
                .cloned()
                .ok_or_else(|| bad(format!("`{name}` is not Float64")))?;
            cols.push((name, a));
        }
        for i in 0..batch.num_rows() {
            let mut m = StepMetrics {
                step: step.value(i),
                epoch: epoch.value(i),
                iteration: iteration.value(i),
                examples: examples.value(i),
                tokens: tokens.value(i),
                span_tokens: span.value(i),
                ..Default::default()
            };
            for (name, a) in &cols {
                if a.is_null(i) {
                    return Err(bad(format!("null `{name}`")));
                }
                set_float(&mut m, name, a.value(i));
            }
            rows.push(m);
        }
    }
    Ok(rows)
}
