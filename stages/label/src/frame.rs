//! The labelling engine, on polars: rollouts in (a `LazyFrame` with the `rollouts.parquet`
//! columns), training examples and their counts out. One example per reflection, joined with the
//! retry that followed it (or, with [`Span::Attempt`], one per attempt, rewarded by its own
//! verdict); filters applied in a fixed order, each counted; group statistics and advantages
//! computed over the rows that are kept, so no advantage is computed over a row that will not be
//! trained.

use polars::prelude::*;

use flywheel_store::{Scale, Span};

/// TRL's epsilon in `(r - mean) / (std + eps)`.
pub const STD_EPS: f64 = 1e-4;

/// The label settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelConfig {
    /// Which generations carry the loss.
    pub span: Span,
    /// Advantage scaling.
    pub scale: Scale,
    /// Keep groups whose rewards are all equal (advantage 0) instead of dropping them.
    pub keep_zero_std: bool,
    /// Drop reflections cut at the token limit (`finish_reason == "length"`).
    pub drop_truncated: bool,
    /// Drop spans shorter than this many tokens.
    pub min_tokens: u32,
    /// Drop spans longer than this many tokens.
    pub max_tokens: Option<u32>,
}

impl Default for LabelConfig {
    fn default() -> Self {
        Self {
            span: Span::Reflection,
            scale: Scale::Group,
            keep_zero_std: false,
            drop_truncated: false,
            min_tokens: 1,
            max_tokens: None,
        }
    }
}

/// What the engine counted, in filter order. With [`Span::Attempt`] the spans are the attempts:
/// `reflections` counts them, `retries` and `retries_passed` count their verdicts, and a group
/// is a task.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Counts {
    /// Rollout rows read.
    pub rows: u64,
    /// Reflections read (spans read).
    pub reflections: u64,
    /// Retries read (rewarded generations read).
    pub retries: u64,
    /// Retries that passed.
    pub retries_passed: u64,
    /// Groups (failed attempts with at least one reflection; tasks with at least one attempt).
    pub groups_seen: u64,
    /// Groups whose rewards had both outcomes (before any filter).
    pub groups_mixed: u64,
    /// Reflections without a retry (an incomplete run), dropped.
    pub dropped_missing_retry: u64,
    /// Reflections cut at the token limit, dropped with `drop_truncated`.
    pub dropped_truncated: u64,
    /// Spans shorter than `min_tokens`, dropped.
    pub dropped_too_short: u64,
    /// Spans longer than `max_tokens`, dropped.
    pub dropped_too_long: u64,
    /// Groups left after the row filters.
    pub groups_scored: u64,
    /// Of those, groups with zero reward variance (all equal, or a single row).
    pub zero_std_groups: u64,
    /// Rows of zero-variance groups, dropped unless `keep_zero_std`.
    pub dropped_zero_std: u64,
    /// Examples kept.
    pub kept: u64,
    /// Groups kept.
    pub groups_kept: u64,
}

/// The examples (columns of `train.parquet`, sorted by task, attempt, reflection) and counts.
pub struct Labelled {
    /// One row per kept reflection.
    pub examples: DataFrame,
    /// What was read, dropped and kept.
    pub counts: Counts,
}

const KEY: [&str; 3] = ["task_index", "attempt", "reflection"];

/// The columns that name a GRPO group.
fn group(span: Span) -> Vec<Expr> {
    match span {
        Span::Reflection => vec![col("task_index"), col("attempt")],
        Span::Attempt => vec![col("task_index")],
    }
}

fn n_groups(df: &DataFrame, span: Span) -> PolarsResult<u64> {
    if df.height() == 0 {
        return Ok(0);
    }
    let g = df
        .clone()
        .lazy()
        .select(group(span))
        .unique(None, UniqueKeepStrategy::Any)
        .collect()?;
    Ok(g.height() as u64)
}

