//! User-defined tasks from a small JSON config: prompts with a reference, verified by exact match,
//! a regular expression, or an external command (no shell, with a timeout).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::countdown::verify::last_answer_tag;
use crate::prompts::{self, PromptSet};
use crate::task::{
    instance_id, Instance, InstanceError, Message, Task, TaskError, TaskOptions, Verdict,
};

/// Placeholder in a regex pattern replaced by the (escaped) reference of each instance.
const REFERENCE: &str = "{reference}";
/// Cap on compiled regex size, so a hostile pattern cannot exhaust memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

fn default_prompt_field() -> String {
    "prompt".into()
}
fn default_reference_field() -> String {
    "reference".into()
}
fn default_true() -> bool {
    true
}
fn default_timeout_ms() -> u64 {
    10_000
}

/// The config file (JSON). Unknown keys are rejected so typos surface.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CustomConfig {
    /// Task name, reported by [`Task::name`].
    pub name: String,
    /// Default data file (JSONL), relative to the config file.
    #[serde(default)]
    pub data: Option<PathBuf>,
    /// Field holding the prompt text.
    #[serde(default = "default_prompt_field")]
    pub prompt_field: String,
    /// Field holding the reference answer.
    #[serde(default = "default_reference_field")]
    pub reference_field: String,
    /// Directory with `system.txt`, `attempt.txt`, `reflect.txt`, `retry.txt` overrides, relative to the config.
    #[serde(default)]
    pub prompts: Option<PathBuf>,
    pub verifier: VerifierConfig,
}

/// How responses are judged.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum VerifierConfig {
    /// The answer (last `<answer>` tag content if present, else the whole response), trimmed,
    /// equals the trimmed reference.
    Exact {
        #[serde(default = "default_true")]
        case_sensitive: bool,
    },
    /// The pattern matches somewhere in the response (anchor it with `^…$` for a full match).
    /// `{reference}` in the pattern is replaced by the escaped reference.
    Regex {
        pattern: String,
        #[serde(default)]
        answer_tag_only: bool,
    },
    /// Runs `program args…` (no shell) in the config's directory with
    /// `{"task", "id", "instance", "response"}` as JSON on stdin; exit code 0 = pass.
    Command {
        program: String,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default = "default_timeout_ms")]
        timeout_ms: u64,
    },
}

enum Verifier {
    Exact {
        case_sensitive: bool,
    },
    Regex {
        fixed: Option<Regex>,
        pattern: String,
        answer_tag_only: bool,
    },
    Command {
        program: PathBuf,
        args: Vec<String>,
        timeout: Duration,
        dir: PathBuf,
    },
}

/// A task loaded from a [`CustomConfig`].
pub struct CustomTask {
    config: CustomConfig,
    base_dir: PathBuf,
    verifier: Verifier,
    prompts: PromptSet,
}

