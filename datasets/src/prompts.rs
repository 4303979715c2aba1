//! Prompt templates: editable text files with `{placeholder}` substitution, embedded defaults and user overrides.
//!
//! Only `{identifier}` is a placeholder, so JSON examples such as `{"name": …}` need no escaping;
//! an unknown `{identifier}` is an error at load time, which catches typos in edited templates.

use std::path::{Path, PathBuf};

use crate::task::{Message, Role, Verdict};

/// The template files every task has. `system.txt` may be empty (then no system message is sent).
pub const TEMPLATE_FILES: [&str; 4] = ["system.txt", "attempt.txt", "reflect.txt", "retry.txt"];

/// Failure to read or parse a prompt template.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("cannot read prompt template {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("prompt template {template}: unknown placeholder `{{{name}}}` (known: {known})")]
    UnknownPlaceholder {
        template: String,
        name: String,
        known: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Var(String),
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    segments: Vec<Segment>,
}

impl Template {
    /// Parses `text`; `origin` names the template in errors, `known` lists the allowed placeholders.
    pub fn parse(origin: &str, text: &str, known: &[&str]) -> Result<Self, PromptError> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let ident_len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            let is_var = ident_len > 0 && after[ident_len..].starts_with('}');
            if !is_var {
                literal.push_str(&rest[..=open]);
                rest = after;
                continue;
            }
            let name = &after[..ident_len];
            if !known.contains(&name) {
                return Err(PromptError::UnknownPlaceholder {
                    template: origin.to_string(),
                    name: name.to_string(),
                    known: known.join(", "),
                });
            }
            literal.push_str(&rest[..open]);
            if !literal.is_empty() {
                segments.push(Segment::Literal(std::mem::take(&mut literal)));
            }
            segments.push(Segment::Var(name.to_string()));
            rest = &after[ident_len + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Self { segments })
    }

    /// Substitutes `vars`; a placeholder without a value renders empty.
    pub fn render(&self, vars: &[(&str, &str)]) -> String {
        let mut out = String::new();
        for seg in &self.segments {
            match seg {
                Segment::Literal(s) => out.push_str(s),
                Segment::Var(name) => {
                    if let Some((_, v)) = vars.iter().find(|(k, _)| k == name) {
                        out.push_str(v);
                    }
                }
            }
        }
        out
    }

    fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }
}

