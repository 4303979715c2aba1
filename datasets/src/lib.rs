//! Tasks, prompts, verifiers and generators: the ground truth of the flywheel (knows nothing of models).
//!
//! * [`task`]: the [`Task`] trait the stages share, [`load_task`] and [`read_instances`].
//! * [`countdown`], [`function_calling`], [`custom`]: the tasks.
//! * [`prompts`]: editable prompt templates (defaults in `datasets/prompts/`).
//! * [`verify_file`]: the library side of `flywheel verify`.

pub mod countdown;
pub mod custom;
pub mod function_calling;
pub mod jsonl;
mod parquet_rows;
pub mod prompts;
pub mod task;
pub mod verify_file;

pub use task::{
    load_task, load_task_with, read_instances, Instance, InstanceError, Message, Role, Task,
    TaskError, TaskOptions, Verdict,
};

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Regenerates every shipped data file as `(path relative to datasets/data, contents)`.
pub fn shipped_data_files() -> Result<Vec<(String, String)>, String> {
    let mut files = countdown::generate::shipped_files();
    files.extend(function_calling::generate::shipped_files()?);
    Ok(files)
}
