//! `flywheel complete`: render a chat prompt with the model's template and continue it greedily
//! with the libtorch model (a smoke test of an imported model, and the pre-stage demo).

use super::{DeviceArg, DtypeArg};
use flywheel_model::chat::{ChatError, ChatTemplate};
use flywheel_model::generate::greedy;
use flywheel_model::llama::{Llama, LoadError};
use flywheel_model::tokenizer::{self, TokenizerError};
use serde_json::json;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct CompleteArgs {
    /// Model directory (as written by `flywheel import`).
    #[arg(long)]
    pub model: PathBuf,
    /// User message to answer.
    #[arg(long)]
    pub prompt: String,
    /// Optional system message (otherwise the chat template's default, if any).
    #[arg(long)]
    pub system: Option<String>,
    /// Maximum number of new tokens.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Device for the libtorch model.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Floating-point type for the libtorch model.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    pub dtype: DtypeArg,
}

#[derive(Debug, thiserror::Error)]
pub enum CompleteError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Chat(#[from] ChatError),
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CompleteReport {
    pub completion: String,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub token_ids: Vec<i64>,
    pub prefill_seconds: f64,
    pub decode_tokens_per_second: f64,
    pub device: String,
}

pub fn run(args: &CompleteArgs) -> Result<CompleteReport, CompleteError> {
    let device = args.device.device();
    let model = Llama::load(&args.model, device, args.dtype.kind())?;
    let tok = tokenizer::load(&args.model)?;
    let template = ChatTemplate::load(&args.model)?;
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.push(json!({"role": "user", "content": args.prompt}));
    let text = template.render(&messages, true, None)?;
    let prompt: Vec<i64> = tokenizer::encode(&tok, &text, true)?
        .into_iter()
        .map(i64::from)
        .collect();
    let out = greedy(
        &model,
        &prompt,
        args.max_new_tokens,
        &model.config.eos_ids(),
    );
    let ids: Vec<u32> = out.tokens.iter().map(|&t| t as u32).collect();
    Ok(CompleteReport {
        completion: tokenizer::decode(&tok, &ids, true)?,
        prompt_tokens: prompt.len(),
        new_tokens: out.tokens.len(),
        token_ids: out.tokens.clone(),
        prefill_seconds: out.prefill_seconds,
        decode_tokens_per_second: out.decode_tokens_per_second(),
        device: format!("{device:?}"),
    })
}
