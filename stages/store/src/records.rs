//! Record types stored by a run: one task, its attempts, their reflections and the retries.
//!
//! These types are defined once for the whole project; every stage reads and writes them
//! through [`crate::Store`]. Token ids and log-probs are kept exactly as sampled (never
//! re-tokenized), so a record can be replayed or trained on without touching a tokenizer.

use serde::{Deserialize, Serialize};

pub use flywheel_core::{FinishReason, Kind};

/// One generated sequence, exactly as sampled.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Generation {
    /// The whole context fed to the model (chat-rendered, tokenized once).
    pub prompt_ids: Vec<u32>,
    /// Generated ids as sampled (including the EOS id when one ended it).
    pub token_ids: Vec<u32>,
    /// Log-prob of each sampled token under the sampling distribution; same length as `token_ids`.
    pub logprobs: Vec<f32>,
    /// Decoded generated text.
    pub text: String,
    /// Why generation stopped.
    pub finish_reason: FinishReason,
    /// The seed of this sequence's sampler.
    pub seed: u64,
    /// When the request was admitted, in milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// Wall time from admission to finish, in seconds.
    pub seconds: f64,
}

/// One task instance of the input.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TaskRecord {
    /// The instance's 0-based line index in the whole input (not within the shard).
    pub task_index: u64,
    /// The instance's id.
    pub id: String,
    /// Difficulty level, where the task has one.
    pub level: Option<String>,
    /// The instance's fields as a JSON object.
    pub fields_json: String,
}

/// A first attempt at a task, with its verdict.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AttemptRecord {
    /// The task's global index.
    pub task_index: u64,
    /// 0-based attempt number within the task.
    pub attempt: u32,
    /// The generated answer.
    pub generation: Generation,
    /// The verifier's verdict.
    pub pass: bool,
    /// The verifier's reason.
    pub reason: String,
}

/// A self-reflection on a failed attempt.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ReflectionRecord {
    /// The task's global index.
    pub task_index: u64,
    /// The attempt reflected on.
    pub attempt: u32,
    /// 0-based reflection number within the attempt.
    pub reflection: u32,
    /// The generated reflection.
    pub generation: Generation,
}

/// A retry of a task conditioned on one reflection, with its verdict.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RetryRecord {
    /// The task's global index.
    pub task_index: u64,
    /// The failed attempt.
    pub attempt: u32,
    /// The reflection this retry follows.
    pub reflection: u32,
    /// The generated answer.
    pub generation: Generation,
    /// The verifier's verdict.
    pub pass: bool,
    /// The verifier's reason.
    pub reason: String,
}

/// Settings a run was created with; a resumed run must match them (else a clear error naming
/// the differing field). Everything here is content, never a path, so a run resumes from any
/// working directory and under any spelling of its paths.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RunMeta {
    /// SHA-256 of the model's weights (see [`crate::model_hash`]).
    pub model_hash: String,
    /// SHA-256 of the model folder's other files that shape the records: tokenizer, chat
    /// template, generation settings (see [`crate::model_files_hash`]).
    pub model_files_hash: String,
    /// Task name (the registry name, or a user task's `name`).
    pub task: String,
    /// SHA-256 of the task's identity: prompt templates in use, options, a user task's config
    /// and verifier (see `Task::identity`).
    pub task_hash: String,
    /// First attempts per task instance (K).
    pub attempts: u32,
    /// Reflections per failed attempt (G).
    pub reflections: u32,
    /// Sampling temperature.
    pub temperature: f32,
    /// Sampling temperature of the reflections, where it differs from `temperature` (absent
    /// from the settings of a run without one, so older runs resume unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reflection_temperature: Option<f32>,
    /// Nucleus sampling threshold.
    pub top_p: f32,
    /// Top-k sampling cut-off (0: none).
    pub top_k: u32,
    /// Maximum generated tokens per sequence.
    pub max_new_tokens: u32,
    /// The run's base seed.
    pub seed: u64,
    /// This shard's 0-based index.
    pub shard_index: u32,
    /// Number of shards.
    pub shard_count: u32,
    /// Maximum number of input instances read, if limited.
    pub limit: Option<u64>,
}
