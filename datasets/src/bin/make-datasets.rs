//! Regenerates `datasets/data` deterministically (or writes into the directory given as argument).
//!
//! Usage: `cargo run -p flywheel-datasets --bin make-datasets [OUT_DIR]`

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data"));
    let files = match flywheel_datasets::shipped_data_files() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("make-datasets: generator error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (rel, contents) in files {
        let path = out.join(&rel);
        if let Some(parent) = path.parent() {
            if let Err(e) = std::fs::create_dir_all(parent) {
                eprintln!("make-datasets: cannot create {}: {e}", parent.display());
                return ExitCode::FAILURE;
            }
        }
        if let Err(e) = std::fs::write(&path, &contents) {
            eprintln!("make-datasets: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("{} ({} lines)", path.display(), contents.lines().count());
    }
    ExitCode::SUCCESS
}