fn build_regex(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

impl CustomTask {
    /// Reads and validates a config file.
    pub fn load(path: &Path, options: &TaskOptions) -> Result<Self, TaskError> {
        let text = std::fs::read_to_string(path).map_err(|source| TaskError::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        let config: CustomConfig =
            serde_json::from_str(&text).map_err(|source| TaskError::ConfigParse {
                path: path.to_path_buf(),
                source,
            })?;
        Self::from_config(config, &config_dir(path), path, options)
    }

    /// Builds a task from an already parsed config; relative paths resolve against `base_dir`.
    pub fn from_config(
        config: CustomConfig,
        base_dir: &Path,
        origin: &Path,
        options: &TaskOptions,
    ) -> Result<Self, TaskError> {
        let invalid = |message: String| TaskError::ConfigInvalid {
            path: origin.to_path_buf(),
            message,
        };
        if config.name.trim().is_empty() {
            return Err(invalid("`name` is empty".into()));
        }
        let verifier = match &config.verifier {
            VerifierConfig::Exact { case_sensitive } => Verifier::Exact {
                case_sensitive: *case_sensitive,
            },
            VerifierConfig::Regex {
                pattern,
                answer_tag_only,
            } => {
                // Validate now with a sample reference so a bad pattern fails at load, not per line.
                let sample = pattern.replace(REFERENCE, "x");
                build_regex(&sample).map_err(|source| TaskError::Regex {
                    path: origin.to_path_buf(),
                    source,
                })?;
                let fixed = if pattern.contains(REFERENCE) {
                    None
                } else {
                    build_regex(pattern).ok()
                };
                Verifier::Regex {
                    fixed,
                    pattern: pattern.clone(),
                    answer_tag_only: *answer_tag_only,
                }
            }
            VerifierConfig::Command {
                program,
                args,
                timeout_ms,
            } => {
                if program.is_empty() {
                    return Err(invalid("`verifier.program` is empty".into()));
                }
                // A path with a separator is relative to the config; a bare name is looked up in PATH.
                let p = PathBuf::from(program);
                let program = if p.components().count() > 1 && p.is_relative() {
                    base_dir.join(p)
                } else {
                    p
                };
                Verifier::Command {
                    program,
                    args: args.clone(),
                    timeout: Duration::from_millis(*timeout_ms),
                    dir: base_dir.to_path_buf(),
                }
            }
        };
        // Prompt directory: the config's own, else `<prompt_dir>/<name>` from the options.
        let prompt_dir = match (&config.prompts, &options.prompt_dir) {
            (Some(p), _) => Some(base_dir.join(p)),
            (None, Some(d)) => Some(d.join(&config.name)),
            (None, None) => None,
        };
        let prompts = PromptSet::load(
            &config.name,
            &prompts::CUSTOM,
            prompt_dir.as_deref(),
            &["prompt"],
            options,
        )?;
        Ok(Self {
            config,
            base_dir: base_dir.to_path_buf(),
            verifier,
            prompts,
        })
    }

    /// The config's default data file, resolved against the config directory.
    pub fn data_path(&self) -> Option<PathBuf> {
        self.config.data.as_ref().map(|d| self.base_dir.join(d))
    }

    fn field_text(&self, inst: &Instance, field: &str) -> Option<String> {
        match inst.fields.get(field)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    fn vars(&self, inst: &Instance) -> String {
        self.field_text(inst, &self.config.prompt_field)
            .unwrap_or_default()
    }

    fn run_command(
        &self,
        program: &Path,
        args: &[String],
        timeout: Duration,
        dir: &Path,
        inst: &Instance,
        response: &str,
    ) -> Verdict {
        let payload = serde_json::json!({
            "task": self.config.name,
            "id": inst.id,
            "instance": inst.fields,
            "response": response,
        });
        let Ok(input) = serde_json::to_vec(&payload) else {
            return Verdict::fail("command_error");
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        isolate(&mut command);
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(_) => return Verdict::fail("command_error"),
        };
        let Some(mut feed) = child.stdin.take().and_then(|p| Feed::start(p, input)) else {
            kill_group(&mut child);
            return Verdict::fail("command_error");
        };
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            let progressed = feed.pump();
            match child.try_wait() {
                Ok(Some(status)) => {
                    return match status.code() {
                        Some(0) => Verdict::ok(),
                        Some(code) => Verdict::fail(format!("command_failed:{code}")),
                        None => Verdict::fail("command_killed"),
                    }
                }
                Ok(None) if Instant::now() >= deadline => {
                    kill_group(&mut child);
                    return Verdict::fail("command_timeout");
                }
                Ok(None) if progressed => pause = Duration::from_millis(1),
                Ok(None) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(_) => {
                    kill_group(&mut child);
                    return Verdict::fail("command_error");
                }
            }
        }
    }
}

/// Unix: the command gets its own process group, so a timeout kills what it started too; on
/// Linux it is also killed if flywheel dies (Ctrl-C no longer reaches another group).
#[cfg(unix)]
fn isolate(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    command.process_group(0);
    #[cfg(target_os = "linux")]
    // SAFETY: the closure runs in the forked child before exec and only makes one
    // async-signal-safe system call.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(unix))]
fn isolate(_command: &mut Command) {}

/// Feeds the payload to the command's stdin without ever blocking the verifier: a command that
/// never reads it (or leaves it to a child that hangs) cannot hold us past the timeout.
#[cfg(unix)]
struct Feed {
    pipe: Option<std::process::ChildStdin>,
    input: Vec<u8>,
    written: usize,
}

#[cfg(unix)]
impl Feed {
    fn start(pipe: std::process::ChildStdin, input: Vec<u8>) -> Option<Feed> {
        use std::os::fd::AsRawFd;
        let fd = pipe.as_raw_fd();
        // SAFETY: `fd` is an open descriptor owned by `pipe` for the duration of both calls.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return None;
        }
        Some(Feed {
            pipe: Some(pipe),
            input,
            written: 0,
        })
    }

    /// Writes what the pipe takes now; true if anything was written. Closes the pipe (EOF for
    /// the command) once all is written, or when the command has closed its end.
    fn pump(&mut self) -> bool {
        let Some(pipe) = self.pipe.as_mut() else {
            return false;
        };
        let before = self.written;
        while self.written < self.input.len() {
            match pipe.write(&self.input[self.written..]) {
                Ok(0) => break,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // The command closed its stdin: it has read what it wanted.
                Err(_) => self.written = self.input.len(),
            }
        }
        if self.written == self.input.len() {
            self.pipe = None;
        }
        self.written > before
    }
}

/// Elsewhere: a writer thread that is never joined, so a blocked write cannot hold us either.
#[cfg(not(unix))]
struct Feed;

#[cfg(not(unix))]
impl Feed {
    fn start(mut pipe: std::process::ChildStdin, input: Vec<u8>) -> Option<Feed> {
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
        Some(Feed)
    }

    fn pump(&mut self) -> bool {
        false
    }
}

/// The directory a config's relative paths resolve against, and command verifiers run in.
fn config_dir(config: &Path) -> PathBuf {
    match config.parent() {
        // `task.json` has the parent "", which no process can use as its working directory.
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Kills the command and, on Unix, its whole process group (still ours: the leader is not yet
/// reaped), then reaps it.
fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: plain syscall on our own child's process group.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Task for CustomTask {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn parse_instance(&self, line_no: usize, value: Value) -> Result<Instance, InstanceError> {
        if !value.is_object() {
            return Err(InstanceError::Json {
                line: line_no,
                message: "expected a JSON object".into(),
            });
        }
        for field in [&self.config.prompt_field, &self.config.reference_field] {
            match value.get(field.as_str()) {
                None | Some(Value::Null) => {
                    return Err(InstanceError::MissingField {
                        line: line_no,
                        field: field.clone(),
                    })
                }
                Some(Value::Array(_) | Value::Object(_)) if field == &self.config.prompt_field => {
                    return Err(InstanceError::InvalidField {
                        line: line_no,
                        field: field.clone(),
                        message: "expected a string".into(),
                    })
                }
                Some(_) => {}
            }
        }
        Ok(Instance {
            id: instance_id(&self.config.name, line_no, &value),
            fields: value,
        })
    }

    fn attempt_messages(&self, inst: &Instance) -> Vec<Message> {
        let prompt = self.vars(inst);
        self.prompts.attempt_messages(&[("prompt", &prompt)])
    }

    fn reflection_messages(
        &self,
        inst: &Instance,
        attempt: &str,
        verdict: &Verdict,
    ) -> Vec<Message> {
        let prompt = self.vars(inst);
        self.prompts
            .reflection_messages(&[("prompt", &prompt)], attempt, verdict)
    }

    fn retry_messages(&self, inst: &Instance, attempt: &str, reflection: &str) -> Vec<Message> {
        let prompt = self.vars(inst);
        self.prompts.retry_messages(
            &[("prompt", &prompt)],
            attempt,
            &|| self.verify(inst, attempt),
            reflection,
        )
    }

    fn identity(&self) -> Value {
        // The verifier program's bytes count too: editing the script changes verdicts. A bare
        // program name (looked up in PATH) is a system tool and is identified by name only.
        let program = match &self.verifier {
            Verifier::Command { program, .. } if program.is_file() => {
                Some(match std::fs::read(program) {
                    Ok(bytes) => Value::String(crate::sha256_hex(&bytes)),
                    Err(e) => Value::String(format!("unreadable: {e}")),
                })
            }
            _ => None,
        };
        serde_json::json!({
            "task": self.config.name,
            "config": serde_json::to_value(&self.config).unwrap_or(Value::Null),
            "verifier_program_sha256": program,
            "prompts": self.prompts.identity(),
        })
    }

    fn verify(&self, inst: &Instance, response: &str) -> Verdict {
        let Some(reference) = self.field_text(inst, &self.config.reference_field) else {
            return Verdict::fail("invalid_instance");
        };
        match &self.verifier {
            Verifier::Exact { case_sensitive } => {
                let answer = last_answer_tag(response).unwrap_or(response).trim();
                let reference = reference.trim();
                let equal = if *case_sensitive {
                    answer == reference
                } else {
                    answer.to_lowercase() == reference.to_lowercase()
                };
                if equal {
                    Verdict::ok()
                } else {
                    Verdict::fail("wrong_answer")
                }
            }
            Verifier::Regex {
                fixed,
                pattern,
                answer_tag_only,
            } => {
                let text = if *answer_tag_only {
                    match last_answer_tag(response) {
                        Some(t) => t,
                        None => return Verdict::fail("no_answer"),
                    }
                } else {
                    response
                };
                let compiled;
                let re = match fixed {
                    Some(re) => re,
                    None => {
                        match build_regex(&pattern.replace(REFERENCE, &regex::escape(&reference))) {
                            Ok(re) => {
                                compiled = re;
                                &compiled
                            }
                            Err(_) => return Verdict::fail("invalid_instance"),
                        }
                    }
                };
                if re.is_match(text) {
                    Verdict::ok()
                } else {
                    Verdict::fail("no_match")
                }
            }
            Verifier::Command {
                program,
                args,
                timeout,
                dir,
            } => self.run_command(program, args, *timeout, dir, inst, response),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_config_file_name_resolves_against_the_current_directory() {
        assert_eq!(config_dir(Path::new("task.json")), PathBuf::from("."));
        assert_eq!(
            config_dir(Path::new("tasks/t.json")),
            PathBuf::from("tasks")
        );
        // And a command can run there.
        assert!(Command::new("true")
            .current_dir(config_dir(Path::new("task.json")))
            .status()
            .is_ok_and(|s| s.success()));
    }
}
