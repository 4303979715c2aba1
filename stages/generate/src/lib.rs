//! The generation room of flywheel: an ONNX Runtime sampling engine with a KV cache and
//! continuous batching. It knows nothing of tasks or the store: requests in, completions out.

mod cache;
mod dims;
pub mod engine;
pub mod kv;
mod prefix;
pub mod sampler;

pub use dims::ModelDims;
pub use engine::{
    Completion, Driver, Engine, EngineConfig, EngineError, Request, RunStats, StepStats,
};
pub use flywheel_core::FinishReason;
pub use sampler::SamplingParams;
