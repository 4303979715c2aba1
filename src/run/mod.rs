//! A run directory of the whole loop: its settings (`flywheel.toml`) and its layout
//! (`rounds/NNNN/…`, `current`).

pub mod config;

use std::path::{Path, PathBuf};

/// The file naming the promoted round.
pub const CURRENT_FILE: &str = "current";

/// `RUN_DIR/rounds/NNNN`.
pub fn round_dir(run: &Path, round: u32) -> PathBuf {
    run.join("rounds").join(format!("{round:04}"))
}

/// `RUN_DIR/rounds/NNNN/model`: the model a round ends with (round 0: the starting model).
pub fn model_dir(run: &Path, round: u32) -> PathBuf {
    round_dir(run, round).join("model")
}
