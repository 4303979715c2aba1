//! `flywheel export`: the ONNX decoder computes what the tch model computes (padded batched
//! prefill + 16 cached decode steps), is valid for `onnx.checker` at full check, loads in
//! onnxruntime-genai with identical greedy output, and bad input is refused cleanly.

mod common;

use common::flywheel;
use flywheel::commands::export::{run, DtypeChoice, ExportArgs};
use flywheel_export::parity::ParityReport;
use flywheel_llama::generate::greedy;
use flywheel_llama::{tiny, Llama};
use flywheel_model::chat::ChatTemplate;
use flywheel_model::tokenizer;
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{Device, Kind};

fn args(model: &Path, out: &Path) -> ExportArgs {
    ExportArgs {
        model: model.to_owned(),
        out: Some(out.to_owned()),
        dtype: DtypeChoice::F32,
        fused: false,
        force: false,
        check: true,
        threads: 0,
    }
}

/// Runs the export (with `--check`), prints the figures under `label`, and asserts parity
/// within `bound` with identical greedy choices.
fn export_checked(args: ExportArgs, bound: f64, label: &str) -> ParityReport {
    let report = run(&args).unwrap_or_else(|e| panic!("{label}: {e}"));
    let p = report.parity.expect("parity report");
    eprintln!(
        "{label}: prefill {:.2e} decode {:.2e}, export {:.1} s",
        p.prefill_max_abs_diff, p.decode_max_abs_diff, report.export.seconds
    );
    assert!(
        p.max_abs_diff() < bound && p.greedy_identical,
        "{label}: {p:?}"
    );
    p
}

fn python() -> PathBuf {
    flywheel_model::paths::venv().join("bin").join("python3")
}

fn genai_greedy(onnx_dir: &Path, prompt: &[i64], n: usize) -> Vec<i64> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/genai_greedy.py");
    let mut cmd = Command::new(python());
    cmd.arg(script)
        .arg(onnx_dir)
        .arg(n.to_string())
        .args(prompt.iter().map(i64::to_string));
    let out = cmd.output().expect("run python (run .ci/setup first)");
    assert!(
        out.status.success(),
        "onnxruntime-genai failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("genai output is a JSON list")
}

#[test]
fn tiny_model_export_matches_tch_within_1e4() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = dir.path().join("tiny");
    tiny::create(&m, 5).expect("tiny");
    let out = dir.path().join("onnx");
    let parity = export_checked(args(&m, &out), 1e-4, "tiny");
    assert_eq!(parity.decode_steps, 16);
    assert!(
        parity
            .prompt_lengths
            .iter()
            .any(|&l| l != parity.prompt_lengths[0]),
        "prompts must differ in length to test padding"
    );
    for f in [
        "model.onnx",
        "model.onnx.data",
        "genai_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing from the export");
    }
    let genai: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("genai_config.json")).unwrap_or_default(),
    )
    .expect("json");
    assert_eq!(genai["model"]["decoder"]["num_key_value_heads"], 2);
    assert_eq!(genai["model"]["vocab_size"], 264);
}

/// The fused-operator graph: same parity bound, loads in onnxruntime-genai with the same greedy
/// output, and really is built from ONNX Runtime's fused operators.
#[test]
fn tiny_model_fused_export_matches_tch_and_genai() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = dir.path().join("tiny");
    tiny::create(&m, 5).expect("tiny");
    let out = dir.path().join("onnx");
    let fused = ExportArgs {
        fused: true,
        ..args(&m, &out)
    };
    export_checked(fused, 1e-4, "tiny fused");
    let graph = std::fs::read(out.join("model.onnx")).expect("model.onnx");
    for op in [
        "GroupQueryAttention",
        "RotaryEmbedding",
        "SkipSimplifiedLayerNormalization",
        "com.microsoft",
    ] {
        assert!(
            graph.windows(op.len()).any(|w| w == op.as_bytes()),
            "{op} missing from the fused graph"
        );
    }
    assert!(
        !graph.windows(7).any(|w| w == b"Softmax"),
        "the fused graph still has a standard attention"
    );
    let model = Llama::load(&m, Device::Cpu, Kind::Float).expect("load");
    let prompt: Vec<i64> = (0..19).map(|i| (i * 13 + 5) % 256).collect();
    let ours = greedy(&model, &prompt, 24, &[]).tokens;
    assert_eq!(genai_greedy(&out, &prompt, 24), ours);
}

#[test]
fn fused_export_refuses_an_unsupported_head_size_cleanly() {
    // The variants have head size 8; ONNX Runtime's GroupQueryAttention needs a multiple of 16.
    let dir = tempfile::tempdir().expect("tempdir");
    let src = common::fixtures().join("hf_variants").join("mistral");
    let out = dir.path().join("onnx");
    let err = run(&ExportArgs {
        fused: true,
        ..args(&src, &out)
    })
    .expect_err("head size 8 cannot be fused");
    let msg = err.to_string();
    assert!(
        msg.contains("multiple of 16") && msg.contains("is 8"),
        "{msg}"
    );
    assert!(!out.exists(), "nothing may be left behind");
}

#[test]
fn every_architecture_variant_exports_with_parity() {
    for v in ["llama_untied_bias", "llama3_rope", "qwen2", "mistral"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = common::fixtures().join("hf_variants").join(v);
        export_checked(args(&src, &dir.path().join("onnx")), 1e-4, v);
    }
}

