//! Bad input to `flywheel import`, model loading and `flywheel verify`: every case must end in a
//! clear error naming the file and the problem, a non-zero exit, no panic, and no output left
//! behind (nor a good one lost).

mod common;

use common::flywheel;
use flywheel_model::gguf::{write, Value};
use std::path::{Path, PathBuf};

/// Asserts a failed import: non-zero exit, the message names `subject` and `problem`, and the
/// output's parent holds nothing new (no output, no temporary directory).
fn assert_import_fails(args: &[&str], out: &Path, subject: &str, problem: &str) {
    let before = listing(out.parent().unwrap_or(out));
    let (code, stderr) = flywheel(args);
    assert_ne!(code, 0, "import succeeded on bad input; stderr: {stderr}");
    assert!(
        stderr.contains(subject),
        "error does not name {subject:?}: {stderr}"
    );
    assert!(
        stderr.contains(problem),
        "error does not say {problem:?}: {stderr}"
    );
    assert!(!out.exists(), "output directory left behind");
    assert_eq!(
        listing(out.parent().unwrap_or(out)),
        before,
        "temporary files left behind"
    );
}

fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

fn s(v: &str) -> Value {
    Value::String(v.into())
}

/// A small but complete Llama GGUF with one tensor of the given ggml type.
fn tiny_gguf(tensor_type: u32, data: Vec<u8>) -> Vec<u8> {
    tiny_gguf_dims(tensor_type, vec![32, 4], data)
}

/// [`tiny_gguf`] with the embedding's ggml dimensions given.
fn tiny_gguf_dims(tensor_type: u32, dims: Vec<u64>, data: Vec<u8>) -> Vec<u8> {
    let meta = vec![
        ("general.architecture", s("llama")),
        ("llama.embedding_length", Value::U32(32)),
        ("llama.feed_forward_length", Value::U32(64)),
        ("llama.block_count", Value::U32(1)),
        ("llama.attention.head_count", Value::U32(4)),
        ("llama.attention.head_count_kv", Value::U32(2)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.context_length", Value::U32(128)),
        ("tokenizer.ggml.model", s("gpt2")),
        (
            "tokenizer.ggml.tokens",
            Value::Array(vec![s("a"), s("b"), s("ab"), s("<|im_end|>")]),
        ),
        ("tokenizer.ggml.merges", Value::Array(vec![s("a b")])),
        (
            "tokenizer.ggml.token_type",
            Value::Array(vec![
                Value::I32(1),
                Value::I32(1),
                Value::I32(1),
                Value::I32(3),
            ]),
        ),
        ("tokenizer.ggml.eos_token_id", Value::U32(3)),
    ];
    let t = write::RawTensor {
        name: "token_embd.weight".into(),
        dims,
        ty: tensor_type,
        data,
    };
    write::gguf(&meta, &[t])
}

/// Writes `bytes` as `name` and asserts that importing it fails naming `subject` and `problem`.
fn assert_gguf_import_fails(name: &str, bytes: Vec<u8>, subject: Option<&str>, problem: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("write");
    let out = dir.path().join("out");
    let p = path.to_string_lossy();
    assert_import_fails(
        &["import", "--gguf", &p, "--out", &out.to_string_lossy()],
        &out,
        subject.unwrap_or(&p),
        problem,
    );
}

#[test]
fn truncated_gguf_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let real = std::fs::read(flywheel_model::paths::default_gguf())
        .expect("embedded GGUF (run .ci/setup)");
    for (name, len, problem) in [
        ("head.gguf", 1000, "truncated"),
        ("half.gguf", real.len() / 2, "lies outside the file"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &real[..len]).expect("write");
        let out = dir.path().join("out");
        let p = path.to_string_lossy();
        assert_import_fails(
            &["import", "--gguf", &p, "--out", &out.to_string_lossy()],
            &out,
            &p,
            problem,
        );
    }
}

