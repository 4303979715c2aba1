//! The generation room of flywheel: an ONNX Runtime sampling engine with a KV cache and
//! continuous batching. It knows nothing of tasks or the store: requests in, completions out.

mod cache;
mod dims;
pub mod engine;
mod prefix;
pub mod sampler;

pub use dims::ModelDims;
pub use engine::{
    Completion, Driver, Engine, EngineConfig, EngineError, FinishReason, Request, RunStats,
    StepStats,
};
pub use sampler::{Rng, SamplingParams};
