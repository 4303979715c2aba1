//! The model room of flywheel: model directory format, GGUF / Hugging Face import, tokenizer and
//! chat template, and the libtorch (tch) implementation of the Llama family.
//!
//! Everything here takes plain inputs and returns plain outputs; it knows nothing of the CLI, the
//! store or the tasks.

pub mod atomic;
pub mod chat;
pub mod config;
pub mod generate;
pub mod gguf;
pub mod import;
pub mod llama;
pub mod paths;
pub mod tiny;
pub mod tokenizer;
pub mod weights;

pub use config::ModelConfig;
pub use llama::{KvCache, Llama};

/// Picks CUDA when libtorch sees a GPU, the CPU otherwise.
pub fn default_device() -> tch::Device {
    tch::Device::cuda_if_available()
}
