//! The embedded default model, SmolLM2-135M-Instruct, imported from its GGUF by `flywheel import`
//! and checked against transformers loading the same GGUF (fixtures made by
//! `tests/fixtures/make_smollm2_fixtures.py`): tokenizer ids, logits, cached decoding, greedy text.

mod common;

use common::{cached_vs_full_max_diff, fixtures, max_abs_diff, positions, read_safetensors};
use flywheel::commands::import::{run, ImportArgs};
use flywheel_llama::Llama;
use flywheel_model::tokenizer;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use tch::{Device, Kind, Tensor};

/// Imports once per test binary (about 100 MB of GGUF → 540 MB f32 safetensors).
fn model_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("tempdir").keep();
        let out = tmp.join("smollm2");
        let report = run(&ImportArgs {
            gguf: None,
            hf: None,
            out: out.clone(),
            force: false,
        })
        .expect("importing the embedded SmolLM2 GGUF (run .ci/setup first)");
        assert_eq!(report.layers, 30);
        assert_eq!(report.vocab_size, 49152);
        out
    })
}

fn model() -> &'static Mutex<Llama> {
    static MODEL: OnceLock<Mutex<Llama>> = OnceLock::new();
    MODEL.get_or_init(|| {
        Mutex::new(Llama::load(model_dir(), Device::Cpu, Kind::Float).expect("load imported model"))
    })
}

#[test]
fn imported_directory_has_hugging_face_layout() {
    let dir = model_dir();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap_or_default())
            .unwrap_or_default();
    assert_eq!(cfg["architectures"][0], "LlamaForCausalLM");
    assert_eq!(cfg["num_key_value_heads"], 3);
    assert_eq!(cfg["rope_theta"], 100000.0);
    assert_eq!(cfg["tie_word_embeddings"], true);
    let tc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap_or_default(),
    )
    .unwrap_or_default();
    assert!(tc["chat_template"]
        .as_str()
        .unwrap_or_default()
        .contains("<|im_start|>"));
    assert_eq!(tc["eos_token"], "<|im_end|>");
    // No temporary directory left beside the output.
    let leftovers: Vec<_> = std::fs::read_dir(dir.parent().unwrap_or(dir))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "leftover temporary entries: {leftovers:?}"
    );
}

#[test]
fn tokenizer_matches_transformers_on_fixture_strings() {
    let tok = tokenizer::load(model_dir()).expect("tokenizer.json");
    let text = std::fs::read_to_string(fixtures().join("smollm2_tokenizer.json")).expect("fixture");
    let fixture: serde_json::Value = serde_json::from_str(&text).expect("fixture json");
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(cases.len() >= 30);
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect()
    };
    for case in cases {
        let s = case["text"].as_str().expect("text");
        assert_eq!(
            tokenizer::encode(&tok, s, false).expect("encode"),
            ids(&case["ids"]),
            "ids differ for {s:?}"
        );
        assert_eq!(
            tokenizer::encode(&tok, s, true).expect("encode"),
            ids(&case["ids_with_special"]),
            "ids with specials differ for {s:?}"
        );
        // Byte-level BPE round-trips any text.
        let back = tokenizer::decode(&tok, &ids(&case["ids"]), false).expect("decode");
        assert_eq!(back, s);
    }
}

/// GGUF files name the split their merges were learned with (`tokenizer.ggml.pre`); the same
/// vocabulary with Llama 3, Qwen2, Tekken and GPT-4o splits gives transformers' ids for each
/// (fixture: `tests/fixtures/make_gguf_pre_fixtures.py`).
#[test]
fn gguf_pre_tokenizer_splits_match_transformers() {
    let mut g = flywheel_model::gguf::Gguf::open(&flywheel_model::paths::default_gguf())
        .expect("embedded GGUF (run .ci/setup)");
    let text =
        std::fs::read_to_string(fixtures().join("gguf_pre_tokenizer.json")).expect("fixture");
    let fixture: serde_json::Value = serde_json::from_str(&text).expect("fixture json");
    let splits = fixture["splits"].as_object().expect("splits");
    assert_eq!(splits.len(), 4);
    for (pre, cases) in splits {
        g.metadata.insert(
            "tokenizer.ggml.pre".into(),
            flywheel_model::gguf::Value::String(pre.clone()),
        );
        let (tok, _) = tokenizer::from_gguf(&g).expect("tokenizer");
        for case in cases.as_array().expect("cases") {
            let s = case["text"].as_str().expect("text");
            let want: Vec<u32> = case["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .filter_map(|x| x.as_u64())
                .map(|x| x as u32)
                .collect();
            assert_eq!(
                tokenizer::encode(&tok, s, false).expect("encode"),
                want,
                "{pre}: ids differ for {s:?}"
            );
        }
    }
}

#[test]
fn logits_match_transformers_within_1e3() {
    let _g = tch::no_grad_guard();
    let model = model().lock().unwrap_or_else(|e| e.into_inner());
    let fx = read_safetensors(&fixtures().join("smollm2_logits.safetensors"));
    for i in 0..3 {
        let ids = fx[&format!("prompt{i}.input_ids")].unsqueeze(0);
        let s = ids.size()[1];
        let logits = model
            .forward(
                &ids,
                &positions(s),
                &Tensor::ones([1, s], (Kind::Int64, Device::Cpu)),
                None,
            )
            .get(0);
        let strided = logits.slice(1, 0, None, 8);
        let d1 = max_abs_diff(&strided, &fx[&format!("prompt{i}.logits_stride8")]);
        let d2 = max_abs_diff(&logits.get(s - 1), &fx[&format!("prompt{i}.logits_last")]);
        eprintln!("prompt {i}: {s} tokens, max |Δlogit| {:.2e}", d1.max(d2));
        assert!(
            d1 < 1e-3 && d2 < 1e-3,
            "prompt {i}: max |Δlogit| stride8 {d1}, last row {d2}"
        );
    }
}

#[test]
fn cached_decoding_matches_full_forward_and_transformers_greedy() {
    let _g = tch::no_grad_guard();
    let model = model().lock().unwrap_or_else(|e| e.into_inner());
    let fx = read_safetensors(&fixtures().join("smollm2_logits.safetensors"));
    for i in 0..3 {
        let prompt: Vec<i64> =
            Vec::<i64>::try_from(&fx[&format!("prompt{i}.input_ids")]).expect("ids");
        let want: Vec<i64> =
            Vec::<i64>::try_from(&fx[&format!("prompt{i}.greedy")]).expect("greedy");
        let out =
            flywheel_llama::generate::greedy(&model, &prompt, want.len(), &model.config.eos_ids());
        assert_eq!(
            out.tokens, want,
            "prompt {i}: greedy tokens differ from transformers"
        );
        // Full forward over prompt + generated text equals the logits the cache produced.
        let all: Vec<i64> = prompt.iter().chain(&out.tokens).copied().collect();
        let ids = Tensor::from_slice(&all).unsqueeze(0);
        let (worst, _) = cached_vs_full_max_diff(&model, &ids, prompt.len() as i64);
        assert!(
            worst < 1e-3,
            "prompt {i}: cached decode differs from full forward by {worst}"
        );
    }
}