#[test]
fn exported_graph_passes_onnx_full_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = dir.path().join("tiny");
    tiny::create(&m, 2).expect("tiny");
    let out = dir.path().join("onnx");
    run(&ExportArgs {
        check: false,
        ..args(&m, &out)
    })
    .expect("export");
    let code =
        "import onnx, sys; onnx.checker.check_model(sys.argv[1], full_check=True); print('ok')";
    let res = Command::new(python())
        .args(["-c", code])
        .arg(out.join("model.onnx"))
        .output()
        .expect("python");
    assert!(
        res.status.success(),
        "onnx.checker: {}",
        String::from_utf8_lossy(&res.stderr)
    );
}

#[test]
fn onnxruntime_genai_greedy_equals_ours() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = dir.path().join("tiny");
    tiny::create(&m, 9).expect("tiny");
    let out = dir.path().join("onnx");
    run(&ExportArgs {
        check: false,
        ..args(&m, &out)
    })
    .expect("export");
    let model = Llama::load(&m, Device::Cpu, Kind::Float).expect("load");
    let tok = tokenizer::load(&m).expect("tokenizer");
    let prompt: Vec<i64> = ChatTemplate::load(&m)
        .expect("template")
        .encode(
            &tok,
            &[serde_json::json!({"role": "user", "content": "3 7 25 -> 46"})],
            None,
        )
        .expect("encode")
        .into_iter()
        .map(i64::from)
        .collect();
    let ours = greedy(&model, &prompt, 24, &[]).tokens;
    assert_eq!(genai_greedy(&out, &prompt, 24), ours);
}

#[test]
fn smollm2_export_matches_tch_and_genai_on_a_countdown_prompt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = dir.path().join("smollm2");
    flywheel::commands::import::run(&flywheel::commands::import::ImportArgs {
        gguf: None,
        hf: None,
        out: m.clone(),
        force: false,
    })
    .expect("import (run .ci/setup)");
    let out = m.join("onnx");
    let default_out = ExportArgs {
        out: None,
        ..args(&m, &out)
    };
    export_checked(default_out, 1e-3, "smollm2");
    let model = Llama::load(&m, Device::Cpu, Kind::Float).expect("load");
    let tok = tokenizer::load(&m).expect("tokenizer");
    let task = flywheel_datasets::task::load_task("countdown").expect("task");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/data/countdown/test.jsonl");
    let inst = flywheel_datasets::task::read_instances(task.as_ref(), &data)
        .nth(600)
        .expect("instance")
        .expect("valid");
    let prompt: Vec<i64> = ChatTemplate::load(&m)
        .expect("template")
        .encode(&tok, &task.attempt_messages(&inst), None)
        .expect("encode")
        .into_iter()
        .map(i64::from)
        .collect();
    let ours = greedy(&model, &prompt, 32, &model.config.eos_ids()).tokens;
    assert_eq!(
        genai_greedy(&out, &prompt, 32),
        ours,
        "onnxruntime-genai greedy differs from tch"
    );

    let fused = m.join("onnx-fused");
    let fused_args = ExportArgs {
        fused: true,
        ..args(&m, &fused)
    };
    export_checked(fused_args, 1e-3, "smollm2 fused");
    assert_eq!(
        genai_greedy(&fused, &prompt, 32),
        ours,
        "onnxruntime-genai greedy on the fused graph differs from tch"
    );
}

#[test]
fn bad_models_and_existing_output_are_refused_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = dir.path().join("tiny");
    tiny::create(&m, 1).expect("tiny");
    let out = dir.path().join("onnx");
    let (o, md) = (
        out.to_string_lossy().into_owned(),
        m.to_string_lossy().into_owned(),
    );

    // Output exists: refused without --force, contents kept.
    std::fs::create_dir(&out).expect("mkdir");
    std::fs::write(out.join("keep"), "x").expect("write");
    let (code, err) = flywheel(&["export", "--model", &md, "--out", &o]);
    assert!(code != 0 && err.contains("already exists"), "{err}");
    assert!(out.join("keep").is_file());
    std::fs::remove_dir_all(&out).expect("rm");

    // Corrupt safetensors: truncated file.
    let st = m.join("model.safetensors");
    let good = std::fs::read(&st).expect("read");
    std::fs::write(&st, &good[..good.len() / 3]).expect("write");
    let (code, err) = flywheel(&["export", "--model", &md, "--out", &o]);
    assert!(
        code != 0
            && err.contains(&*st.to_string_lossy())
            && err.contains("not a valid safetensors file"),
        "{err}"
    );
    assert!(!out.exists());

    // Foreign safetensors: a valid file with other tensors (a GPT-2 style name).
    let foreign =
        flywheel_llama::weights::RawTensor::f32("transformer.wte.weight", vec![2, 2], &[0.0; 4]);
    flywheel_llama::weights::save(&st, &[foreign]).expect("save");
    let (code, err) = flywheel(&["export", "--model", &md, "--out", &o]);
    assert!(
        code != 0 && err.contains("model.embed_tokens.weight") && err.contains("missing"),
        "{err}"
    );
    assert!(!out.exists());
    std::fs::write(&st, &good).expect("restore");

    // Unsupported architecture.
    let cfg_path = m.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap_or_default())
            .expect("json");
    cfg["architectures"] = serde_json::json!(["PhiForCausalLM"]);
    std::fs::write(&cfg_path, cfg.to_string()).expect("write");
    let (code, err) = flywheel(&["export", "--model", &md, "--out", &o]);
    assert!(
        code != 0 && err.contains("unsupported architecture") && err.contains("PhiForCausalLM"),
        "{err}"
    );
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
