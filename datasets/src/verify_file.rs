//! `flywheel verify`: judge a JSONL file of task fields plus `response`, one JSON verdict per line.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::task::{load_task_with, Task, TaskError, TaskOptions};

/// Counts over one input file. `lines` counts non-blank lines; `passed + failed + malformed == lines`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub lines: usize,
    pub passed: usize,
    pub failed: usize,
    pub malformed: usize,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = if self.lines > 0 {
            100.0 * self.passed as f64 / self.lines as f64
        } else {
            0.0
        };
        write!(
            f,
            "verified {} lines: {} passed ({rate:.1}%), {} failed, {} malformed",
            self.lines, self.passed, self.failed, self.malformed
        )
    }
}

/// Failure of the whole run (a bad line is not one: it becomes a `malformed` verdict).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: read error: {source}")]
    Read {
        path: PathBuf,
        line: usize,
        source: std::io::Error,
    },
    #[error("cannot write verdicts: {source}")]
    Write { source: std::io::Error },
}

/// One output line.
#[derive(Debug, Serialize)]
struct VerdictLine<'a> {
    line: usize,
    pass: bool,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Loads the task named by `task_spec` and verifies `input` (see [`run`]).
pub fn verify_file(
    task_spec: &str,
    options: &TaskOptions,
    input: &Path,
    out: &mut dyn Write,
) -> Result<VerifyReport, VerifyError> {
    let task = load_task_with(task_spec, options)?;
    run(task.as_ref(), input, out)
}

/// Verifies every line of `input`, writing `{"line":N,"pass":bool,"reason":"…"}` per line to `out`.
/// Malformed lines get `"reason":"malformed"` and an `"error"` message, and the run continues.
pub fn run(
    task: &dyn Task,
    input: &Path,
    out: &mut dyn Write,
) -> Result<VerifyReport, VerifyError> {
    let file = File::open(input).map_err(|source| VerifyError::Open {
        path: input.to_path_buf(),
        source,
    })?;
    run_reader(task, input, &mut BufReader::new(file), out)
}

/// [`run`] over any reader; `path` is used in error messages.
pub fn run_reader(
    task: &dyn Task,
    path: &Path,
    reader: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<VerifyReport, VerifyError> {
    let mut report = VerifyReport::default();
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        line_no += 1;
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| VerifyError::Read {
                path: path.to_path_buf(),
                line: line_no,
                source,
            })?;
        if n == 0 {
            break;
        }
        let outcome = match std::str::from_utf8(&buf) {
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => judge_line(task, line_no, text),
            Err(e) => Err(format!("invalid UTF-8: {e}")),
        };
        report.lines += 1;
        let (pass, reason, error) = match &outcome {
            Ok(v) => (v.pass, v.reason.as_str(), None),
            Err(e) => (false, "malformed", Some(e.clone())),
        };
        match (&outcome, pass) {
            (Err(_), _) => report.malformed += 1,
            (Ok(_), true) => report.passed += 1,
            (Ok(_), false) => report.failed += 1,
        }
        let line = VerdictLine {
            line: line_no,
            pass,
            reason,
            error,
        };
        let json = serde_json::to_string(&line).map_err(|e| VerifyError::Write {
            source: std::io::Error::other(e),
        })?;
        writeln!(out, "{json}").map_err(|source| VerifyError::Write { source })?;
    }
    out.flush()
        .map_err(|source| VerifyError::Write { source })?;
    Ok(report)
}

fn judge_line(task: &dyn Task, line_no: usize, text: &str) -> Result<crate::task::Verdict, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(mut obj) = value else {
        return Err("expected a JSON object".into());
    };
    let response = match obj.remove("response") {
        Some(Value::String(s)) => s,
        Some(_) => return Err("`response` is not a string".into()),
        None => return Err("missing field `response`".into()),
    };
    let inst = task
        .parse_instance(line_no, Value::Object(obj))
        .map_err(|e| e.to_string())?;
    Ok(task.verify(&inst, &response))
}
