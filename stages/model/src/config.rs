//! `config.json` of a model directory: the Hugging Face fields of the Llama family
//! (Llama 2/3.x, SmolLM2, Mistral, Qwen2/2.5), parsed strictly and validated.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Architectures the tch model implements, as named in `config.json`'s `architectures`.
pub const SUPPORTED_ARCHITECTURES: &[&str] =
    &["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid config: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: unsupported architecture {found:?} (supported: {})", SUPPORTED_ARCHITECTURES.join(", "))]
    Architecture { path: PathBuf, found: Vec<String> },
    #[error("{path}: inconsistent config: {what}")]
    Invalid { path: PathBuf, what: String },
}

/// Llama 3.x `rope_scaling` (`rope_type: "llama3"`); other scaling types are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    #[serde(alias = "type")]
    pub rope_type: String,
    pub factor: f64,
    #[serde(default = "one")]
    pub low_freq_factor: f64,
    #[serde(default = "four")]
    pub high_freq_factor: f64,
    #[serde(default = "eight_k")]
    pub original_max_position_embeddings: u64,
}

fn one() -> f64 {
    1.0
}
fn four() -> f64 {
    4.0
}
fn eight_k() -> u64 {
    8192
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_eps() -> f64 {
    1e-6
}
fn default_max_pos() -> u64 {
    2048
}

/// The fields of a Hugging Face `config.json` this project reads and writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub architectures: Vec<String>,
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Absent in older Llama configs, where it equals `num_attention_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScaling>,
    /// transformers ≥ 5 writes `rope_theta` and the scaling inside `rope_parameters`; folded into
    /// the two fields above on load.
    #[serde(default, skip_serializing)]
    pub rope_parameters: Option<serde_json::Value>,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: u64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// q/k/v (and o) projection biases in Llama configs; Qwen2 always has q/k/v biases.
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_bias: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<i64>,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_dtype")]
    pub torch_dtype: String,
}

fn default_act() -> String {
    "silu".into()
}
fn default_dtype() -> String {
    "float32".into()
}

impl ModelConfig {
    /// Reads and validates `config.json` (a file, or a directory holding one).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let path = if path.is_dir() {
            path.join("config.json")
        } else {
            path.to_owned()
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?;
        Self::from_json(&path, &text)
    }

    pub fn from_json(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let parse = |source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        };
        let mut cfg: Self = serde_json::from_str(text).map_err(parse)?;
        if let Some(rp) = cfg.rope_parameters.take() {
            if let Some(theta) = rp.get("rope_theta").and_then(serde_json::Value::as_f64) {
                cfg.rope_theta = theta;
            }
            let kind = rp
                .get("rope_type")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("default");
            if kind != "default" {
                cfg.rope_scaling = Some(serde_json::from_value(rp).map_err(parse)?);
            }
        }
        cfg.validate(path)?;
        Ok(cfg)
    }

    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        if !self
            .architectures
            .iter()
            .any(|a| SUPPORTED_ARCHITECTURES.contains(&a.as_str()))
        {
            return Err(ConfigError::Architecture {
                path: path.to_owned(),
                found: self.architectures.clone(),
            });
        }
        let invalid = |what: String| {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                what,
            })
        };
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
        ] {
            if v == 0 {
                return invalid(format!("{name} is 0"));
            }
        }
        // Upper bounds far above any released model of this family, so a corrupt or hostile
        // config is refused here instead of sizing allocations (tch variables, the rotary
        // table, per-layer tensor lists) from it.
        for (name, v, max) in [
            ("vocab_size", self.vocab_size, 1 << 22),
            ("hidden_size", self.hidden_size, 1 << 16),
            ("intermediate_size", self.intermediate_size, 1 << 18),
            ("num_hidden_layers", self.num_hidden_layers, 1 << 10),
            ("num_attention_heads", self.num_attention_heads, 1 << 10),
            ("num_key_value_heads", self.kv_heads(), 1 << 10),
            ("head_dim", self.head_dim(), 1 << 10),
            (
                "max_position_embeddings",
                usize::try_from(self.max_position_embeddings).unwrap_or(usize::MAX),
                1 << 23,
            ),
        ] {
            if v > max {
                return invalid(format!("{name} {v} is implausible (at most {max})"));
            }
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return invalid(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return invalid(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return invalid(format!(
                "head_dim {} is odd; rotary embeddings need it even",
                self.head_dim()
            ));
        }
        if self.hidden_act != "silu" {
            return invalid(format!(
                "hidden_act {:?} is not supported (only silu)",
                self.hidden_act
            ));
        }
        if let Some(rs) = &self.rope_scaling {
            if rs.rope_type != "llama3" && rs.rope_type != "default" {
                return invalid(format!(
                    "rope_scaling type {:?} is not supported (llama3, default)",
                    rs.rope_type
                ));
            }
        }
        Ok(())
    }

    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }
    /// Whether q/k/v projections carry a bias (Qwen2 always; Llama when `attention_bias`).
    pub fn qkv_bias(&self) -> bool {
        self.model_type == "qwen2" || self.attention_bias
    }
    /// Whether the output projection carries a bias (Llama `attention_bias` only; never Qwen2).
    pub fn o_bias(&self) -> bool {
        self.model_type != "qwen2" && self.attention_bias
    }
    pub fn mlp_bias(&self) -> bool {
        self.mlp_bias.unwrap_or(false)
    }
    /// End-of-sequence ids (`eos_token_id` may be one id or a list).
    pub fn eos_ids(&self) -> Vec<i64> {
        match &self.eos_token_id {
            Some(serde_json::Value::Number(n)) => n.as_i64().into_iter().collect(),
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_i64()).collect(),
            _ => Vec::new(),
        }
    }

    /// Rotary inverse frequencies, with Llama 3 frequency scaling when configured.
    pub fn inv_freq(&self) -> Vec<f64> {
        let d = self.head_dim();
        let base: Vec<f64> = (0..d / 2)
            .map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / d as f64))
            .collect();
        match &self.rope_scaling {
            Some(rs) if rs.rope_type == "llama3" => {
                let old = rs.original_max_position_embeddings as f64;
                let low_wavelen = old / rs.low_freq_factor;
                let high_wavelen = old / rs.high_freq_factor;
                base.into_iter()
                    .map(|f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / rs.factor
                        } else {
                            let smooth = (old / wavelen - rs.low_freq_factor)
                                / (rs.high_freq_factor - rs.low_freq_factor);
                            (1.0 - smooth) * f / rs.factor + smooth * f
                        }
                    })
                    .collect()
            }
            _ => base,
        }
    }

    /// A small Llama for fast tests: same code path as the real models.
    pub fn tiny(vocab_size: usize) -> Self {
        Self {
            architectures: vec!["LlamaForCausalLM".into()],
            model_type: "llama".into(),
            vocab_size,
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            head_dim: None,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            rope_scaling: None,
            rope_parameters: None,
            max_position_embeddings: 4096,
            tie_word_embeddings: true,
            attention_bias: false,
            mlp_bias: None,
            bos_token_id: None,
            eos_token_id: None,
            pad_token_id: None,
            hidden_act: default_act(),
            torch_dtype: default_dtype(),
        }
    }
}
