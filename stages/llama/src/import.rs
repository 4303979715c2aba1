//! `import`: turn a GGUF file or a Hugging Face directory into this project's model directory
//! (`config.json`, `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`,
//! `generation_config.json`), written atomically.

use crate::llama::{Llama, LoadError};
use crate::weights::{self, RawTensor, WeightsError};
use flywheel_model::atomic::{self, AtomicDirError};
use flywheel_model::chat::{ChatError, ChatTemplate};
use flywheel_model::config::{ConfigError, ModelConfig};
use flywheel_model::gguf::{Gguf, GgufError, TensorInfo};
use flywheel_model::tokenizer::{self, TokenizerError};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Output(#[from] AtomicDirError),
    #[error("{path}: unsupported GGUF architecture {arch:?} (supported: llama, qwen2)")]
    Architecture { path: PathBuf, arch: String },
    #[error("{path}: tensor `{tensor}`: {what}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        what: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a directory (expected a Hugging Face model directory)")]
    NotADirectory { path: PathBuf },
}

/// What an import did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportReport {
    pub source: PathBuf,
    pub out: PathBuf,
    pub architecture: String,
    pub layers: usize,
    pub parameters: u64,
    pub tensors: usize,
    pub vocab_size: usize,
    pub seconds: f64,
}

