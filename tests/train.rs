//! `flywheel train` end to end on the tiny model: generate (on the model's `onnx/` export) →
//! label → train → export `--check`; the trained directory loads in transformers with the same
//! logits; `kill -9` at checkpoints (one of them at an epoch boundary) then a rerun equals an
//! uninterrupted run bit for bit; a finished run is a no-op.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use flywheel::commands::export::{self, ExportArgs};
use flywheel::commands::generate::{self, GenerateArgs};
use flywheel::commands::label;

/// The tiny model with its `onnx/` export, and a `train.parquet` it generated; made once.
fn data() -> &'static (PathBuf, PathBuf) {
    static DATA: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    DATA.get_or_init(|| {
        let root = tempfile::tempdir().expect("tempdir").keep();
        let model = root.join("tiny");
        flywheel_llama::tiny::create(&model, 17).expect("tiny");
        flywheel_export::export(
            &model,
            &model.join("onnx"),
            &flywheel_export::ExportOptions::f32(),
            false,
        )
        .expect("export");
        let run = root.join("run");
        let (task, input) = common::tiny_task();
        let args = GenerateArgs {
            model: model.join("onnx"),
            task: task.display().to_string(),
            input,
            limit: Some(24),
            max_new_tokens: 12,
            seed: 3,
            prefix_cache_mib: 64,
            ..common::tiny_generate_args(&run)
        };
        generate::run(&args).expect("generate");
        let report = label::run(&common::label_args(&run)).expect("label");
        assert!(report.counts.kept >= 8, "{:?}", report.counts);
        (model, run.join("train.parquet"))
    })
}

fn train_cmd(out: &Path, extra: &[&str]) -> Command {
    let (model, data) = data();
    let mut c = Command::new(env!("CARGO_BIN_EXE_flywheel"));
    c.arg("train")
        .arg("--data")
        .arg(data)
        .arg("--model")
        .arg(model)
        .arg("--out")
        .arg(out)
        .args(["--lr", "1e-3", "--batch-size", "3", "--device", "cpu"])
        .args(extra);
    c
}

#[test]
fn trained_model_exports_with_parity_and_loads_in_transformers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let (code, stderr) = {
        let o = train_cmd(&out, &["--steps", "3"]).output().expect("train");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("train: step 3/3 | loss"), "{stderr}");
    assert!(stderr.contains("tokens/s"), "{stderr}");
    let model = out.join("model");
    let report = export::run(&ExportArgs {
        model: model.clone(),
        out: None,
        dtype: export::DtypeChoice::F32,
        fused: false,
        force: false,
        check: true,
        threads: 1,
    })
    .expect("export --check of the trained model");
    assert!(report.parity.expect("checked").greedy_identical);

    // transformers (installed by .ci/setup) must load the directory as it is and agree with tch.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/hf_logits.py");
    let o = Command::new(flywheel_model::paths::venv().join("bin/python3"))
        .arg(&script)
        .arg(&model)
        .output()
        .expect("python");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let hf: Vec<f32> = serde_json::from_slice(&o.stdout).expect("logits json");
    let m = flywheel_llama::Llama::load(&model, tch::Device::Cpu, tch::Kind::Float).expect("load");
    let ids = tch::Tensor::from_slice(&[1i64, 5, 9, 33, 70, 2, 11, 200]).unsqueeze(0);
    let logits = m.forward(&ids, &common::positions(8), &ids.ones_like(), None);
    let ours: Vec<f32> = Vec::try_from(logits.reshape([-1])).expect("logits");
    assert_eq!(ours.len(), hf.len());
    let diff = ours
        .iter()
        .zip(&hf)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "transformers vs tch: max |Δlogit| {diff}");
}

/// Files that must be equal bit for bit, and the metrics without their timing columns.
fn outcome(out: &Path) -> (Vec<u8>, Vec<u8>, Vec<flywheel_store::StepMetrics>) {
    let read = |p: PathBuf| std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut metrics = flywheel_store::read_metrics(&out.join("metrics.parquet")).expect("metrics");
    for m in &mut metrics {
        m.seconds = 0.0;
        m.tokens_per_second = 0.0;
    }
    (
        read(out.join("model/model.safetensors")),
        read(out.join("checkpoint/optimizer.safetensors")),
        metrics,
    )
}

#[test]
fn kill_9_at_checkpoints_then_rerun_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, data) = data();
    let rows = flywheel_store::read_train(data).expect("data").1.len() as u64;
    let per_epoch = rows.div_ceil(3);
    // Checkpoints every epoch: the first kill lands after the checkpoint at the epoch boundary.
    let every = per_epoch.to_string();
    let extra = [
        "--epochs",
        "4",
        "--iterations",
        "2",
        "--checkpoint-every",
        &every,
    ];
    let total = per_epoch * 4 * 2;
    let reference = dir.path().join("reference");
    let o = train_cmd(&reference, &extra).output().expect("reference");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let crashed = dir.path().join("crashed");
    let mut killed_at = Vec::new();
    // Acknowledgement protocol: `train: checkpoint after step N` is printed once checkpoint N is
    // on disk; the child is killed right after reading it.
    for target in [2 * per_epoch, 4 * per_epoch] {
        let mut child = train_cmd(&crashed, &extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let stderr = child.stderr.take().expect("stderr");
        let mut acked = false;
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let Ok(line) = line else { break };
            let step = line
                .strip_prefix("train: checkpoint after step ")
                .and_then(|n| n.parse::<u64>().ok());
            if step.is_some_and(|s| s >= target) {
                acked = true;
                break;
            }
        }
        if acked && child.try_wait().expect("wait").is_none() {
            child.kill().expect("kill -9");
            let _ = child.wait();
            let state: serde_json::Value = serde_json::from_slice(
                &std::fs::read(crashed.join("checkpoint/state.json")).expect("state"),
            )
            .expect("state json");
            killed_at.push(state["step"].as_u64().expect("step"));
        } else {
            let _ = child.wait();
        }
    }
    assert!(
        killed_at
            .iter()
            .any(|&s| s % (2 * per_epoch) == 0 && s < total),
        "no kill after an epoch-boundary checkpoint: {killed_at:?} of {total}"
    );
    eprintln!("killed after checkpoints {killed_at:?} of {total} steps");
    let o = train_cmd(&crashed, &extra).output().expect("final run");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("resumed after step"), "{stderr}");
    let (want, got) = (outcome(&reference), outcome(&crashed));
    assert_eq!(got.2.len() as u64, total);
    assert_eq!(got.2, want.2, "metrics");
    assert!(got.0 == want.0, "trained weights differ");
    assert!(got.1 == want.1, "optimizer moments differ");

    // A finished run is a no-op; other settings are refused by name.
    let o = train_cmd(&crashed, &extra).output().expect("rerun");
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing to do"));
    assert_eq!(outcome(&crashed).0, want.0);
    let o = train_cmd(&crashed, &[&extra[..], &["--seed", "7"]].concat())
        .output()
        .expect("other seed");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("`settings.seed` = 42"), "{stderr}");
}

#[test]
fn readme_documents_every_metrics_parquet_column() {
    common::assert_readme_documents("metrics.parquet", flywheel_store::METRICS_COLUMNS);
}
