//! Model dimensions the engine needs, read from an exported folder's `genai_config.json`.

use crate::engine::EngineError;
use std::path::Path;

/// Model dimensions read from `genai_config.json`.
#[derive(Debug, Clone)]
pub struct ModelDims {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub context: usize,
    pub eos: Vec<u32>,
}

impl ModelDims {
    pub fn load(dir: &Path) -> Result<Self, EngineError> {
        let path = dir.join("genai_config.json");
        let bad = |what: String| EngineError::Model {
            path: path.clone(),
            what,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let m = &v["model"];
        let num = |x: &serde_json::Value, what: &str| {
            x.as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| bad(format!("missing {what}")))
        };
        let eos = match &m["eos_token_id"] {
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_u64())
                .map(|x| x as u32)
                .collect(),
            x => x.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        };
        Ok(Self {
            layers: num(
                &m["decoder"]["num_hidden_layers"],
                "model.decoder.num_hidden_layers",
            )?,
            kv_heads: num(
                &m["decoder"]["num_key_value_heads"],
                "model.decoder.num_key_value_heads",
            )?,
            head_dim: num(&m["decoder"]["head_size"], "model.decoder.head_size")?,
            vocab: num(&m["vocab_size"], "model.vocab_size")?,
            context: num(&m["context_length"], "model.context_length")?,
            eos,
        })
    }
}