/// Embedded default template texts for one task, in [`TEMPLATE_FILES`] order.
pub type Defaults = [&'static str; 4];

pub(crate) const COUNTDOWN: Defaults = [
    include_str!("../prompts/countdown/system.txt"),
    include_str!("../prompts/countdown/attempt.txt"),
    include_str!("../prompts/countdown/reflect.txt"),
    include_str!("../prompts/countdown/retry.txt"),
];

pub(crate) const FUNCTION_CALLING: Defaults = [
    include_str!("../prompts/function_calling/system.txt"),
    include_str!("../prompts/function_calling/attempt.txt"),
    include_str!("../prompts/function_calling/reflect.txt"),
    include_str!("../prompts/function_calling/retry.txt"),
];

pub(crate) const CUSTOM: Defaults = [
    include_str!("../prompts/custom/system.txt"),
    include_str!("../prompts/custom/attempt.txt"),
    include_str!("../prompts/custom/reflect.txt"),
    include_str!("../prompts/custom/retry.txt"),
];

/// The four templates of a task plus the reflection option.
#[derive(Debug, Clone)]
pub struct PromptSet {
    system: Template,
    attempt: Template,
    reflect: Template,
    retry: Template,
    include_reason: bool,
    retry_without_attempt: bool,
    /// The texts in use, in [`TEMPLATE_FILES`] order (for [`PromptSet::identity`]).
    texts: Vec<String>,
}

impl PromptSet {
    /// Loads each template from `override_dir/<file>` when that file exists, else from `defaults`.
    /// Every template may use `known` placeholders; the reflection template may also use `{feedback}`.
    pub fn load(
        task: &str,
        defaults: &Defaults,
        override_dir: Option<&Path>,
        known: &[&str],
        options: &crate::TaskOptions,
    ) -> Result<Self, PromptError> {
        let mut known_all: Vec<&str> = known.to_vec();
        known_all.push("feedback");
        let mut parsed = Vec::with_capacity(4);
        let mut texts = Vec::with_capacity(4);
        for (file, default) in TEMPLATE_FILES.iter().zip(defaults.iter()) {
            let candidate = override_dir.map(|d| d.join(file));
            let (origin, text) = match candidate {
                Some(path) if path.is_file() => {
                    let text =
                        std::fs::read_to_string(&path).map_err(|source| PromptError::Read {
                            path: path.clone(),
                            source,
                        })?;
                    (path.display().to_string(), text)
                }
                _ => (format!("{task}/{file} (default)"), (*default).to_string()),
            };
            // Editors add a final newline; it is not part of the message.
            let text = text.trim_end_matches(['\n', '\r']);
            parsed.push(Template::parse(&origin, text, &known_all)?);
            texts.push(text.to_owned());
        }
        let mut it = parsed.into_iter();
        let mut next = || it.next().unwrap_or(Template { segments: vec![] });
        Ok(Self {
            system: next(),
            attempt: next(),
            reflect: next(),
            retry: next(),
            include_reason: options.include_reason,
            retry_without_attempt: options.retry_without_attempt,
            texts,
        })
    }

    /// The optional system message followed by the attempt request.
    pub fn attempt_messages(&self, vars: &[(&str, &str)]) -> Vec<Message> {
        let mut msgs = Vec::with_capacity(6);
        if !self.system.is_empty() {
            msgs.push(Message::new(Role::System, self.system.render(vars)));
        }
        msgs.push(Message::new(Role::User, self.attempt.render(vars)));
        msgs
    }

    /// Attempt conversation, the model's attempt, and the reflection request.
    pub fn reflection_messages(
        &self,
        vars: &[(&str, &str)],
        attempt: &str,
        verdict: &Verdict,
    ) -> Vec<Message> {
        let feedback = if self.include_reason {
            format!(" (checker: {})", verdict.reason)
        } else {
            String::new()
        };
        let mut all: Vec<(&str, &str)> = vars.to_vec();
        all.push(("feedback", &feedback));
        let mut msgs = self.attempt_messages(vars);
        msgs.push(Message::new(Role::Assistant, attempt));
        msgs.push(Message::new(Role::User, self.reflect.render(&all)));
        msgs
    }

    /// Reflection conversation, the reflection, and the retry request (same conversation, as in
    /// the paper); with `retry_without_attempt`, the attempt request, the reflection and the retry
    /// request only. `verdict` is only needed when the reason is included; callers recompute it
    /// deterministically.
    pub fn retry_messages(
        &self,
        vars: &[(&str, &str)],
        attempt: &str,
        verdict: &dyn Fn() -> Verdict,
        reflection: &str,
    ) -> Vec<Message> {
        let v = if self.include_reason {
            verdict()
        } else {
            Verdict::fail("")
        };
        let mut msgs = if self.retry_without_attempt {
            self.attempt_messages(vars)
        } else {
            self.reflection_messages(vars, attempt, &v)
        };
        msgs.push(Message::new(Role::Assistant, reflection));
        msgs.push(Message::new(Role::User, self.retry.render(vars)));
        msgs
    }

    pub fn include_reason(&self) -> bool {
        self.include_reason
    }

    /// The template texts in use (by file name) and the reflection option, as JSON: what a run
    /// fingerprints so an edited template is noticed on resume.
    pub fn identity(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for (file, text) in TEMPLATE_FILES.iter().zip(&self.texts) {
            map.insert((*file).to_owned(), serde_json::Value::String(text.clone()));
        }
        map.insert(
            "include_reason".into(),
            serde_json::Value::Bool(self.include_reason),
        );
        // Only when set, so the fingerprints of runs made before the option are unchanged.
        if self.retry_without_attempt {
            map.insert(
                "retry_without_attempt".into(),
                serde_json::Value::Bool(true),
            );
        }
        serde_json::Value::Object(map)
    }
}
