//! `train.parquet`: the training examples `flywheel label` writes and `flywheel train` reads, one
//! row per kept reflection. Declared here, once, beside `rollouts.parquet`, so both stages share
//! the column list, its types and its documentation.

use serde::{Deserialize, Serialize};

use crate::table::{col, Column, ColumnType};

/// File name of the training examples inside a run directory.
pub const TRAIN_FILE: &str = "train.parquet";

/// Footer key of the labelling settings ([`LabelMeta`], JSON).
pub const LABEL_META_KEY: &str = "flywheel.label";

/// The columns of `train.parquet`, in file order.
pub const TRAIN_COLUMNS: &[Column] = &[
    col("task_index", ColumnType::UInt64, false, "0-based index of the instance in the whole input"),
    col("task_id", ColumnType::Utf8, false, "the instance's id"),
    col("level", ColumnType::Utf8, true, "difficulty level; null when the task has none"),
    col("attempt", ColumnType::UInt32, false, "the failed attempt the reflection follows, with `task_index` the GRPO group (span `attempt`: the attempt itself, the group is `task_index`)"),
    col("reflection", ColumnType::UInt32, false, "0-based reflection number within the group (span `attempt`: 0)"),
    col("input_ids", ColumnType::ListUInt32, false, "the span's `prompt_ids` followed by its `token_ids`, exactly as generated (never re-tokenized), EOS included when one ended it"),
    col("span_start", ColumnType::UInt32, false, "first position of the span in `input_ids` (= length of its prompt)"),
    col("span_end", ColumnType::UInt32, false, "end (exclusive) of the span (= length of `input_ids`); only `input_ids[span_start..span_end]` carries a loss"),
    col("sampler_logprobs", ColumnType::ListFloat32, false, "the sampler's log-prob of each span token (temperature-scaled, before top-k/top-p); length `span_end - span_start`"),
    col("reward", ColumnType::Float32, false, "1.0 if the retry that followed the reflection passed (span `attempt`: the attempt passed), else 0.0"),
    col("advantage", ColumnType::Float32, false, "group-relative advantage: (reward - group mean) / (std + 1e-4), std per `scale` (see the file's label settings); 0 in a kept zero-variance group"),
    col("retry_reason", ColumnType::Utf8, false, "the verifier's reason for the retry (span `attempt`: for the attempt)"),
    col("finish_reason", ColumnType::Utf8, false, "why the span stopped: `eos`, `stop` or `length` (cut at the token limit)"),
    col("model_hash", ColumnType::Utf8, false, "SHA-256 of the model files that generated the reflection"),
];

/// Which generation of the rollouts carries the loss, and what its group is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Span {
    /// The reflections after a failed attempt, rewarded by their retry; group = the failed
    /// attempt. The paper's method.
    #[default]
    Reflection,
    /// The attempts themselves, rewarded by their own verdict; group = the task. Plain GRPO on
    /// first tries: the control that tells the effect of rewarding reflections apart from the
    /// effect of any RL on the task.
    Attempt,
}

impl Span {
    /// The lowercase name: `reflection` or `attempt`.
    pub fn as_str(self) -> &'static str {
        match self {
            Span::Reflection => "reflection",
            Span::Attempt => "attempt",
        }
    }

    /// The generations whose verdict is the reward, plural: `retries` or `attempts`.
    pub fn rewarded(self) -> &'static str {
        match self {
            Span::Reflection => "retries",
            Span::Attempt => "attempts",
        }
    }
}

/// How advantages are scaled (TRL's `scale_rewards`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// Divide by the group's standard deviation (unbiased, n − 1) + 1e-4.
    #[default]
    Group,
    /// Divide by the standard deviation of every kept reward of the file + 1e-4.
    Batch,
    /// No division: reward minus the group mean.
    None,
}

impl Scale {
    /// The lowercase name: `group`, `batch` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scale::Group => "group",
            Scale::Batch => "batch",
            Scale::None => "none",
        }
    }
}

