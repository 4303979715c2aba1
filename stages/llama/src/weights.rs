//! Safetensors I/O with Hugging Face tensor names: validated reading (single file or sharded
//! index) into tch tensors, and writing from plain buffers or tch tensors.

use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid safetensors file: {source}")]
    Format {
        path: PathBuf,
        source: safetensors::SafeTensorError,
    },
    #[error("{path}: invalid shard index: {what}")]
    Index { path: PathBuf, what: String },
    #[error("{path}: tensor `{tensor}` has dtype {dtype:?}; supported: F32, F16, BF16")]
    Dtype {
        path: PathBuf,
        tensor: String,
        dtype: Dtype,
    },
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        source: safetensors::SafeTensorError,
    },
    #[error("tensor `{tensor}`: {source}")]
    Torch {
        tensor: String,
        source: tch::TchError,
    },
    #[error("{dir}: no model.safetensors or model.safetensors.index.json")]
    NoWeights { dir: PathBuf },
}

/// Every tensor of a model directory, by Hugging Face name, on the CPU in its stored dtype.
pub struct Weights {
    pub tensors: BTreeMap<String, (PathBuf, Tensor)>,
}

fn kind_of(path: &Path, name: &str, dtype: Dtype) -> Result<Kind, WeightsError> {
    match dtype {
        Dtype::F32 => Ok(Kind::Float),
        Dtype::F16 => Ok(Kind::Half),
        Dtype::BF16 => Ok(Kind::BFloat16),
        dtype => Err(WeightsError::Dtype {
            path: path.to_owned(),
            tensor: name.to_owned(),
            dtype,
        }),
    }
}

/// The safetensors files of a model directory: `model.safetensors` or the shards an index names.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>, WeightsError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.is_file() {
        return Err(WeightsError::NoWeights {
            dir: dir.to_owned(),
        });
    }
    let text = std::fs::read_to_string(&index).map_err(|source| WeightsError::Io {
        path: index.clone(),
        source,
    })?;
    let bad = |what: &str| WeightsError::Index {
        path: index.clone(),
        what: what.to_owned(),
    };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no weight_map object"))?;
    let mut shards: Vec<PathBuf> = Vec::new();
    for v in map.values() {
        let f = v
            .as_str()
            .ok_or_else(|| bad("weight_map value is not a string"))?;
        if f.contains('/') || f.contains("..") {
            return Err(bad(&format!("shard name {f:?} leaves the directory")));
        }
        let p = dir.join(f);
        if !shards.contains(&p) {
            shards.push(p);
        }
    }
    shards.sort();
    Ok(shards)
}

impl Weights {
    /// Loads every tensor of the directory's safetensors file(s), validating each header.
    pub fn load_dir(dir: &Path) -> Result<Self, WeightsError> {
        Self::load_files(&files(dir)?)
    }

    /// Loads every tensor of the given safetensors files, validating each header.
    pub fn load_files(files: &[PathBuf]) -> Result<Self, WeightsError> {
        let mut tensors = BTreeMap::new();
        for file in files {
            let bytes = std::fs::read(file).map_err(|source| WeightsError::Io {
                path: file.clone(),
                source,
            })?;
            let st = SafeTensors::deserialize(&bytes).map_err(|source| WeightsError::Format {
                path: file.clone(),
                source,
            })?;
            for (name, view) in st.tensors() {
                let kind = kind_of(file, &name, view.dtype())?;
                let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
                let t = Tensor::f_from_data_size(view.data(), &shape, kind).map_err(|source| {
                    WeightsError::Torch {
                        tensor: name.clone(),
                        source,
                    }
                })?;
                tensors.insert(name, (file.clone(), t));
            }
        }
        Ok(Self { tensors })
    }
}

/// A named tensor ready to be written: row-major shape and little-endian bytes.
pub struct RawTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    pub data: Vec<u8>,
}

impl RawTensor {
    pub fn f32(name: impl Into<String>, shape: Vec<usize>, values: &[f32]) -> Self {
        Self {
            name: name.into(),
            shape,
            dtype: Dtype::F32,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// Copies a tch tensor (any device) in its own dtype (f32, f16 or bf16).
    pub fn from_tensor(name: impl Into<String>, t: &Tensor) -> Result<Self, WeightsError> {
        let name = name.into();
        let t = t.to_device(tch::Device::Cpu).contiguous();
        let dtype = match t.kind() {
            Kind::Float => Dtype::F32,
            Kind::Half => Dtype::F16,
            Kind::BFloat16 => Dtype::BF16,
            other => {
                return Err(WeightsError::Torch {
                    tensor: name,
                    source: tch::TchError::Kind(format!("unsupported kind {other:?}")),
                })
            }
        };
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let numel = t.numel();
        let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut data, numel)
            .map_err(|source| WeightsError::Torch {
                tensor: name.clone(),
                source,
            })?;
        Ok(Self {
            name,
            shape,
            dtype,
            data,
        })
    }
}

/// Writes tensors to one safetensors file (sorted by name; `format: pt` metadata like transformers).
pub fn save(path: &Path, tensors: &[RawTensor]) -> Result<(), WeightsError> {
    let mut views = Vec::with_capacity(tensors.len());
    for t in tensors {
        let view = safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.data)
            .map_err(|source| WeightsError::Write {
                path: path.to_owned(),
                source,
            })?;
        views.push((t.name.clone(), view));
    }
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(meta), path).map_err(|source| WeightsError::Write {
        path: path.to_owned(),
        source,
    })
}
