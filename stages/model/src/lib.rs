//! The model room of flywheel, without libtorch: the model directory format (config, tokenizer,
//! chat template, paths of the project environment), the GGUF reader and atomic file and
//! directory writes. The engine, the store, the label stage and the tasks build on this alone;
//! the tch Llama lives in `flywheel-llama`.
//!
//! Everything here takes plain inputs and returns plain outputs; it knows nothing of the CLI, the
//! store or the tasks.

pub mod atomic;
pub mod chat;
pub mod config;
pub mod gguf;
pub mod paths;
pub mod tokenizer;

pub use config::ModelConfig;
