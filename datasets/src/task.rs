//! The task abstraction shared by every stage: instances, chat messages, verdicts and the task registry.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::prompts::PromptError;

/// Who speaks a chat message. Serialized lowercase, as chat templates expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// One task instance: a stable id and the task's own JSON fields (normalized by `parse_instance`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub fields: Value,
}

/// The verifier's decision. `reason` is `"ok"` when `pass`, otherwise a machine-readable token
/// such as `wrong_value` or `wrong_argument:city` (the list is in the crate README).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub pass: bool,
    pub reason: String,
}

impl Verdict {
    pub fn ok() -> Self {
        Self {
            pass: true,
            reason: "ok".to_string(),
        }
    }

    pub fn fail(reason: impl Into<String>) -> Self {
        Self {
            pass: false,
            reason: reason.into(),
        }
    }
}

/// A task: how to read its instances, what to ask the model, and how to judge the answer.
///
/// Object-safe so stages can hold a `Box<dyn Task>` chosen at run time.
pub trait Task: Send + Sync {
    /// The task's registry name (e.g. `countdown`).
    fn name(&self) -> &str;

    /// Validates and normalizes one JSON record. `record_no` is its 1-based number among the
    /// input's records (blank lines not counted): it names the record in errors and gives the
    /// default id `<task>-<record_no>`. [`read_instances`] reports errors at the file's line.
    fn parse_instance(&self, record_no: usize, value: Value) -> Result<Instance, InstanceError>;

    /// The first-try conversation: an optional system message and the user request.
    fn attempt_messages(&self, inst: &Instance) -> Vec<Message>;

    /// Attempt conversation + the failed attempt + the request for a self-reflection.
    fn reflection_messages(
        &self,
        inst: &Instance,
        attempt: &str,
        verdict: &Verdict,
    ) -> Vec<Message>;

    /// Reflection conversation + the reflection + the request to try again.
    fn retry_messages(&self, inst: &Instance, attempt: &str, reflection: &str) -> Vec<Message>;

    /// JSON tool schemas (OpenAI function format) for chat templates that accept `tools`.
    fn tools(&self, _inst: &Instance) -> Option<Value> {
        None
    }

    /// Judges a response. Never panics, whatever the response.
    fn verify(&self, inst: &Instance, response: &str) -> Verdict;

    /// Everything besides the instances that shapes this task's prompts and verdicts: its name,
    /// the prompt templates in use (built-in or overridden) and the options, and for a user task
    /// its config and verifier. A run stores a hash of it and refuses to resume when it changed.
    fn identity(&self) -> Value;
}

/// Options that change how a task renders prompts.
#[derive(Debug, Clone, Default)]
pub struct TaskOptions {
    /// Directory whose `<task>/<template>.txt` files replace the embedded defaults.
    pub prompt_dir: Option<PathBuf>,
    /// Tell the model the verifier's reason in the reflection request (the paper does not).
    pub include_reason: bool,
    /// Leave the failed attempt (and the reflection request) out of the retry's conversation:
    /// the retry sees the task, its reflection and the retry request (the paper keeps the whole
    /// conversation). Small models otherwise tend to copy the failed answer.
    pub retry_without_attempt: bool,
}

/// Failure to load a task by name or config path.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("unknown task `{name}` (expected countdown, function_calling, or a path to a task config .json)")]
    UnknownTask { name: String },
    #[error("unknown level `{level}` for task `{task}` (known: {known})")]
    UnknownLevel {
        task: String,
        level: String,
        known: String,
    },
    #[error("cannot read task config {path}: {source}")]
    ConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid task config {path}: {source}")]
    ConfigParse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("invalid task config {path}: {message}")]
    ConfigInvalid { path: PathBuf, message: String },
    #[error("invalid regular expression in task config {path}: {source}")]
    Regex { path: PathBuf, source: regex::Error },
    #[error(transparent)]
    Prompt(#[from] PromptError),
}

