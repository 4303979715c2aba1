//! `flywheel verify`: thin glue from the command line to `flywheel_datasets::verify_file`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use flywheel_datasets::verify_file::{self, VerifyError, VerifyReport};
use flywheel_datasets::TaskOptions;

/// Verify model responses: one JSON verdict per input line.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// Task: `countdown`, `function_calling`, or a path to a user task config (.json).
    #[arg(long)]
    pub task: String,
    /// JSONL input: each line holds the task's fields plus a string `response`.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the verdicts (`{"line":N,"pass":bool,"reason":"…"}` per line); stdout if absent.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// Runs the verification, writing verdicts to `--output` if given, else to `out`.
/// The caller prints the returned report (its `Display` is the one-line summary) on stderr.
pub fn run(args: &VerifyArgs, out: &mut dyn Write) -> Result<VerifyReport, VerifyError> {
    let options = TaskOptions::default();
    match &args.output {
        Some(path) => {
            let file = File::create(path).map_err(|source| VerifyError::Write { source })?;
            let mut w = BufWriter::new(file);
            verify_file::verify_file(&args.task, &options, &args.input, &mut w)
        }
        None => verify_file::verify_file(&args.task, &options, &args.input, out),
    }
}