#[test]
fn not_a_gguf_and_missing_file_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, b"<html>not a model</html>").expect("write");
    let out = dir.path().join("out");
    let p = path.to_string_lossy();
    assert_import_fails(
        &["import", "--gguf", &p, "--out", &out.to_string_lossy()],
        &out,
        &p,
        "not a GGUF file",
    );
    let missing = dir.path().join("absent.gguf");
    let m = missing.to_string_lossy();
    assert_import_fails(
        &["import", "--gguf", &m, "--out", &out.to_string_lossy()],
        &out,
        &m,
        "cannot read",
    );
}

#[test]
fn unknown_tensor_type_names_tensor_and_type() {
    // Q4_K (ggml type 12): a real type, but not one this importer dequantizes.
    assert_gguf_import_fails(
        "q4k.gguf",
        tiny_gguf(12, vec![0; 512]),
        Some("token_embd.weight"),
        "Q4_K",
    );
    // A type id ggml does not define at all.
    assert_gguf_import_fails(
        "bogus.gguf",
        tiny_gguf(999, vec![0; 512]),
        None,
        "unknown type id 999",
    );
}

/// A tensor with a zero dimension has no data to check against a shape; it used to pass the
/// parser and panic in the Q/K row permutation.
#[test]
fn gguf_empty_tensor_is_rejected() {
    assert_gguf_import_fails(
        "empty.gguf",
        tiny_gguf_dims(0, vec![0, 4], Vec::new()),
        Some("token_embd.weight"),
        "implausible dimensions [0, 4]",
    );
}

#[test]
fn gguf_missing_tensors_is_rejected() {
    // Valid F32 embedding, but no layers: the importer must notice before writing anything.
    assert_gguf_import_fails(
        "partial.gguf",
        tiny_gguf(0, vec![0; 32 * 4 * 4]),
        Some("model.norm.weight"),
        "missing",
    );
}

fn tiny_dir(root: &Path) -> PathBuf {
    let src = root.join("tiny");
    flywheel_llama::tiny::create(&src, 7).expect("tiny model");
    src
}

#[test]
fn safetensors_header_that_lies_about_sizes_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = tiny_dir(dir.path());
    let file = src.join("model.safetensors");
    let mut bytes = std::fs::read(&file).expect("read");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header = String::from_utf8(bytes[8..8 + n].to_vec()).expect("utf8 header");
    // Claim the norm weight is 4x larger than the bytes it points at.
    let lying = header.replacen("\"shape\":[64]", "\"shape\":[256]", 1);
    assert_ne!(
        lying, header,
        "fixture header did not contain the expected entry"
    );
    let mut patched = (lying.len() as u64).to_le_bytes().to_vec();
    patched.extend(lying.as_bytes());
    patched.extend(&bytes[8 + n..]);
    bytes = patched;
    std::fs::write(&file, bytes).expect("write");
    let out = dir.path().join("out");
    let f = file.to_string_lossy();
    assert_import_fails(
        &[
            "import",
            "--hf",
            &src.to_string_lossy(),
            "--out",
            &out.to_string_lossy(),
        ],
        &out,
        &f,
        "not a valid safetensors file",
    );
}

#[test]
fn config_with_missing_field_or_foreign_architecture_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = tiny_dir(dir.path());
    let cfg_path = src.join("config.json");
    let original: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).expect("read")).expect("json");
    let out = dir.path().join("out");
    let c = cfg_path.to_string_lossy().into_owned();
    let args = [
        "import",
        "--hf",
        &src.to_string_lossy(),
        "--out",
        &out.to_string_lossy(),
    ]
    .map(str::to_owned);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let mut cfg = original.clone();
    cfg.as_object_mut().expect("object").remove("hidden_size");
    std::fs::write(&cfg_path, cfg.to_string()).expect("write");
    assert_import_fails(&args, &out, &c, "missing field `hidden_size`");

    let mut cfg = original.clone();
    cfg["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
    std::fs::write(&cfg_path, cfg.to_string()).expect("write");
    assert_import_fails(&args, &out, &c, "unsupported architecture");

    let mut cfg = original.clone();
    cfg["num_key_value_heads"] = serde_json::json!(3);
    std::fs::write(&cfg_path, cfg.to_string()).expect("write");
    assert_import_fails(&args, &out, &c, "not a multiple of num_key_value_heads");

    // Sizes no model has are refused before anything is allocated from them.
    let mut cfg = original;
    cfg["vocab_size"] = serde_json::json!(4_000_000_000_000u64);
    std::fs::write(&cfg_path, cfg.to_string()).expect("write");
    assert_import_fails(&args, &out, &c, "vocab_size 4000000000000 is implausible");
}

