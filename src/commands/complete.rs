//! `flywheel complete`: render a chat prompt with the model's template and continue it greedily
//! with the libtorch model (a smoke test of an imported model, and the pre-stage demo).

use super::{DeviceArg, DtypeArg};
use flywheel_datasets::task::{
    load_task, read_instances, InstanceError, Message, Role, TaskError, Verdict,
};
use flywheel_llama::generate::greedy;
use flywheel_llama::llama::{Llama, LoadError};
use flywheel_model::chat::{ChatError, ChatTemplate};
use flywheel_model::tokenizer::{self, TokenizerError};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct CompleteArgs {
    /// Model directory (as written by `flywheel import`).
    #[arg(long)]
    pub model: PathBuf,
    /// User message to answer.
    #[arg(long, required_unless_present = "task", conflicts_with = "task")]
    pub prompt: Option<String>,
    /// Task whose first-attempt prompt to use instead of --prompt (`countdown`,
    /// `function_calling`, or a task config path); its verifier then judges the completion.
    #[arg(long, requires = "input")]
    pub task: Option<String>,
    /// Task instances (JSONL, or Parquet for Countdown), with --task.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Which instance of --input to use (0-based).
    #[arg(long, default_value_t = 0)]
    pub index: usize,
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
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Instance(#[from] InstanceError),
    #[error("{path}: has no instance {index}")]
    NoSuchInstance { path: PathBuf, index: usize },
    #[error("{model}: the rendered prompt is empty (chat template and message give no tokens)")]
    EmptyPrompt { model: PathBuf },
    #[error(
        "{model}: the tokenizer gives token id {id}, outside the model's vocabulary of {vocab} \
         (tokenizer.json does not belong to these weights)"
    )]
    TokenOutOfVocab {
        model: PathBuf,
        id: i64,
        vocab: usize,
    },
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
    /// With --task: the instance id and the verifier's verdict on the completion.
    pub instance_id: Option<String>,
    pub verdict: Option<Verdict>,
}

pub fn run(args: &CompleteArgs) -> Result<CompleteReport, CompleteError> {
    let device = args.device.device();
    let model = Llama::load(&args.model, device, args.dtype.kind())?;
    let tok = tokenizer::load(&args.model)?;
    let template = ChatTemplate::load(&args.model)?;
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(Message::new(Role::System, system.as_str()));
    }
    let task = match (&args.task, &args.input) {
        (Some(spec), Some(input)) => {
            let task = load_task(spec)?;
            let inst = read_instances(task.as_ref(), input)
                .nth(args.index)
                .ok_or_else(|| CompleteError::NoSuchInstance {
                    path: input.clone(),
                    index: args.index,
                })??;
            messages.extend(task.attempt_messages(&inst));
            Some((task, inst))
        }
        _ => {
            messages.push(Message::new(
                Role::User,
                args.prompt.clone().unwrap_or_default(),
            ));
            None
        }
    };
    let tools = task.as_ref().and_then(|(t, i)| t.tools(i));
    let prompt: Vec<i64> = template
        .encode(&tok, &messages, tools.as_ref())?
        .into_iter()
        .map(i64::from)
        .collect();
    // The model indexes its embedding with these ids; check them rather than let libtorch abort.
    if prompt.is_empty() {
        return Err(CompleteError::EmptyPrompt {
            model: args.model.clone(),
        });
    }
    let vocab = model.config.vocab_size;
    if let Some(&id) = prompt.iter().find(|&&id| id < 0 || id as usize >= vocab) {
        return Err(CompleteError::TokenOutOfVocab {
            model: args.model.clone(),
            id,
            vocab,
        });
    }
    let out = greedy(
        &model,
        &prompt,
        args.max_new_tokens,
        &model.config.eos_ids(),
    );
    let ids: Vec<u32> = out.tokens.iter().map(|&t| t as u32).collect();
    let completion = tokenizer::decode(&tok, &ids, true)?;
    let verdict = task.as_ref().map(|(t, i)| t.verify(i, &completion));
    Ok(CompleteReport {
        instance_id: task.map(|(_, i)| i.id),
        verdict,
        completion,
        prompt_tokens: prompt.len(),
        new_tokens: out.tokens.len(),
        token_ids: out.tokens.clone(),
        prefill_seconds: out.prefill_seconds,
        decode_tokens_per_second: out.decode_tokens_per_second(),
        device: format!("{device:?}"),
    })
}
