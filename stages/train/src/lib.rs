//! Stage three of flywheel: masked GRPO training on the reflection tokens of `train.parquet`, in
//! tch. The exact core (span log-probs with the LM head at span positions only, the loss with
//! step-wide denominators, AdamW with savable moments) is tested against PyTorch; the trainer
//! around it checks its inputs before any step, checkpoints atomically and resumes bit for bit.

pub mod checkpoint;
pub mod config;
pub mod correction;
pub mod logprobs;
pub mod loss;
pub mod optim;
pub mod step;
pub mod trainer;

use std::path::PathBuf;

pub use config::{DeviceChoice, Dtype, Length, TrainConfig, TrainSettings};
pub use correction::IsCorrection;
pub use logprobs::{span_logprobs, PackError, Sequence, SpanBatch};
pub use loss::{grpo_loss, Aggregation, LossConfig, LossInputs, LossOutput, StepTotals};
pub use trainer::{train, Event, TrainReport, MODEL_DIR};

/// Why a training run stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting is out of range.
    #[error("{flag}: {detail}")]
    Setting {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// `--device cuda` on a machine without a usable GPU.
    #[error("--device cuda: CUDA is not available to libtorch on this machine")]
    NoCuda,
    /// A data file could not be read.
    #[error(transparent)]
    Read(#[from] flywheel_store::TrainReadError),
    /// The data files hold no example.
    #[error("no training examples in {}", paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NoExamples {
        /// The files.
        paths: Vec<PathBuf>,
    },
    /// An example cannot be trained on.
    #[error("{path}: row {row}: {detail}")]
    Example {
        /// The file.
        path: PathBuf,
        /// 0-based row in the file.
        row: usize,
        /// What is wrong.
        detail: String,
    },
    /// Two data files come from different generations.
    #[error("{other} and {first} differ in their label settings' `{field}`: train on one generation at a time")]
    MixedData {
        /// The first file.
        first: PathBuf,
        /// The file that differs.
        other: PathBuf,
        /// The field.
        field: &'static str,
    },
    /// The model is not the one the data was generated with.
    #[error("{model}: its {what} is {found}, but the data was generated with {data}; pass the model directory whose onnx/ export generated the data")]
    ModelMismatch {
        /// The model directory.
        model: PathBuf,
        /// What differs.
        what: &'static str,
        /// The data's hash.
        data: String,
        /// The model's hash.
        found: String,
    },
    /// A checkpoint of another run is in the output directory.
    #[error("{out}: the checkpoint was made with `{field}` = {checkpoint}, this run has {now}")]
    Changed {
        /// The output directory.
        out: PathBuf,
        /// The first field that differs.
        field: String,
        /// Its value in the checkpoint.
        checkpoint: String,
        /// Its value now.
        now: String,
    },
    /// A model directory without a checkpoint: not this trainer's output.
    #[error("{path} exists but there is no checkpoint beside it")]
    Foreign {
        /// The model directory.
        path: PathBuf,
    },
    /// A checkpoint is damaged.
    #[error("checkpoint {path}: {detail}")]
    Checkpoint {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The loss or the gradient became NaN or infinite.
    #[error("step {step}: loss {loss}, gradient norm {grad_norm}: training diverged (lower --lr)")]
    NonFinite {
        /// The 1-based step.
        step: u64,
        /// The loss.
        loss: f64,
        /// The norm.
        grad_norm: f64,
    },
    /// The model could not be loaded.
    #[error(transparent)]
    Load(#[from] flywheel_llama::llama::LoadError),
    /// Weights could not be read or written.
    #[error(transparent)]
    Weights(#[from] flywheel_llama::weights::WeightsError),
    /// Hashing the inputs failed.
    #[error(transparent)]
    Store(#[from] flywheel_store::StoreError),
    /// A Parquet table could not be written.
    #[error(transparent)]
    Table(#[from] flywheel_store::TableError),
    /// An atomic output could not be written.
    #[error(transparent)]
    Atomic(#[from] flywheel_model::atomic::AtomicDirError),
    /// A step failed.
    #[error(transparent)]
    Step(#[from] step::StepError),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}