#[test]
fn existing_output_is_kept_without_force_and_replaced_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = tiny_dir(dir.path());
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    std::fs::write(out.join("keep.txt"), "precious").expect("write");
    let args = [
        "import",
        "--hf",
        &src.to_string_lossy(),
        "--out",
        &out.to_string_lossy(),
    ]
    .map(str::to_owned);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stderr) = flywheel(&args);
    assert_ne!(code, 0);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt"))
            .ok()
            .as_deref(),
        Some("precious")
    );

    let mut forced = args.clone();
    forced.push("--force");
    let (code, stderr) = flywheel(&forced);
    assert_eq!(code, 0, "{stderr}");
    assert!(!out.join("keep.txt").exists() && out.join("model.safetensors").is_file());
    // A failing forced import leaves the previous good directory in place.
    std::fs::write(src.join("config.json"), "{").expect("write");
    let (code, _) = flywheel(&forced);
    assert_ne!(code, 0);
    assert!(
        out.join("model.safetensors").is_file(),
        "failed --force import destroyed the existing model"
    );
}

/// `verify --output` replaces its file only when the run succeeds: a bad task spec or a missing
/// input leaves an earlier verdict file whole, and no temporary file.
#[test]
fn verify_output_is_replaced_only_by_a_complete_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("responses.jsonl");
    std::fs::write(
        &input,
        "{\"nums\": [3, 4], \"target\": 7, \"response\": \"<answer>3 + 4</answer>\"}\n",
    )
    .expect("write");
    let output = dir.path().join("verdicts.jsonl");
    std::fs::write(&output, "earlier verdicts\n").expect("write");
    let (i, o) = (input.to_string_lossy(), output.to_string_lossy());
    for (task, from, problem) in [
        ("no-such-task", &*i, "no-such-task"),
        (
            "countdown",
            "/nonexistent/responses.jsonl",
            "/nonexistent/responses.jsonl",
        ),
    ] {
        let (code, stderr) = flywheel(&["verify", "--task", task, "--input", from, "--output", &o]);
        assert_ne!(code, 0, "{stderr}");
        assert!(stderr.contains(problem), "{stderr}");
        assert_eq!(
            std::fs::read_to_string(&output).ok().as_deref(),
            Some("earlier verdicts\n")
        );
        assert_eq!(listing(dir.path()), vec![input.clone(), output.clone()]);
    }
    let verify = |out: &str| {
        flywheel(&[
            "verify",
            "--task",
            "countdown",
            "--input",
            &i,
            "--output",
            out,
        ])
    };
    let (code, stderr) = verify(&o);
    assert_eq!(code, 0, "{stderr}");
    let text = std::fs::read_to_string(&output).expect("verdicts");
    assert!(text.contains("\"pass\":true"), "{text}");
    // Through a symlink the file it points at is replaced, and the link stays a link.
    #[cfg(unix)]
    {
        let link = dir.path().join("latest.jsonl");
        std::os::unix::fs::symlink(&output, &link).expect("symlink");
        std::fs::write(&output, "stale\n").expect("write");
        let (code, stderr) = verify(&link.to_string_lossy());
        assert_eq!(code, 0, "{stderr}");
        assert!(std::fs::symlink_metadata(&link)
            .expect("link")
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&output).expect("verdicts"), text);
        // A device is written in place, never replaced.
        let (code, stderr) = verify("/dev/null");
        assert_eq!(code, 0, "{stderr}");
        assert!(!std::fs::metadata("/dev/null").expect("/dev/null").is_file());
    }
}
