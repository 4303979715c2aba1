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

/// Which ONNX Runtime execution provider a session asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// CUDA when the loaded ONNX Runtime has it and it registers, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// CUDA or an error.
    Cuda,
}

/// Whether the loaded ONNX Runtime library has the CUDA execution provider.
pub fn cuda_available() -> Result<bool, RuntimeError> {
    use ort::ep::ExecutionProvider;
    environment(&flywheel_model::paths::onnxruntime_dylib())?;
    Ok(ort::ep::CUDA::is_available().unwrap_or(false))
}

/// A CPU session with `threads` intra-op threads (0: ONNX Runtime's default).
pub fn cpu_session(model: &Path, threads: usize) -> Result<ort::session::Session, RuntimeError> {
    session(model, threads, Provider::Cpu).map(|(s, _)| s)
}

/// A session on `provider`; returns it with the provider it really got (`Cpu` or `Cuda`).
pub fn session(
    model: &Path,
    threads: usize,
    provider: Provider,
) -> Result<(ort::session::Session, Provider), RuntimeError> {
    let dylib = flywheel_model::paths::onnxruntime_dylib();
    let env = environment(&dylib)?;
    let err = |e: String| RuntimeError::Session {
        path: model.to_owned(),
        message: e,
    };
    let builder = || -> Result<ort::session::builder::SessionBuilder, RuntimeError> {
        let mut b = ort::session::Session::builder(env).map_err(|e| err(e.to_string()))?;
        if threads > 0 {
            b = b
                .with_intra_threads(threads)
                .map_err(|e| err(e.to_string()))?;
        }
        Ok(b)
    };
    if provider != Provider::Cpu {
        if cuda_available()? {
            let cuda = builder()?
                .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()]);
            match cuda {
                Ok(mut b) => {
                    let s = b.commit_from_file(model).map_err(|e| err(e.to_string()))?;
                    return Ok((s, Provider::Cuda));
                }
                Err(e) if provider == Provider::Cuda => return Err(err(e.to_string())),
                Err(_) => {}
            }
        } else if provider == Provider::Cuda {
            return Err(err(format!(
                "the CUDA execution provider was requested, but the ONNX Runtime library {} \
                 has none (a CPU build; .ci/setup installs onnxruntime-gpu where nvidia-smi \
                 sees a GPU)",
                dylib.display()
            )));
        }
    }
    let s = builder()?
        .commit_from_file(model)
        .map_err(|e| err(e.to_string()))?;
    Ok((s, Provider::Cpu))
}
