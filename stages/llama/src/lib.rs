//! The libtorch room of flywheel: the tch implementation of the Llama family (Llama, Qwen2,
//! Mistral) with Hugging Face variable names, safetensors I/O into tch tensors, model import
//! (GGUF dequantization, Hugging Face directories checked by loading them) and the tiny test
//! model. The only crate besides the trainer and the exporter that links libtorch.

pub mod generate;
pub mod import;
pub mod llama;
pub mod tiny;
pub mod weights;

pub use llama::{KvCache, Llama};

/// Picks CUDA when libtorch sees a GPU, the CPU otherwise.
pub fn default_device() -> tch::Device {
    tch::Device::cuda_if_available()
}
