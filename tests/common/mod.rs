//! Helpers shared by the integration tests: fixture loading and tensor comparison.
#![allow(dead_code)]

use flywheel::commands::generate::GenerateArgs;
use flywheel_llama::{KvCache, Llama};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// A tiny model exported to ONNX (standard graph), made once per test binary.
pub fn tiny_onnx() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let root = tempfile::tempdir().expect("tempdir").keep();
        let m = root.join("tiny");
        flywheel_llama::tiny::create(&m, 17).expect("tiny");
        flywheel_export::export(
            &m,
            &root.join("onnx"),
            &flywheel_export::ExportOptions::f32(),
            false,
        )
        .expect("export");
        root.join("onnx")
    })
}

/// `flywheel generate` on the tiny model: the Countdown test split, 30 tasks, G = 4, 24 new
/// tokens at temperature 1, seed 7, batch 8, CPU.
pub fn tiny_generate_args(out: &Path) -> GenerateArgs {
    GenerateArgs {
        model: tiny_onnx().to_owned(),
        task: "countdown".into(),
        input: Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/data/countdown/test.jsonl"),
        limit: Some(30),
        out: out.to_owned(),
        attempts: 1,
        reflections: 4,
        batch_size: 8,
        temperature: 1.0,
        reflection_temperature: None,
        top_p: 1.0,
        top_k: 0,
        max_new_tokens: 24,
        seed: 7,
        shard: None,
        task_flags: Default::default(),
        device: flywheel::commands::DeviceArg::Cpu,
        threads: 1,
        prefix_cache_mib: 1024,
        quiet: true,
    }
}

/// The user task on which the tiny model passes often (a regex verifier), and its data.
pub fn tiny_task() -> (PathBuf, PathBuf) {
    let dir = fixtures().join("tiny_task");
    (dir.join("task.json"), dir.join("data.jsonl"))
}

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

/// Runs the `flywheel` binary; returns its exit code and stderr, and fails the test on a panic.
pub fn flywheel(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flywheel"))
        .args(args)
        .output()
        .expect("run flywheel");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "flywheel panicked: {stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

/// Max |Δlogit| between a full forward over `ids` (`[1, n]`) and the cached path: prefill of the
/// first `p` tokens, then one token at a time through the KV cache. Also returns the cache length.
pub fn cached_vs_full_max_diff(model: &Llama, ids: &Tensor, p: i64) -> (f64, i64) {
    let n = ids.size()[1];
    let ones = |len: i64| Tensor::ones([1, len], (Kind::Int64, Device::Cpu));
    let full = model.forward(ids, &positions(n), &ones(n), None);
    let mut cache = KvCache::new(&model.config);
    let pre = model.forward(
        &ids.narrow(1, 0, p),
        &positions(p),
        &ones(p),
        Some(&mut cache),
    );
    let mut worst = max_abs_diff(&pre, &full.narrow(1, 0, p));
    for t in p..n {
        let step = model.forward(
            &ids.narrow(1, t, 1),
            &Tensor::from_slice(&[t]).unsqueeze(0),
            &ones(t + 1),
            Some(&mut cache),
        );
        worst = worst.max(max_abs_diff(&step, &full.narrow(1, t, 1)));
    }
    (worst, cache.len())
}

/// Fails unless the README contains the Markdown table of `columns` (as `table::markdown` writes
/// it), naming the file the table documents.
pub fn assert_readme_documents(file: &str, columns: &[flywheel_store::Column]) {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README");
    let table = flywheel_store::table::markdown(columns);
    assert!(
        readme.contains(table.trim()),
        "README's {file} table is out of date; it must contain:\n{table}"
    );
}

/// `flywheel label` of one run with the default settings.
pub fn label_args(run: &Path) -> flywheel::commands::label::LabelArgs {
    flywheel::commands::label::LabelArgs {
        runs: vec![run.to_owned()],
        out: None,
        span: flywheel::commands::label::SpanArg::Reflection,
        scale: flywheel::commands::label::ScaleArg::Group,
        keep_zero_std: false,
        drop_truncated: false,
        min_tokens: 1,
        max_tokens: None,
    }
}

/// Replaces `dir/model.safetensors` (through a new file, so a hard link elsewhere keeps the old
/// bytes) with the same weights but a NaN as the first element of `tensor`.
pub fn inject_nan(dir: &Path, tensor: &str) {
    let w = flywheel_llama::weights::Weights::load_dir(dir).expect("weights");
    let tensors: Vec<flywheel_llama::weights::RawTensor> = w
        .tensors
        .iter()
        .map(|(name, (_, t))| {
            let t = t.copy();
            if name == tensor {
                let _ = t.reshape([-1]).get(0).fill_(f64::NAN);
            }
            flywheel_llama::weights::RawTensor::from_tensor(name.clone(), &t).expect("raw")
        })
        .collect();
    let tmp = dir.join("nan.safetensors.tmp");
    flywheel_llama::weights::save(&tmp, &tensors).expect("save");
    std::fs::rename(&tmp, dir.join("model.safetensors")).expect("replace");
}
