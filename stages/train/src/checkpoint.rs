//! Training checkpoints: `OUT_DIR/checkpoint/`, replaced atomically as a whole, holding the f32
//! weights (`model.safetensors`, Hugging Face names, with the model's `config.json`), the AdamW
//! moments (`optimizer.safetensors`), the metrics so far and `state.json`: the step, the data order
//! and position, the order's seed, and the run's identity (settings and input hashes) that a
//! resume must match.

use std::path::{Path, PathBuf};

use flywheel_llama::weights::{self, RawTensor, Weights};
use flywheel_model::atomic;
use flywheel_store::StepMetrics;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::TrainError;

/// Directory of the checkpoint inside the output directory.
pub const CHECKPOINT_DIR: &str = "checkpoint";
const STATE_FILE: &str = "state.json";
const WEIGHTS_FILE: &str = "model.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const STATE_VERSION: u32 = 1;

/// Where training stands after a checkpointed step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TrainState {
    /// Format version of this file.
    pub version: u32,
    /// What the run is: settings and input hashes (compared field by field on resume).
    pub identity: serde_json::Value,
    /// Optimizer steps done.
    pub step: u64,
    /// Optimizer steps the run takes in all.
    pub total_steps: u64,
    /// The epoch being read.
    pub epoch: u32,
    /// Examples of that epoch's order already trained on.
    pub position: u64,
    /// The seed the epoch's order was shuffled with (derived from `--seed` and the epoch).
    pub order_seed: u64,
    /// The epoch's order (indices into the concatenated data).
    pub order: Vec<u32>,
}

/// A loaded checkpoint.
pub struct Checkpoint {
    /// Its state.
    pub state: TrainState,
    /// f32 weights by name.
    pub weights: Vec<(String, Tensor)>,
    /// AdamW moments by name.
    pub moments: Vec<(String, Tensor)>,
    /// Metrics of steps `1..=state.step`.
    pub metrics: Vec<StepMetrics>,
}

/// The checkpoint directory of `out`.
pub fn dir(out: &Path) -> PathBuf {
    out.join(CHECKPOINT_DIR)
}

fn raw(named: &[(String, Tensor)]) -> Result<Vec<RawTensor>, TrainError> {
    named
        .iter()
        .map(|(n, t)| RawTensor::from_tensor(n.clone(), t).map_err(TrainError::from))
        .collect()
}

/// Writes the checkpoint atomically: a killed write leaves the previous one in place.
pub fn save(
    out: &Path,
    model_config: &Path,
    state: &TrainState,
    weights: &[(String, Tensor)],
    moments: &[(String, Tensor)],
    metrics: &[StepMetrics],
) -> Result<(), TrainError> {
    let (weights, moments) = (raw(weights)?, raw(moments)?);
    let json = serde_json::to_vec_pretty(state).map_err(|e| TrainError::Internal(e.to_string()))?;
    atomic::write_dir(&dir(out), true, |d| -> Result<(), TrainError> {
        let copy = |from: &Path, to: PathBuf| {
            std::fs::copy(from, &to)
                .map(|_| ())
                .map_err(|source| TrainError::Io { path: to, source })
        };
        copy(model_config, d.join("config.json"))?;
        weights::save(&d.join(WEIGHTS_FILE), &weights)?;
        weights::save(&d.join(OPTIMIZER_FILE), &moments)?;
        flywheel_store::write_metrics(&d.join(flywheel_store::METRICS_FILE), metrics)?;
        let path = d.join(STATE_FILE);
        std::fs::write(&path, &json).map_err(|source| TrainError::Io { path, source })
    })
}

/// Reads the state of `out`'s checkpoint, `None` when there is none.
pub fn load_state(out: &Path) -> Result<Option<TrainState>, TrainError> {
    let path = dir(out).join(STATE_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|source| TrainError::Io {
        path: path.clone(),
        source,
    })?;
    let state: TrainState = serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    if state.version != STATE_VERSION {
        return Err(TrainError::Checkpoint {
            path,
            detail: format!(
                "state version {}, this build reads {STATE_VERSION}",
                state.version
            ),
        });
    }
    Ok(Some(state))
}

/// Loads the whole checkpoint of `out` (its state was read by [`load_state`]).
pub fn load(out: &Path, state: TrainState) -> Result<Checkpoint, TrainError> {
    let d = dir(out);
    let named = |file: &str| -> Result<Vec<(String, Tensor)>, TrainError> {
        let w = Weights::load_files(&[d.join(file)])?;
        Ok(w.tensors.into_iter().map(|(n, (_, t))| (n, t)).collect())
    };
    let metrics = flywheel_store::read_metrics(&d.join(flywheel_store::METRICS_FILE))?;
    if metrics.len() as u64 != state.step {
        return Err(TrainError::Checkpoint {
            path: d,
            detail: format!(
                "{} metrics rows for {} steps done",
                metrics.len(),
                state.step
            ),
        });
    }
    Ok(Checkpoint {
        weights: named(WEIGHTS_FILE)?,
        moments: named(OPTIMIZER_FILE)?,
        metrics,
        state,
    })
}

/// The first field (dotted path, e.g. `settings.lr`) where `found` (a checkpoint's identity)
/// differs from `want` (this invocation's), with both values, or `None` when they agree.
pub fn first_difference(
    want: &serde_json::Value,
    found: &serde_json::Value,
) -> Option<(String, String, String)> {
    diff_at("", want, found)
}

fn diff_at(
    path: &str,
    want: &serde_json::Value,
    found: &serde_json::Value,
) -> Option<(String, String, String)> {
    let (Some(w), Some(f)) = (want.as_object(), found.as_object()) else {
        let name = if path.is_empty() { "identity" } else { path };
        return (want != found).then(|| (name.to_owned(), want.to_string(), found.to_string()));
    };
    let mut keys: Vec<&String> = w.keys().chain(f.keys()).collect();
    keys.sort();
    keys.dedup();
    let absent = serde_json::Value::Null;
    keys.into_iter().find_map(|k| {
        let sub = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        diff_at(
            &sub,
            w.get(k).unwrap_or(&absent),
            f.get(k).unwrap_or(&absent),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_difference_is_named_by_its_path() {
        let a = serde_json::json!({"settings": {"lr": 1e-6, "seed": 1}, "data": [{"rows": 3}]});
        let b = serde_json::json!({"settings": {"lr": 2e-6, "seed": 1}, "data": [{"rows": 3}]});
        assert_eq!(
            first_difference(&a, &b),
            Some(("settings.lr".into(), "1e-6".into(), "2e-6".into()))
        );
        assert_eq!(first_difference(&a, &a), None);
        let c = serde_json::json!({"settings": {"lr": 1e-6, "seed": 1}, "data": [{"rows": 4}]});
        assert_eq!(first_difference(&a, &c).map(|d| d.0), Some("data".into()));
    }
}
