//! Helpers shared by the integration tests: fixture loading and tensor comparison.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

/// Reads every tensor of a safetensors fixture.
pub fn read_safetensors(path: &Path) -> std::collections::BTreeMap<String, Tensor> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("fixture is valid safetensors");
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            let kind = match v.dtype() {
                safetensors::Dtype::F32 => Kind::Float,
                safetensors::Dtype::I64 => Kind::Int64,
                d => panic!("unexpected fixture dtype {d:?}"),
            };
            let shape: Vec<i64> = v.shape().iter().map(|&d| d as i64).collect();
            (name, Tensor::from_data_size(v.data(), &shape, kind))
        })
        .collect()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

/// Positions `0..n` for one row, as `[1, n]`.
pub fn positions(n: i64) -> Tensor {
    Tensor::arange(n, (Kind::Int64, tch::Device::Cpu)).unsqueeze(0)
}