/// Failure to read or parse one task instance. Iteration over a file continues after it.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
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
    #[error("line {line}: invalid JSON: {message}")]
    Json { line: usize, message: String },
    #[error("line {line}: missing field `{field}`")]
    MissingField { line: usize, field: String },
    #[error("line {line}: invalid field `{field}`: {message}")]
    InvalidField {
        line: usize,
        field: String,
        message: String,
    },
    #[error("{path}: parquet: {message}")]
    Parquet { path: PathBuf, message: String },
}

impl InstanceError {
    /// The same error reported at file line `line` (for errors that name a line).
    pub fn at_line(mut self, line: usize) -> Self {
        match &mut self {
            Self::Read { line: l, .. }
            | Self::Json { line: l, .. }
            | Self::MissingField { line: l, .. }
            | Self::InvalidField { line: l, .. } => *l = line,
            Self::Open { .. } | Self::Parquet { .. } => {}
        }
        self
    }

    /// The 1-based line (or row) the error is about, when it is about one.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Read { line, .. }
            | Self::Json { line, .. }
            | Self::MissingField { line, .. }
            | Self::InvalidField { line, .. } => Some(*line),
            Self::Open { .. } | Self::Parquet { .. } => None,
        }
    }
}

/// Loads a task: `countdown`, `function_calling`, or a path to a user task config (`.json`).
/// Difficulty levels are not part of the name: they are the `level` field of each instance.
pub fn load_task(spec: &str) -> Result<Box<dyn Task>, TaskError> {
    load_task_with(spec, &TaskOptions::default())
}

/// [`load_task`] with prompt options.
pub fn load_task_with(spec: &str, options: &TaskOptions) -> Result<Box<dyn Task>, TaskError> {
    match spec {
        "countdown" => Ok(Box::new(crate::countdown::CountdownTask::new(options)?)),
        "function_calling" | "function-calling" => Ok(Box::new(
            crate::function_calling::FunctionCallingTask::new(options)?,
        )),
        _ => {
            let path = Path::new(spec);
            if spec.ends_with(".json") || path.is_file() {
                Ok(Box::new(crate::custom::CustomTask::load(path, options)?))
            } else {
                Err(TaskError::UnknownTask {
                    name: spec.to_string(),
                })
            }
        }
    }
}

/// Streams the instances of a JSONL file (or, for tasks that read rows, a `.parquet` file).
/// A malformed line yields an `Err` carrying its line number, and iteration continues. Blank
/// lines are skipped and not counted: the n-th record is the n-th instance wherever blank lines
/// fall, so they shift neither task indices nor default ids.
pub fn read_instances<'a>(
    task: &'a dyn Task,
    path: &Path,
) -> Box<dyn Iterator<Item = Result<Instance, InstanceError>> + 'a> {
    let is_parquet = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    let records: Box<dyn Iterator<Item = Result<(usize, Value), InstanceError>>> = if is_parquet {
        crate::parquet_rows::rows(path)
    } else {
        Box::new(crate::jsonl::JsonlReader::open(path))
    };
    let mut record_no = 0usize;
    Box::new(records.map(move |r| {
        record_no += 1;
        r.and_then(|(line, value)| {
            task.parse_instance(record_no, value)
                .map_err(|e| e.at_line(line))
        })
    }))
}

/// [`Task::identity`] of a built-in task: its name, the verifier's version (this crate's) and
/// the prompts in use.
pub(crate) fn builtin_identity(name: &str, prompts: &crate::prompts::PromptSet) -> Value {
    serde_json::json!({
        "task": name,
        "verifier": concat!("flywheel-datasets ", env!("CARGO_PKG_VERSION")),
        "prompts": prompts.identity(),
    })
}

/// The instance id: the record's `id` field if it has one, else `<task>-<line>`.
pub(crate) fn instance_id(task: &str, line_no: usize, value: &Value) -> String {
    match value.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => format!("{task}-{line_no}"),
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        })
    }
}
