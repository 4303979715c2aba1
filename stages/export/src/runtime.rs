//! ONNX Runtime set-up: the shared library is loaded at run time (ort's `load-dynamic`), once
//! per process, from the project environment or `$ORT_DYLIB_PATH`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("ONNX Runtime library {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("{path}: ONNX Runtime: {message}")]
    Session { path: PathBuf, message: String },
}

static ENV: OnceLock<Result<ort::environment::Environment, RuntimeError>> = OnceLock::new();

/// Loads ONNX Runtime from `dylib` and creates the process's environment (first call wins;
/// later calls return the first outcome).
pub fn environment(dylib: &Path) -> Result<&'static ort::environment::Environment, RuntimeError> {
    ENV.get_or_init(|| {
        let load = |message: String| RuntimeError::Load {
            path: dylib.to_owned(),
            message,
        };
        if !dylib.is_file() {
            return Err(load(
                "not found (run .ci/setup, or set ORT_DYLIB_PATH)".into(),
            ));
        }
        let builder = ort::init_from(dylib).map_err(|e| load(e.to_string()))?;
        builder
            .with_name("flywheel")
            .build()
            .map_err(|e| load(e.to_string()))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// A CPU session with `threads` intra-op threads (0: ONNX Runtime's default).
pub fn cpu_session(model: &Path, threads: usize) -> Result<ort::session::Session, RuntimeError> {
    let env = environment(&flywheel_model::paths::onnxruntime_dylib())?;
    let err = |e: String| RuntimeError::Session {
        path: model.to_owned(),
        message: e,
    };
    let mut b = ort::session::Session::builder(env).map_err(|e| err(e.to_string()))?;
    if threads > 0 {
        b = b
            .with_intra_threads(threads)
            .map_err(|e| err(e.to_string()))?;
    }
    b.commit_from_file(model).map_err(|e| err(e.to_string()))
}
