//! The tiny test model: deterministic creation, the same load/forward/generate path as a real
//! model, Hugging Face import of a transformers-written checkpoint, and chat template rendering.

mod common;

use flywheel::commands::complete::{run as complete, CompleteArgs};
use flywheel::commands::import::{run as import, ImportArgs};
use flywheel::commands::{DeviceArg, DtypeArg};
use flywheel_llama::{tiny, Llama};
use flywheel_model::chat::ChatTemplate;
use flywheel_model::tokenizer;
use serde_json::json;
use tch::{Device, Kind};

#[test]
fn same_seed_gives_identical_files_and_other_seed_differs() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, seed) in [("a", 3), ("b", 3), ("c", 4)] {
        tiny::create(&dir.path().join(name), seed).expect("create");
    }
    let read = |n: &str, f: &str| std::fs::read(dir.path().join(n).join(f)).expect("read");
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert_eq!(
            read("a", f),
            read("b", f),
            "{f} differs between identical seeds"
        );
    }
    assert_ne!(
        read("a", "model.safetensors"),
        read("c", "model.safetensors")
    );
}

#[test]
fn chat_template_renders_chatml_like_transformers() {
    let dir = tempfile::tempdir().expect("tempdir");
    tiny::create(dir.path().join("m").as_path(), 1).expect("create");
    let t = ChatTemplate::load(&dir.path().join("m")).expect("template");
    let msgs = [
        json!({"role": "system", "content": "Be brief."}),
        json!({"role": "user", "content": "2+2?"}),
    ];
    assert_eq!(
        t.render(&msgs, true, None).expect("render"),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        t.render(&msgs[1..], false, None).expect("render"),
        "<|im_start|>user\n2+2?<|im_end|>\n"
    );
}

#[test]
fn smollm2_chat_template_renders_its_default_system_prompt() {
    // The SmolLM2 template (copied from the GGUF metadata) inserts a default system message;
    // transformers' apply_chat_template gives exactly this string.
    let template = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    let t = ChatTemplate::new(
        "smollm2".into(),
        template.into(),
        "<|im_start|>".into(),
        "<|im_end|>".into(),
    )
    .expect("template");
    assert_eq!(
        t.render(&[json!({"role": "user", "content": "hi"})], true, None).expect("render"),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn template_errors_are_reported_not_panicked() {
    let t = ChatTemplate::new(
        "x".into(),
        "{{ raise_exception('roles must alternate') }}".into(),
        String::new(),
        String::new(),
    )
    .expect("parse");
    let e = t
        .render(&[json!({"role": "user", "content": "a"})], true, None)
        .expect_err("must fail");
    assert!(e.to_string().contains("roles must alternate"), "{e}");
    assert!(
        ChatTemplate::new("y".into(), "{% for %}".into(), String::new(), String::new()).is_err()
    );
}

#[test]
fn complete_command_runs_the_tiny_model_deterministically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = dir.path().join("m");
    tiny::create(&m, 11).expect("create");
    let args = CompleteArgs {
        model: m.clone(),
        prompt: Some("the cat".into()),
        task: None,
        input: None,
        index: 0,
        system: None,
        max_new_tokens: 12,
        device: DeviceArg::Cpu,
        dtype: DtypeArg::F32,
    };
    let a = complete(&args).expect("complete");
    let b = complete(&args).expect("complete");
    assert_eq!(a.token_ids, b.token_ids);
    assert_eq!(
        a.prompt_tokens,
        tokenizer::encode(
            &tokenizer::load(&m).expect("tok"),
            "<|im_start|>user\nthe cat<|im_end|>\n<|im_start|>assistant\n",
            false
        )
        .expect("enc")
        .len()
    );
    assert!(a.new_tokens >= 1 && a.new_tokens <= 12);
    // The tiny model's vocabulary: 256 bytes, 5 merges, 3 special tokens.
    let vocab = tokenizer::load(&m).expect("tok").get_vocab_size(true);
    assert_eq!(vocab, 264);
    assert!(
        a.token_ids.iter().all(|&t| (0..264).contains(&t)),
        "{:?}",
        a.token_ids
    );
}

/// A tokenizer that yields ids the weights do not have is refused with an error, not a libtorch
/// abort in the embedding lookup.
#[test]
fn complete_refuses_token_ids_outside_the_vocabulary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = dir.path().join("m");
    tiny::create(&m, 11).expect("create");
    let path = m.join("tokenizer.json");
    let mut tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    // One past the last embedding row (the tiny vocabulary is 264).
    tok["added_tokens"]
        .as_array_mut()
        .expect("added_tokens")
        .push(
            json!({"id": 264, "content": "zebra", "single_word": false, "lstrip": false,
                     "rstrip": false, "normalized": false, "special": false}),
        );
    std::fs::write(&path, tok.to_string()).expect("write");
    let err = complete(&CompleteArgs {
        model: m.clone(),
        prompt: Some("a zebra".into()),
        task: None,
        input: None,
        index: 0,
        system: None,
        max_new_tokens: 4,
        device: DeviceArg::Cpu,
        dtype: DtypeArg::F32,
    })
    .expect_err("must refuse");
    assert!(
        err.to_string()
            .contains("token id 264, outside the model's vocabulary of 264"),
        "{err}"
    );
}

#[test]
fn import_hf_accepts_a_transformers_checkpoint() {
    // transformers-written Qwen2 weights + the tiny tokenizer files = a plain HF directory.
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    let fx = common::fixtures().join("hf_variants").join("qwen2");
    for f in ["config.json", "model.safetensors", "generation_config.json"] {
        std::fs::copy(fx.join(f), src.join(f)).expect("copy");
    }
    let tiny_dir = dir.path().join("tiny");
    tiny::create(&tiny_dir, 1).expect("create");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(tiny_dir.join(f), src.join(f)).expect("copy");
    }
    let out = dir.path().join("out");
    let report = import(&ImportArgs {
        gguf: None,
        hf: Some(src.clone()),
        out: out.clone(),
        force: false,
    })
    .expect("import");
    assert_eq!(report.architecture, "Qwen2ForCausalLM");
    assert_eq!(report.layers, 2);
    assert_eq!(
        std::fs::read(src.join("model.safetensors")).ok(),
        std::fs::read(out.join("model.safetensors")).ok()
    );
    let model = Llama::load(&out, Device::Cpu, Kind::Float).expect("load");
    assert!(model.config.qkv_bias());
}
