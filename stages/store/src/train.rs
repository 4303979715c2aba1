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
    col("attempt", ColumnType::UInt32, false, "the failed attempt the reflection follows; with `task_index`, the GRPO group"),
    col("reflection", ColumnType::UInt32, false, "0-based reflection number within the group"),
    col("input_ids", ColumnType::ListUInt32, false, "the reflection's `prompt_ids` followed by its `token_ids`, exactly as generated (never re-tokenized), EOS included when one ended it"),
    col("span_start", ColumnType::UInt32, false, "first position of the reflection span in `input_ids` (= length of the reflection's prompt)"),
    col("span_end", ColumnType::UInt32, false, "end (exclusive) of the span (= length of `input_ids`); only `input_ids[span_start..span_end]` carries a loss"),
    col("sampler_logprobs", ColumnType::ListFloat32, false, "the sampler's log-prob of each span token (temperature-scaled, before top-k/top-p); length `span_end - span_start`"),
    col("reward", ColumnType::Float32, false, "1.0 if the retry that followed the reflection passed, else 0.0"),
    col("advantage", ColumnType::Float32, false, "group-relative advantage: (reward - group mean) / (std + 1e-4), std per `scale` (see the file's label settings); 0 in a kept zero-variance group"),
    col("retry_reason", ColumnType::Utf8, false, "the verifier's reason for the retry"),
    col("finish_reason", ColumnType::Utf8, false, "why the reflection stopped: `eos`, `stop` or `length` (cut at the token limit)"),
    col("model_hash", ColumnType::Utf8, false, "SHA-256 of the model files that generated the reflection"),
];

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
    /// Sampling temperature of the reflections (log-probs are taken at it).
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
