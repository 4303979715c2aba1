//! `flywheel verify`: thin glue from the command line to `flywheel_datasets::verify_file`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

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
            // Written beside the target and renamed once complete: a failed run (a bad task
            // spec, an unreadable input) leaves an earlier verdict file as it was.
            let name = path
                .file_name()
                .map_or_else(|| "verdicts".into(), |n| n.to_string_lossy().into_owned());
            let tmp = path.with_file_name(format!(".{name}.tmp"));
            let result = write_verdicts(args, &options, &tmp).and_then(|report| {
                std::fs::rename(&tmp, path).map_err(|source| VerifyError::Write { source })?;
                Ok(report)
            });
            if result.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            result
        }
        None => verify_file::verify_file(&args.task, &options, &args.input, out),
    }
}

fn write_verdicts(
    args: &VerifyArgs,
    options: &TaskOptions,
    tmp: &Path,
) -> Result<VerifyReport, VerifyError> {
    let file = File::create(tmp).map_err(|source| VerifyError::Write { source })?;
    let mut w = BufWriter::new(file);
    let report = verify_file::verify_file(&args.task, options, &args.input, &mut w)?;
    let file = w.into_inner().map_err(|e| VerifyError::Write {
        source: e.into_error(),
    })?;
    file.sync_all()
        .map_err(|source| VerifyError::Write { source })?;
    Ok(report)
}
