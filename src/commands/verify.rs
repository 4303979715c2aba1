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
    /// Prompt overrides and the reflection feedback option (loaded and checked like generate's).
    #[command(flatten)]
    pub task_flags: super::TaskFlags,
}

/// Runs the verification, writing verdicts to `--output` if given, else to `out`.
/// The caller prints the returned report (its `Display` is the one-line summary) on stderr.
pub fn run(args: &VerifyArgs, out: &mut dyn Write) -> Result<VerifyReport, VerifyError> {
    let options = args.task_flags.options();
    let Some(output) = &args.output else {
        return verify_file::verify_file(&args.task, &options, &args.input, out);
    };
    // A symlink is followed: its target is the file to replace (but `/dev/stdout` stays itself,
    // even when the shell redirected it to a file).
    let special = output.starts_with("/dev") || output.starts_with("/proc");
    let path = match special {
        true => output.clone(),
        false => std::fs::canonicalize(output).unwrap_or_else(|_| output.clone()),
    };
    if special || std::fs::metadata(&path).is_ok_and(|m| !m.is_file()) {
        // Devices and pipes (`/dev/stdout`, `>(gzip …)`) are written in place, as before.
        let file = File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|source| VerifyError::Write { source })?;
        let mut w = BufWriter::new(file);
        let report = verify_file::verify_file(&args.task, &options, &args.input, &mut w)?;
        w.flush().map_err(|source| VerifyError::Write { source })?;
        return Ok(report);
    }
    // A regular file is written beside the target and renamed once complete: a failed run (a
    // bad task spec, an unreadable input) leaves an earlier verdict file as it was.
    flywheel_model::atomic::replace_file(
        &path,
        |tmp| write_verdicts(args, &options, tmp, &path),
        |source| VerifyError::Write { source },
    )
}

fn write_verdicts(
    args: &VerifyArgs,
    options: &TaskOptions,
    tmp: &Path,
    target: &Path,
) -> Result<VerifyReport, VerifyError> {
    let file = File::create(tmp).map_err(|source| VerifyError::Write { source })?;
    // The replaced file keeps its permissions.
    if let Ok(meta) = std::fs::metadata(target) {
        let _ = file.set_permissions(meta.permissions());
    }
    let mut w = BufWriter::new(file);
    let report = verify_file::verify_file(&args.task, options, &args.input, &mut w)?;
    let file = w.into_inner().map_err(|e| VerifyError::Write {
        source: e.into_error(),
    })?;
    file.sync_all()
        .map_err(|source| VerifyError::Write { source })?;
    Ok(report)
}
