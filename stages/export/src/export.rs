//! `export`: a model directory → an onnxruntime-genai model folder (`model.onnx`,
//! `model.onnx.data`, `genai_config.json`, tokenizer files), written atomically.

use crate::decoder::{self, GraphError, Ops};
use crate::graph::{Elem, Graph};
use flywheel_llama::llama::{Llama, LoadError};
use flywheel_model::atomic::{self, AtomicDirError};
use flywheel_model::config::ModelConfig;
use prost::Message;
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Output(#[from] AtomicDirError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Floating-point type of the exported weights and activations (logits are always f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportDtype {
    #[default]
    F32,
    F16,
    Bf16,
}

impl ExportDtype {
    pub fn elem(self) -> Elem {
        match self {
            Self::F32 => Elem::F32,
            Self::F16 => Elem::F16,
            Self::Bf16 => Elem::Bf16,
        }
    }
}

/// What to export.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ExportOptions {
    pub dtype: ExportDtype,
    pub ops: Ops,
}

impl ExportOptions {
    pub fn f32() -> Self {
        Self::default()
    }
    pub fn fused() -> Self {
        Self {
            ops: Ops::Fused,
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportReport {
    pub model: PathBuf,
    pub out: PathBuf,
    pub dtype: ExportDtype,
    pub ops: Ops,
    pub nodes: usize,
    pub initializers: usize,
    pub onnx_bytes: u64,
    pub data_bytes: u64,
    pub seconds: f64,
}

/// Files copied from the model directory so the folder is a complete genai model folder.
const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
];

/// `genai_config.json` for onnxruntime-genai (decoder-only, KV cache concatenated, not shared).
pub fn genai_config(cfg: &ModelConfig) -> serde_json::Value {
    let eos = cfg.eos_ids();
    let eos = if eos.len() == 1 {
        json!(eos[0])
    } else {
        json!(eos)
    };
    json!({
        "model": {
            "bos_token_id": cfg.bos_token_id.unwrap_or(0),
            "context_length": cfg.max_position_embeddings,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": "model.onnx",
                "head_size": cfg.head_dim(),
                "hidden_size": cfg.hidden_size,
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "position_ids": "position_ids",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value"
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value"
                },
                "num_attention_heads": cfg.num_attention_heads,
                "num_hidden_layers": cfg.num_hidden_layers,
                "num_key_value_heads": cfg.kv_heads()
            },
            "eos_token_id": eos,
            "pad_token_id": cfg.pad_token_id.or(cfg.eos_ids().first().copied()).unwrap_or(0),
            "type": if cfg.model_type == "qwen2" { "qwen2" } else { "llama" },
            "vocab_size": cfg.vocab_size
        },
        "search": {
            "diversity_penalty": 0.0, "do_sample": false, "early_stopping": true, "length_penalty": 1.0,
            "max_length": cfg.max_position_embeddings, "min_length": 0, "no_repeat_ngram_size": 0,
            "num_beams": 1, "num_return_sequences": 1, "past_present_share_buffer": false,
            "repetition_penalty": 1.0, "temperature": 1.0, "top_k": 1, "top_p": 1.0
        }
    })
}

/// Exports the model directory `model` to `out` (replacing it only with `force`).
pub fn export(
    model: &Path,
    out: &Path,
    options: &ExportOptions,
    force: bool,
) -> Result<ExportReport, ExportError> {
    let ExportOptions { dtype, ops } = *options;
    let start = Instant::now();
    if out.exists() && !force {
        return Err(AtomicDirError::Exists {
            path: out.to_owned(),
        }
        .into());
    }
    let llama = Llama::load(model, Device::Cpu, Kind::Float)?;
    let weights: HashMap<String, tch::Tensor> = llama.vs.variables().into_iter().collect();
    let cfg = llama.config.clone();
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ExportError::Io { path, source }
    };
    let (nodes, initializers, onnx_bytes, data_bytes) =
        atomic::write_dir(out, force, |dir| -> Result<_, ExportError> {
            let data_path = dir.join("model.onnx.data");
            let mut g = Graph::new(&data_path).map_err(io(&data_path))?;
            decoder::build(&mut g, &cfg, &weights, dtype.elem(), ops)?;
            let mut proto = g
                .finish(
                    "flywheel_decoder",
                    &format!("{} exported by flywheel", cfg.architectures.join(",")),
                )
                .map_err(io(&data_path))?;
            if ops == Ops::Fused {
                proto
                    .metadata_props
                    .push(crate::proto::StringStringEntryProto {
                        key: Some(decoder::SHARE_BUFFER_KEY.to_owned()),
                        value: Some("true".to_owned()),
                    });
            }
            let graph = proto.graph.as_ref();
            let counts = (
                graph.map_or(0, |g| g.node.len()),
                graph.map_or(0, |g| g.initializer.len()),
            );
            let bytes = proto.encode_to_vec();
            let onnx_path = dir.join("model.onnx");
            std::fs::write(&onnx_path, &bytes).map_err(io(&onnx_path))?;
            let genai = dir.join("genai_config.json");
            let text = serde_json::to_string_pretty(&genai_config(&cfg)).unwrap_or_default() + "\n";
            std::fs::write(&genai, text).map_err(io(&genai))?;
            for f in TOKENIZER_FILES {
                let src = model.join(f);
                if src.is_file() {
                    std::fs::copy(&src, dir.join(f)).map_err(io(&src))?;
                }
            }
            let data_len = std::fs::metadata(&data_path).map_err(io(&data_path))?.len();
            Ok((counts.0, counts.1, bytes.len() as u64, data_len))
        })?;
    Ok(ExportReport {
        model: model.to_owned(),
        out: out.to_owned(),
        dtype,
        ops,
        nodes,
        initializers,
        onnx_bytes,
        data_bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}