fn filter_counted(df: DataFrame, keep: Expr) -> PolarsResult<(DataFrame, u64)> {
    let before = df.height() as u64;
    let out = df.lazy().filter(keep).collect()?;
    let dropped = before - out.height() as u64;
    Ok((out, dropped))
}

/// Labels `rollouts` with `config`.
pub fn label(rollouts: LazyFrame, config: &LabelConfig) -> PolarsResult<Labelled> {
    let mut counts = Counts::default();
    let rollouts = rollouts.collect()?;
    counts.rows = rollouts.height() as u64;
    let span = config.span;
    // One row per span with its reward (`retry_pass`, null when the retry is missing) and the
    // verifier's reason, keyed by KEY.
    let joined = match span {
        Span::Reflection => reflection_spans(rollouts, &mut counts)?,
        Span::Attempt => attempt_spans(rollouts, &mut counts)?,
    };
    // A reflection whose log-probs do not pair with its tokens cannot be trained on: a corrupt
    // or hand-edited file, refused naming the first such row.
    let bad = joined
        .clone()
        .lazy()
        .filter(
            col("logprobs")
                .list()
                .len()
                .neq(col("token_ids").list().len()),
        )
        .select([col("task_index"), col("attempt"), col("reflection")])
        .limit(1)
        .collect()?;
    if bad.height() > 0 {
        let key = |c: &str| -> PolarsResult<String> { Ok(bad.column(c)?.get(0)?.to_string()) };
        polars_bail!(ComputeError: "{} (task {}, attempt {}, reflection {}) has a log-prob \
            list whose length differs from its token ids", span.as_str(), key("task_index")?,
            key("attempt")?, key("reflection")?);
    }
    counts.reflections = joined.height() as u64;
    counts.groups_seen = n_groups(&joined, span)?;
    counts.groups_mixed = joined
        .clone()
        .lazy()
        .filter(col("retry_pass").is_not_null())
        .group_by(group(span))
        .agg([
            col("retry_pass")
                .cast(DataType::UInt32)
                .sum()
                .alias("passed"),
            len().alias("n"),
        ])
        .filter(
            col("passed")
                .gt(lit(0u32))
                .and(col("passed").lt(col("n").cast(DataType::UInt32))),
        )
        .collect()?
        .height() as u64;

    // Row filters, in order; a row is counted by the first filter that drops it.
    let (df, n) = filter_counted(joined, col("retry_pass").is_not_null())?;
    counts.dropped_missing_retry = n;
    let (df, n) = if config.drop_truncated {
        filter_counted(df, col("finish_reason").neq(lit("length")))?
    } else {
        (df, 0)
    };
    counts.dropped_truncated = n;
    let (df, n) = filter_counted(df, col("span_len").gt_eq(lit(config.min_tokens)))?;
    counts.dropped_too_short = n;
    let (df, n) = match config.max_tokens {
        Some(max) => filter_counted(df, col("span_len").lt_eq(lit(max)))?,
        None => (df, 0),
    };
    counts.dropped_too_long = n;

    // Group statistics over the rows left. A group of one has no spread: zero variance.
    let r = || col("retry_pass").cast(DataType::Float64);
    let scored = df
        .lazy()
        .with_columns([
            len().over(group(span))?.alias("group_n"),
            r().mean().over(group(span))?.alias("group_mean"),
            r().std(1)
                .over(group(span))?
                .fill_null(lit(0.0))
                .alias("group_std"),
        ])
        .with_columns([col("group_n")
            .lt(lit(2))
            .or(col("group_std").eq(lit(0.0)))
            .alias("zero_std")])
        .collect()?;
    counts.groups_scored = n_groups(&scored, span)?;
    counts.zero_std_groups = n_groups(
        &scored.clone().lazy().filter(col("zero_std")).collect()?,
        span,
    )?;
    let (kept, n) = if config.keep_zero_std {
        (scored, 0)
    } else {
        filter_counted(scored, col("zero_std").not())?
    };
    counts.dropped_zero_std = n;

    let centered = r() - col("group_mean");
    let advantage = match config.scale {
        Scale::Group => centered / (col("group_std") + lit(STD_EPS)),
        // The batch is the file: every kept reward. One row has no spread.
        Scale::Batch => centered / (r().std(1).fill_null(lit(0.0)) + lit(STD_EPS)),
        Scale::None => centered,
    };
    let span_start = col("prompt_ids").list().len().cast(DataType::UInt32);
    let examples = kept
        .lazy()
        .with_columns([advantage.alias("advantage")])
        .select([
            col("task_index"),
            col("task_id"),
            col("level"),
            col("attempt"),
            col("reflection"),
            concat_list([col("prompt_ids"), col("token_ids")])?.alias("input_ids"),
            span_start.clone().alias("span_start"),
            (span_start + col("span_len")).alias("span_end"),
            col("logprobs").alias("sampler_logprobs"),
            r().cast(DataType::Float32).alias("reward"),
            col("advantage").cast(DataType::Float32),
            col("retry_reason"),
            col("finish_reason"),
            col("model_hash"),
        ])
        .sort(KEY, SortMultipleOptions::default())
        .collect()?;
    counts.kept = examples.height() as u64;
    counts.groups_kept = n_groups(&examples, span)?;
    Ok(Labelled { examples, counts })
}