/// What the trainer needs to interpret the rows, stored in the footer under [`LABEL_META_KEY`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LabelMeta {
    /// SHA-256 of the weights of the model that generated every row.
    pub model_hash: String,
    /// SHA-256 of that model's tokenizer and chat-template files.
    pub model_files_hash: String,
    /// Task name.
    pub task: String,
    /// Which generations are the examples (files written before the setting existed hold
    /// reflections).
    #[serde(default)]
    pub span: Span,
    /// Sampling temperature of the spans (log-probs are taken at it).
    pub temperature: f32,
    /// Nucleus threshold the sampler used.
    pub top_p: f32,
    /// Top-k cut-off the sampler used (0: none).
    pub top_k: u32,
    /// Token limit of every generation (a reflection of this length was cut).
    pub max_new_tokens: u32,
    /// Reflections sampled per failed attempt (the group size before filtering).
    pub reflections: u32,
    /// Advantage scaling.
    pub scale: Scale,
    /// Whether zero-variance groups were kept (with advantage 0).
    pub keep_zero_std: bool,
    /// Whether reflections cut at the token limit were dropped.
    pub drop_truncated: bool,
    /// Shortest span kept, in tokens.
    pub min_tokens: u32,
    /// Longest span kept, in tokens (`None`: no bound).
    pub max_tokens: Option<u32>,
    /// The shards labelled (`shard_index` of each input, in order) out of `shard_count`.
    pub shards: Vec<u32>,
    /// Number of shards of the round.
    pub shard_count: u32,
}

/// One row of `train.parquet`, as [`TRAIN_COLUMNS`] declares it.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainExample {
    /// The instance's index in the input.
    pub task_index: u64,
    /// The instance's id.
    pub task_id: String,
    /// Difficulty level, where the task has one.
    pub level: Option<String>,
    /// The failed attempt (with `task_index`, the group).
    pub attempt: u32,
    /// The reflection's number in its group.
    pub reflection: u32,
    /// The reflection's prompt followed by its tokens.
    pub input_ids: Vec<u32>,
    /// First span position.
    pub span_start: u32,
    /// End (exclusive) of the span.
    pub span_end: u32,
    /// The sampler's log-probs of the span tokens.
    pub sampler_logprobs: Vec<f32>,
    /// 1.0 if the retry passed, else 0.0.
    pub reward: f32,
    /// The group advantage.
    pub advantage: f32,
    /// The retry's verifier reason.
    pub retry_reason: String,
    /// Why the reflection stopped.
    pub finish_reason: String,
    /// SHA-256 of the generating model.
    pub model_hash: String,
}

/// Why a `train.parquet` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TrainReadError {
    /// The file could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a complete `train.parquet` (truncated, foreign columns, no label settings).
    #[error("{path} is not a complete train.parquet: {detail}")]
    Format {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// Reads a whole `train.parquet`: its label settings and its rows, in file order. The schema is
/// checked against [`TRAIN_COLUMNS`] first.
pub fn read_train(
    path: &std::path::Path,
) -> Result<(LabelMeta, Vec<TrainExample>), TrainReadError> {
    use arrow::array::{Array, Float32Array, ListArray, StringArray, UInt32Array, UInt64Array};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let bad = |detail: String| TrainReadError::Format {
        path: path.to_owned(),
        detail,
    };
    let file = std::fs::File::open(path).map_err(|source| TrainReadError::Open {
        path: path.to_owned(),
        source,
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(e.to_string()))?;
    crate::table::check_schema(path, TRAIN_COLUMNS, builder.schema())
        .map_err(|e| bad(e.to_string()))?;
    let json = crate::table::footer_value(builder.metadata(), LABEL_META_KEY)
        .ok_or_else(|| bad(format!("no `{LABEL_META_KEY}` in the file's metadata")))?;
    let meta: LabelMeta =
        serde_json::from_str(&json).map_err(|e| bad(format!("`{LABEL_META_KEY}`: {e}")))?;
    let reader = builder.build().map_err(|e| bad(e.to_string()))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad(e.to_string()))?;
        // The schema was checked, so every column is there with its declared type.
        fn col<'b, T: 'static>(
            batch: &'b arrow::record_batch::RecordBatch,
            name: &str,
        ) -> Option<&'b T> {
            batch.column_by_name(name)?.as_any().downcast_ref::<T>()
        }
        let missing = |name: &str| bad(format!("column `{name}` unreadable"));
        let s = |name: &str| col::<StringArray>(&batch, name).ok_or_else(|| missing(name));
        let u32s = |name: &str| col::<UInt32Array>(&batch, name).ok_or_else(|| missing(name));
        let f32s = |name: &str| col::<Float32Array>(&batch, name).ok_or_else(|| missing(name));
        let list = |name: &str| col::<ListArray>(&batch, name).ok_or_else(|| missing(name));
        let task_index =
            col::<UInt64Array>(&batch, "task_index").ok_or_else(|| missing("task_index"))?;
        let (task_id, level, reason, finish, hash) = (
            s("task_id")?,
            s("level")?,
            s("retry_reason")?,
            s("finish_reason")?,
            s("model_hash")?,
        );
        let (attempt, reflection, start, end) = (
            u32s("attempt")?,
            u32s("reflection")?,
            u32s("span_start")?,
            u32s("span_end")?,
        );
        let (reward, advantage) = (f32s("reward")?, f32s("advantage")?);
        let (ids, lps) = (list("input_ids")?, list("sampler_logprobs")?);
        for i in 0..batch.num_rows() {
            let ids = ids.value(i);
            let lps = lps.value(i);
            let ids = ids
                .as_any()
                .downcast_ref::<UInt32Array>()
                .ok_or_else(|| missing("input_ids"))?;
            let lps = lps
                .as_any()
                .downcast_ref::<Float32Array>()
                .ok_or_else(|| missing("sampler_logprobs"))?;
            rows.push(TrainExample {
                task_index: task_index.value(i),
                task_id: task_id.value(i).to_owned(),
                level: (!level.is_null(i)).then(|| level.value(i).to_owned()),
                attempt: attempt.value(i),
                reflection: reflection.value(i),
                input_ids: ids.values().to_vec(),
                span_start: start.value(i),
                span_end: end.value(i),
                sampler_logprobs: lps.values().to_vec(),
                reward: reward.value(i),
                advantage: advantage.value(i),
                retry_reason: reason.value(i).to_owned(),
                finish_reason: finish.value(i).to_owned(),
                model_hash: hash.value(i).to_owned(),
            });
        }
    }
    Ok((meta, rows))
}

