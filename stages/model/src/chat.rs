//! Chat templates: the Jinja `chat_template` of `tokenizer_config.json`, rendered with minijinja
//! (plus Python-compatible string methods), exactly as transformers' `apply_chat_template` would.

use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: no `chat_template`")]
    NoTemplate { path: PathBuf },
    #[error("{path}: chat template: {source}")]
    Template {
        path: PathBuf,
        source: minijinja::Error,
    },
    #[error("{path}: tokenizing the rendered conversation: {message}")]
    Tokenize { path: PathBuf, message: String },
}

/// A model's chat template with the special tokens it refers to.
pub struct ChatTemplate {
    path: PathBuf,
    env: minijinja::Environment<'static>,
    bos_token: String,
    eos_token: String,
}

fn token_str(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        // transformers also writes special tokens as {"content": "...", ...} objects.
        Some(Value::Object(o)) => o
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    }
}

impl ChatTemplate {
    /// Reads `tokenizer_config.json` of a model directory.
    pub fn load(dir: &Path) -> Result<Self, ChatError> {
        let path = dir.join("tokenizer_config.json");
        let text = std::fs::read_to_string(&path).map_err(|source| ChatError::Io {
            path: path.clone(),
            source,
        })?;
        let cfg: Value = serde_json::from_str(&text).map_err(|source| ChatError::Json {
            path: path.clone(),
            source,
        })?;
        let template = match cfg.get("chat_template") {
            Some(Value::String(s)) => s.clone(),
            // A list of named templates: use "default".
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template").and_then(Value::as_str))
                .map(str::to_owned)
                .ok_or_else(|| ChatError::NoTemplate { path: path.clone() })?,
            _ => return Err(ChatError::NoTemplate { path }),
        };
        Self::new(
            path,
            template,
            token_str(&cfg, "bos_token"),
            token_str(&cfg, "eos_token"),
        )
    }

    pub fn new(
        path: PathBuf,
        template: String,
        bos_token: String,
        eos_token: String,
    ) -> Result<Self, ChatError> {
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        // transformers renders with jinja2's trim_blocks and lstrip_blocks on.
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|source| ChatError::Template {
                path: path.clone(),
                source,
            })?;
        env.set_syntax(syntax);
        env.add_template_owned("chat", template)
            .map_err(|source| ChatError::Template {
                path: path.clone(),
                source,
            })?;
        Ok(Self {
            path,
            env,
            bos_token,
            eos_token,
        })
    }

    /// Renders a conversation; `messages` are `{role, content}` objects.
    pub fn render<M: Serialize>(
        &self,
        messages: &[M],
        add_generation_prompt: bool,
        tools: Option<&Value>,
    ) -> Result<String, ChatError> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|source| ChatError::Template {
                path: self.path.clone(),
                source,
            })?;
        let ctx = minijinja::context! {
            messages => minijinja::Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            tools => minijinja::Value::from(minijinja::value::Serde(tools)),
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        };
        tmpl.render(ctx).map_err(|source| ChatError::Template {
            path: self.path.clone(),
            source,
        })
    }

    /// The prompt ids of a conversation: rendered with the generation prompt and tokenized as
    /// Hugging Face's `apply_chat_template(..., tokenize=True)` does, without the tokenizer's
    /// own special tokens (the template writes any BOS itself).
    pub fn encode<M: Serialize>(
        &self,
        tokenizer: &tokenizers::Tokenizer,
        messages: &[M],
        tools: Option<&Value>,
    ) -> Result<Vec<u32>, ChatError> {
        let text = self.render(messages, true, tools)?;
        tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| ChatError::Tokenize {
                path: self.path.clone(),
                message: e.to_string(),
            })
    }
}