/// Maps a llama.cpp tensor name to its Hugging Face name.
fn hf_name(name: &str) -> Option<String> {
    let fixed = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_owned());
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, suffix) = rest.rsplit_once('.')?;
    let hf = match module {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// Undoes llama.cpp's Q/K row permutation: GGUF stores each head's rotary pairs interleaved
/// (rows `2i, 2i+1`); Hugging Face stores the two halves one after the other (rows `i, i+d/2`).
fn unpermute_rows(data: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let head_rows = rows / heads;
    let half = head_rows / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for t in 0..2 {
                let src = h * head_rows + 2 * i + t;
                let dst = h * head_rows + t * half + i;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

fn config_from_gguf(g: &Gguf, vocab_len: usize) -> Result<ModelConfig, ImportError> {
    let arch = g.str("general.architecture")?.to_owned();
    let (architecture, model_type) = match arch.as_str() {
        "llama" => ("LlamaForCausalLM", "llama"),
        "qwen2" => ("Qwen2ForCausalLM", "qwen2"),
        _ => {
            return Err(ImportError::Architecture {
                path: g.path.clone(),
                arch,
            })
        }
    };
    let key = |k: &str| format!("{arch}.{k}");
    let heads = g.u64(&key("attention.head_count"))? as usize;
    let hidden = g.u64(&key("embedding_length"))? as usize;
    let head_dim = g
        .get(&key("attention.key_length"))
        .and_then(|v| v.as_u64())
        .map(|v| v as usize);
    let get_u64 = |k: &str| g.get(&key(k)).and_then(|v| v.as_u64());
    let tensor = |n: &str| g.tensor(n).is_some();
    let cfg = ModelConfig {
        architectures: vec![architecture.into()],
        model_type: model_type.into(),
        vocab_size: get_u64("vocab_size").map_or(vocab_len, |v| v as usize),
        hidden_size: hidden,
        intermediate_size: g.u64(&key("feed_forward_length"))? as usize,
        num_hidden_layers: g.u64(&key("block_count"))? as usize,
        num_attention_heads: heads,
        num_key_value_heads: Some(get_u64("attention.head_count_kv").map_or(heads, |v| v as usize)),
        head_dim: head_dim.filter(|&d| heads > 0 && d != hidden / heads),
        rms_norm_eps: g.f64(&key("attention.layer_norm_rms_epsilon"))?,
        rope_theta: g
            .get(&key("rope.freq_base"))
            .and_then(|v| v.as_f64())
            .unwrap_or(10_000.0),
        rope_scaling: None,
        rope_parameters: None,
        max_position_embeddings: get_u64("context_length").unwrap_or(2048),
        tie_word_embeddings: !tensor("output.weight"),
        attention_bias: model_type == "llama" && tensor("blk.0.attn_q.bias"),
        mlp_bias: None,
        bos_token_id: g
            .get("tokenizer.ggml.bos_token_id")
            .and_then(|v| v.as_u64())
            .map(|v| v as i64),
        eos_token_id: g
            .get("tokenizer.ggml.eos_token_id")
            .and_then(|v| v.as_u64())
            .map(|v| json!(v)),
        pad_token_id: g
            .get("tokenizer.ggml.padding_token_id")
            .and_then(|v| v.as_u64())
            .map(|v| v as i64),
        hidden_act: "silu".into(),
        torch_dtype: "float32".into(),
    };
    if tensor("rope_freqs.weight") {
        return Err(ImportError::Tensor {
            path: g.path.clone(),
            tensor: "rope_freqs.weight".into(),
            what: "Llama 3 rope scaling stored as a frequency tensor is not supported; import the Hugging Face directory instead".into(),
        });
    }
    cfg.validate(&g.path)?;
    Ok(cfg)
}

/// Expected Hugging Face shape of each tensor the config implies.
fn expected_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (q, kv) = (
        cfg.num_attention_heads * cfg.head_dim(),
        cfg.kv_heads() * cfg.head_dim(),
    );
    let mut out = vec![
        ("model.embed_tokens.weight".into(), vec![v, h]),
        ("model.norm.weight".into(), vec![h]),
    ];
    if !cfg.tie_word_embeddings {
        out.push(("lm_head.weight".into(), vec![v, h]));
    }
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        out.push((format!("{p}.input_layernorm.weight"), vec![h]));
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        for (n, rows, cols) in [
            ("q_proj", q, h),
            ("k_proj", kv, h),
            ("v_proj", kv, h),
            ("o_proj", h, q),
        ] {
            out.push((format!("{p}.self_attn.{n}.weight"), vec![rows, cols]));
        }
        if cfg.qkv_bias() {
            out.extend(
                [("q_proj", q), ("k_proj", kv), ("v_proj", kv)]
                    .map(|(n, r)| (format!("{p}.self_attn.{n}.bias"), vec![r])),
            );
        }
        if cfg.o_bias() {
            out.push((format!("{p}.self_attn.o_proj.bias"), vec![h]));
        }
        for (n, rows, cols) in [("gate_proj", i, h), ("up_proj", i, h), ("down_proj", h, i)] {
            out.push((format!("{p}.mlp.{n}.weight"), vec![rows, cols]));
        }
    }
    out
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), ImportError> {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    std::fs::write(path, text + "\n").map_err(|source| ImportError::Io {
        path: path.to_owned(),
        source,
    })
}

fn generation_config(cfg: &ModelConfig) -> serde_json::Value {
    json!({
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "do_sample": false,
    })
}

fn dequantize_all(g: &Gguf, cfg: &ModelConfig) -> Result<Vec<RawTensor>, ImportError> {
    let permute = cfg.model_type == "llama";
    let mut out = Vec::with_capacity(g.tensors.len());
    for info in &g.tensors {
        let name = hf_name(&info.name).ok_or_else(|| ImportError::Tensor {
            path: g.path.clone(),
            tensor: info.name.clone(),
            what: "unknown tensor name for this architecture".into(),
        })?;
        let values = g.dequantize(info)?;
        let shape = TensorInfo::shape(info);
        let values = match (permute, name.rsplit('.').nth(1)) {
            (true, Some("q_proj")) => reshape_qk(&values, &shape, cfg.num_attention_heads),
            (true, Some("k_proj")) => reshape_qk(&values, &shape, cfg.kv_heads()),
            _ => values,
        };
        out.push(RawTensor::f32(name, shape, &values));
    }
    Ok(out)
}

fn reshape_qk(values: &[f32], shape: &[usize], heads: usize) -> Vec<f32> {
    let rows = shape[0];
    let cols = shape.get(1).copied().unwrap_or(1);
    unpermute_rows(values, rows, cols, heads)
}

/// Imports a GGUF file (Llama or Qwen2 architecture, byte-level BPE tokenizer).
pub fn import_gguf(gguf: &Path, out: &Path, replace: bool) -> Result<ImportReport, ImportError> {
    let start = Instant::now();
    if out.exists() && !replace {
        return Err(AtomicDirError::Exists {
            path: out.to_owned(),
        }
        .into());
    }
    let g = Gguf::open(gguf)?;
    let (tok, specials) = tokenizer::from_gguf(&g)?;
    let cfg = config_from_gguf(&g, tok.get_vocab_size(true))?;
    let tensors = dequantize_all(&g, &cfg)?;
    for (name, shape) in expected_shapes(&cfg) {
        match tensors.iter().find(|t| t.name == name) {
            None => {
                return Err(ImportError::Tensor {
                    path: gguf.to_owned(),
                    tensor: name,
                    what: "missing".into(),
                })
            }
            Some(t) if t.shape != shape => {
                return Err(ImportError::Tensor {
                    path: gguf.to_owned(),
                    tensor: name,
                    what: format!("shape {:?}, the metadata implies {shape:?}", t.shape),
                })
            }
            Some(_) => {}
        }
    }
    let parameters = tensors
        .iter()
        .map(|t| t.shape.iter().product::<usize>() as u64)
        .sum();
    let n_tensors = tensors.len();
    atomic::write_dir(out, replace, |dir| -> Result<(), ImportError> {
        write_json(
            &dir.join("config.json"),
            &serde_json::to_value(&cfg).unwrap_or_default(),
        )?;
        weights::save(&dir.join("model.safetensors"), &tensors)?;
        tokenizer::save(&tok, &dir.join("tokenizer.json"))?;
        write_json(
            &dir.join("tokenizer_config.json"),
            &tokenizer::tokenizer_config(&specials, cfg.max_position_embeddings),
        )?;
        write_json(
            &dir.join("generation_config.json"),
            &generation_config(&cfg),
        )?;
        Ok(())
    })?;
    Ok(ImportReport {
        source: gguf.to_owned(),
        out: out.to_owned(),
        architecture: cfg.architectures[0].clone(),
        layers: cfg.num_hidden_layers,
        parameters,
        tensors: n_tensors,
        vocab_size: cfg.vocab_size,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Imports a Hugging Face model directory after validating every file it needs: the config, the
/// weights (loaded into the tch model, so names and shapes are checked), the tokenizer and the
/// chat template. Files are copied as they are.
pub fn import_hf(src: &Path, out: &Path, replace: bool) -> Result<ImportReport, ImportError> {
    let start = Instant::now();
    if out.exists() && !replace {
        return Err(AtomicDirError::Exists {
            path: out.to_owned(),
        }
        .into());
    }
    if !src.is_dir() {
        return Err(ImportError::NotADirectory {
            path: src.to_owned(),
        });
    }
    let cfg = ModelConfig::load(src)?;
    let model = Llama::load(src, tch::Device::Cpu, tch::Kind::Float)?;
    let parameters = model
        .vs
        .variables()
        .values()
        .map(|t| t.numel() as u64)
        .sum();
    let n_tensors = model.vs.variables().len();
    drop(model);
    let tok = tokenizer::load(src)?;
    ChatTemplate::load(src)?;
    let mut files: Vec<PathBuf> = weights::files(src)?;
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors.index.json",
        "special_tokens_map.json",
        "generation_config.json",
    ] {
        let p = src.join(f);
        if p.is_file() && !files.contains(&p) {
            files.push(p);
        }
    }
    atomic::write_dir(out, replace, |dir| -> Result<(), ImportError> {
        for f in &files {
            let name = f.file_name().map(PathBuf::from).unwrap_or_default();
            std::fs::copy(f, dir.join(&name)).map_err(|source| ImportError::Io {
                path: f.clone(),
                source,
            })?;
        }
        if !src.join("generation_config.json").is_file() {
            write_json(
                &dir.join("generation_config.json"),
                &generation_config(&cfg),
            )?;
        }
        Ok(())
    })?;
    Ok(ImportReport {
        source: src.to_owned(),
        out: out.to_owned(),
        architecture: cfg.architectures[0].clone(),
        layers: cfg.num_hidden_layers,
        parameters,
        tensors: n_tensors,
        vocab_size: tok.get_vocab_size(true).max(cfg.vocab_size),
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // llama.cpp: w.reshape(heads, 2, d/2, cols).swapaxes(1, 2) — computed here by hand for
        // 1 head, 4 rows, 1 column: HF rows [a0, a1, b0, b1] are stored as [a0, b0, a1, b1].
        let gguf = [10.0, 20.0, 11.0, 21.0];
        assert_eq!(unpermute_rows(&gguf, 4, 1, 1), vec![10.0, 11.0, 20.0, 21.0]);
        // 2 heads, 2 columns: each head is permuted separately.
        let gguf = [
            1., 1., 3., 3., 2., 2., 4., 4., 5., 5., 7., 7., 6., 6., 8., 8.,
        ];
        assert_eq!(
            unpermute_rows(&gguf, 8, 2, 2),
            vec![1., 1., 2., 2., 3., 3., 4., 4., 5., 5., 6., 6., 7., 7., 8., 8.]
        );
    }

    #[test]
    fn tensor_names_map_to_hugging_face() {
        assert_eq!(
            hf_name("blk.12.attn_q.weight").as_deref(),
            Some("model.layers.12.self_attn.q_proj.weight")
        );
        assert_eq!(
            hf_name("blk.0.attn_k.bias").as_deref(),
            Some("model.layers.0.self_attn.k_proj.bias")
        );
        assert_eq!(
            hf_name("blk.3.ffn_down.weight").as_deref(),
            Some("model.layers.3.mlp.down_proj.weight")
        );
        assert_eq!(
            hf_name("token_embd.weight").as_deref(),
            Some("model.embed_tokens.weight")
        );
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }
}