/// Writes `rows` as a `train.parquet` with `meta` in its footer, atomically. `flywheel label`
/// writes its frames through the same [`crate::table::TableWriter`] check; this writer serves
/// programs that build examples themselves (and tests that need hostile files).
pub fn write_train(
    path: &std::path::Path,
    meta: &LabelMeta,
    rows: &[TrainExample],
) -> Result<(), crate::TableError> {
    use arrow::array::{
        ArrayRef, Float32Array, Float32Builder, ListBuilder, StringArray, UInt32Array,
        UInt32Builder, UInt64Array,
    };
    use arrow::datatypes::{DataType, Field};
    use std::sync::Arc;

    let json = serde_json::to_string(meta).unwrap_or_default();
    let io = |source| crate::TableError::Io {
        path: path.to_owned(),
        op: "rename into place",
        source,
    };
    flywheel_model::atomic::replace_file(
        path,
        |tmp| {
            let mut w = crate::TableWriter::create(
                tmp,
                TRAIN_COLUMNS,
                &[(LABEL_META_KEY, json.clone())],
                4096,
            )?;
            let u32s = |f: fn(&TrainExample) -> u32| -> ArrayRef {
                Arc::new(UInt32Array::from_iter_values(rows.iter().map(f)))
            };
            let f32s = |f: fn(&TrainExample) -> f32| -> ArrayRef {
                Arc::new(Float32Array::from_iter_values(rows.iter().map(f)))
            };
            let strs = |f: fn(&TrainExample) -> Option<&str>| -> ArrayRef {
                Arc::new(rows.iter().map(f).collect::<StringArray>())
            };
            let mut ids = ListBuilder::new(UInt32Builder::new()).with_field(Field::new(
                "item",
                DataType::UInt32,
                false,
            ));
            let mut lps = ListBuilder::new(Float32Builder::new()).with_field(Field::new(
                "item",
                DataType::Float32,
                false,
            ));
            for r in rows {
                ids.values().append_slice(&r.input_ids);
                ids.append(true);
                lps.values().append_slice(&r.sampler_logprobs);
                lps.append(true);
            }
            w.write(vec![
                (
                    "task_index",
                    Arc::new(UInt64Array::from_iter_values(
                        rows.iter().map(|r| r.task_index),
                    )),
                ),
                ("task_id", strs(|r| Some(&r.task_id))),
                ("level", strs(|r| r.level.as_deref())),
                ("attempt", u32s(|r| r.attempt)),
                ("reflection", u32s(|r| r.reflection)),
                ("input_ids", Arc::new(ids.finish())),
                ("span_start", u32s(|r| r.span_start)),
                ("span_end", u32s(|r| r.span_end)),
                ("sampler_logprobs", Arc::new(lps.finish())),
                ("reward", f32s(|r| r.reward)),
                ("advantage", f32s(|r| r.advantage)),
                ("retry_reason", strs(|r| Some(&r.retry_reason))),
                ("finish_reason", strs(|r| Some(&r.finish_reason))),
                ("model_hash", strs(|r| Some(&r.model_hash))),
            ])?;
            w.finish().map(|_| ())
        },
        io,
    )
}