/// The reflections, each joined with the retry that followed it.
fn reflection_spans(rollouts: DataFrame, counts: &mut Counts) -> PolarsResult<DataFrame> {
    let kind = |k: &str| col("kind").eq(lit(k.to_owned()));
    let reflections = rollouts.clone().lazy().filter(kind("reflection")).select([
        col("task_index"),
        col("task_id"),
        col("level"),
        col("attempt"),
        col("reflection"),
        col("prompt_ids"),
        col("token_ids"),
        col("logprobs"),
        col("finish_reason"),
        col("model_hash"),
    ]);
    let retries = rollouts
        .lazy()
        .filter(kind("retry"))
        .select([
            col("task_index"),
            col("attempt"),
            col("reflection"),
            col("pass").alias("retry_pass"),
            col("reason").alias("retry_reason"),
        ])
        .collect()?;
    counts.retries = retries.height() as u64;
    counts.retries_passed = passed(&retries)?;
    let keys: Vec<Expr> = KEY.iter().map(|k| col(*k)).collect();
    reflections
        .join(
            retries.lazy(),
            keys.clone(),
            keys,
            JoinArgs::new(JoinType::Left),
        )
        .with_columns([span_len()])
        .collect()
}

/// The attempts, each rewarded by its own verdict (reflection number 0).
fn attempt_spans(rollouts: DataFrame, counts: &mut Counts) -> PolarsResult<DataFrame> {
    let attempts = rollouts
        .lazy()
        .filter(col("kind").eq(lit("attempt")))
        .select([
            col("task_index"),
            col("task_id"),
            col("level"),
            col("attempt"),
            // A bare literal is typed loosely by polars; the column must be UInt32 as declared.
            lit(0u32).cast(DataType::UInt32).alias("reflection"),
            col("prompt_ids"),
            col("token_ids"),
            col("logprobs"),
            col("finish_reason"),
            col("model_hash"),
            col("pass").alias("retry_pass"),
            col("reason").alias("retry_reason"),
        ])
        .with_columns([span_len()])
        .collect()?;
    counts.retries = attempts.height() as u64;
    counts.retries_passed = passed(&attempts)?;
    Ok(attempts)
}

fn span_len() -> Expr {
    col("token_ids")
        .list()
        .len()
        .cast(DataType::UInt32)
        .alias("span_len")
}

fn passed(df: &DataFrame) -> PolarsResult<u64> {
    Ok(df
        .clone()
        .lazy()
        .filter(col("retry_pass").eq(lit(true)))
        .collect()?
        .height() as u64)
}
