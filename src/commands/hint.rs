//! The binary's edge: what to do about an error, in terms of the command line. Library errors
//! say what went wrong and name their subject; only here do they meet flags such as `--force`.

use flywheel_model::atomic::AtomicDirError;
use flywheel_store::StoreError;

use super::export::ExportCommandError;
use super::generate::GenerateError;
use crate::pipeline::PipelineError;

/// A one-line suggestion for an error anywhere in `err`'s chain, if there is one.
pub fn hint(err: &anyhow::Error) -> Option<&'static str> {
    err.chain().find_map(hint_of)
}

fn hint_of(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    if let Some(e) = e.downcast_ref::<AtomicDirError>() {
        return atomic(e);
    }
    if let Some(e) = e.downcast_ref::<StoreError>() {
        return store(e);
    }
    if let Some(e) = e.downcast_ref::<PipelineError>() {
        return pipeline(e);
    }
    if let Some(e) = e.downcast_ref::<flywheel_train::TrainError>() {
        return train(e);
    }
    // Transparent wrappers hide their inner error from the chain: look inside them.
    if let Some(e) = e.downcast_ref::<GenerateError>() {
        return match e {
            GenerateError::Store(s) => store(s),
            GenerateError::Pipeline(p) => pipeline(p),
            _ => None,
        };
    }
    if let Some(flywheel_llama::import::ImportError::Output(a)) = e.downcast_ref() {
        return atomic(a);
    }
    if let Some(ExportCommandError::Export(flywheel_export::ExportError::Output(a))) =
        e.downcast_ref()
    {
        return atomic(a);
    }
    None
}

fn atomic(e: &AtomicDirError) -> Option<&'static str> {
    match e {
        AtomicDirError::Exists { .. } => Some("pass --force to replace it"),
        _ => None,
    }
}

fn store(e: &StoreError) -> Option<&'static str> {
    match e {
        StoreError::MetaMismatch { .. } => {
            Some("rerun with the run's original settings, or use a new --out directory")
        }
        StoreError::Locked { .. } => {
            Some("wait for the other process to finish; a run resumes where it stopped")
        }
        _ => None,
    }
}

fn pipeline(e: &PipelineError) -> Option<&'static str> {
    match e {
        PipelineError::Store(s) => store(s),
        PipelineError::InputChanged { .. } => {
            Some("use a new --out directory for a different input")
        }
        _ => None,
    }
}

fn train(e: &flywheel_train::TrainError) -> Option<&'static str> {
    use flywheel_train::TrainError;
    match e {
        TrainError::Changed { .. } => {
            Some("rerun with the checkpoint's settings and data to resume, or use a new --out")
        }
        TrainError::Foreign { .. } => Some("use a new --out directory"),
        TrainError::ModelMismatch { .. } => {
            Some("pass --off-policy to train on data another model generated")
        }
        TrainError::Atomic(a) => atomic(a),
        _ => None,
    }
}
