//! The training run on the tiny model: metrics and a loadable model come out, a finished run is a
//! no-op, changed settings are refused by name, bad data is refused before any step with nothing
//! written, epochs visit every example once, β > 0 measures a KL, bf16 keeps f32 weights.

use std::path::{Path, PathBuf};

use flywheel_llama::{tiny, Llama};
use flywheel_store::{LabelMeta, Scale, TrainExample};
use flywheel_train::trainer::epoch_order;
use flywheel_train::{
    train, Dtype, Length, TrainConfig, TrainError, TrainReport, TrainSettings, MODEL_DIR,
};
use tch::{Device, Kind};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    model: PathBuf,
    data: PathBuf,
}

fn meta(model: &Path) -> LabelMeta {
    LabelMeta {
        model_hash: flywheel_store::model_hash(model).unwrap(),
        model_files_hash: flywheel_store::model_files_hash(model).unwrap(),
        task: "tiny".into(),
        span: flywheel_store::Span::Reflection,
        temperature: 0.8,
        top_p: 1.0,
        top_k: 0,
        max_new_tokens: 12,
        reflections: 4,
        scale: Scale::Group,
        keep_zero_std: false,
        drop_truncated: false,
        min_tokens: 1,
        max_tokens: None,
        shards: vec![0],
        shard_count: 1,
    }
}

fn example(i: u32, prompt: usize, span: usize, advantage: f32) -> TrainExample {
    TrainExample {
        task_index: u64::from(i / 4),
        task_id: format!("t{}", i / 4),
        level: None,
        attempt: 0,
        reflection: i % 4,
        input_ids: (0..(prompt + span) as u32)
            .map(|j| (j * 37 + i * 11 + 3) % 250)
            .collect(),
        span_start: prompt as u32,
        span_end: (prompt + span) as u32,
        sampler_logprobs: vec![-2.0; span],
        reward: if advantage > 0.0 { 1.0 } else { 0.0 },
        advantage,
        retry_reason: "r".into(),
        finish_reason: "eos".into(),
        model_hash: String::new(),
    }
}

fn examples(n: u32) -> Vec<TrainExample> {
    (0..n)
        .map(|i| {
            example(
                i,
                6 + (i as usize % 3),
                3 + (i as usize % 4),
                if i % 2 == 0 { 0.87 } else { -0.87 },
            )
        })
        .collect()
}

fn fixture(n: u32) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let model = root.join("tiny");
    tiny::create(&model, 5).unwrap();
    let data = root.join("train.parquet");
    flywheel_store::write_train(&data, &meta(&model), &examples(n)).unwrap();
    Fixture {
        _dir: dir,
        root,
        model,
        data,
    }
}

fn config(f: &Fixture, out: &str, settings: TrainSettings) -> TrainConfig {
    TrainConfig {
        data: vec![f.data.clone()],
        model: f.model.clone(),
        ref_model: None,
        out: f.root.join(out),
        settings,
        checkpoint_every: 1,
        device: flywheel_train::DeviceChoice::Cpu,
        off_policy: false,
    }
}

fn settings() -> TrainSettings {
    TrainSettings {
        lr: 1e-3,
        batch_size: 4,
        micro_batch_tokens: 40,
        length: Length::Epochs(2),
        ..Default::default()
    }
}

fn run(c: &TrainConfig) -> Result<TrainReport, TrainError> {
    train(c, &mut |_| {})
}

fn weights(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

#[test]
fn a_run_writes_metrics_and_a_loadable_model_and_a_rerun_is_a_no_op() {
    let f = fixture(10);
    let c = config(&f, "out", settings());
    let r = run(&c).unwrap();
    // 10 examples in batches of 4: 3 steps per epoch (4, 4, 2), 2 epochs.
    assert_eq!((r.total_steps, r.steps_run, r.already_done), (6, 6, false));
    let m = flywheel_store::read_metrics(&c.out.join("metrics.parquet")).unwrap();
    assert_eq!(
        m.iter().map(|m| m.step).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(
        m.iter().map(|m| m.epoch).collect::<Vec<_>>(),
        [0, 0, 0, 1, 1, 1]
    );
    assert_eq!(
        m.iter().map(|m| m.examples).collect::<Vec<_>>(),
        [4, 4, 2, 4, 4, 2]
    );
    assert!(m
        .iter()
        .all(|m| m.loss.is_finite() && m.grad_norm > 0.0 && m.entropy > 0.0));
    assert!(m.iter().all(|m| m.kl == 0.0 && m.is_weight_mean == 1.0));
    assert_eq!(m, r.metrics);
    let model_dir = c.out.join(MODEL_DIR);
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(model_dir.join(file).is_file(), "{file}");
    }
    let trained = Llama::load(&model_dir, Device::Cpu, Kind::Float).unwrap();
    let start = Llama::load(&f.model, Device::Cpu, Kind::Float).unwrap();
    let (a, b) = (
        trained.vs.variables()["model.norm.weight"].shallow_clone(),
        start.vs.variables()["model.norm.weight"].shallow_clone(),
    );
    assert!(
        (a - b).abs().max().double_value(&[]) > 1e-5,
        "the weights moved"
    );
    // The same files make the same tokenizer hash: the trained model can generate the next round.
    assert_eq!(
        flywheel_store::model_files_hash(&model_dir).unwrap(),
        flywheel_store::model_files_hash(&f.model).unwrap()
    );

    let before = weights(&model_dir);
    let again = run(&c).unwrap();
    assert!(again.already_done);
    assert_eq!(again.steps_run, 0);
    assert_eq!(weights(&model_dir), before);
}

#[test]
fn resuming_with_other_settings_is_refused_naming_the_field() {
    let f = fixture(6);
    let c = config(&f, "out", settings());
    run(&c).unwrap();
    let before = weights(&c.out.join(MODEL_DIR));
    let mut other = c.clone();
    other.settings.lr = 2e-3;
    let e = run(&other).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("`settings.lr` = 0.001") && msg.contains("0.002"),
        "{msg}"
    );
    // Other data is another run as well.
    flywheel_store::write_train(&f.data, &meta(&f.model), &examples(7)).unwrap();
    let msg = run(&c).unwrap_err().to_string();
    assert!(msg.contains("`data`"), "{msg}");
    assert_eq!(
        weights(&c.out.join(MODEL_DIR)),
        before,
        "nothing was touched"
    );
}

/// A change to the examples or the label settings of a data file.
type Edit = Box<dyn Fn(&mut Vec<TrainExample>, &mut LabelMeta)>;

#[test]
fn bad_data_is_refused_before_any_step_and_nothing_is_written() {
    let f = fixture(4);
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("span", Box::new(|e, _| e[2].span_end += 5), "row 2: span"),
        (
            "start",
            Box::new(|e, _| e[1].span_start = 0),
            "row 1: span 0..",
        ),
        (
            "vocab",
            Box::new(|e, _| e[3].input_ids[0] = 100_000),
            "row 3: token id 100000 is outside the model's vocabulary",
        ),
        (
            "logprobs",
            Box::new(|e, _| {
                e[0].sampler_logprobs.pop();
            }),
            "row 0: 2 sampler log-probs for a span of 3",
        ),
        (
            "advantage",
            Box::new(|e, _| e[1].advantage = f32::NAN),
            "is not finite",
        ),
        (
            "tokenizer",
            Box::new(|_, m| m.model_files_hash = "0".repeat(64)),
            "tokenizer and chat template",
        ),
        (
            "weights",
            Box::new(|_, m| m.model_hash = "1".repeat(64)),
            "weights (model_hash)",
        ),
        ("empty", Box::new(|e, _| e.clear()), "no training examples"),
        (
            "context",
            Box::new(|e, _| {
                let r = &mut e[2];
                r.input_ids = vec![7; 100_000];
                r.span_start = 99_990;
                r.span_end = 100_000;
                r.sampler_logprobs = vec![-1.0; 10];
            }),
            "row 2: 100000 tokens, longer than the model's context",
        ),
    ];
    for (name, edit, want) in cases {
        let mut rows = examples(4);
        let mut m = meta(&f.model);
        edit(&mut rows, &mut m);
        let data = f.root.join(format!("{name}.parquet"));
        flywheel_store::write_train(&data, &m, &rows).unwrap();
        let mut c = config(&f, name, settings());
        c.data = vec![data];
        let msg = run(&c).unwrap_err().to_string();
        assert!(msg.contains(want), "{name}: {msg}");
        assert!(!c.out.join(MODEL_DIR).exists(), "{name}: no model");
        assert!(!c.out.join("checkpoint").exists(), "{name}: no checkpoint");
    }
    // Off-policy data is accepted when asked for.
    let mut m = meta(&f.model);
    m.model_hash = "1".repeat(64);
    let data = f.root.join("off.parquet");
    flywheel_store::write_train(&data, &m, &examples(4)).unwrap();
    let mut c = config(&f, "off", settings());
    c.data = vec![data];
    c.off_policy = true;
    run(&c).unwrap();
    // A file that is not train.parquet at all.
    let junk = f.root.join("junk.parquet");
    std::fs::write(&junk, b"PAR1 not really").unwrap();
    let mut c = config(&f, "junk", settings());
    c.data = vec![junk];
    assert!(run(&c).unwrap_err().to_string().contains("junk.parquet"));
}

#[test]
fn every_epoch_visits_every_example_once_in_its_own_order() {
    let (_, a) = epoch_order(42, 0, 50);
    let (_, b) = epoch_order(42, 1, 50);
    let (_, a2) = epoch_order(42, 0, 50);
    assert_eq!(a, a2, "seeded");
    assert_ne!(a, b, "reshuffled per epoch");
    for o in [&a, &b] {
        let mut s = o.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<u32>>());
    }
    assert_ne!(epoch_order(43, 0, 50).1, a, "the seed matters");
}

#[test]
fn steps_beyond_one_epoch_continue_into_the_next_and_iterations_reuse_the_batch() {
    let f = fixture(5);
    let s = TrainSettings {
        length: Length::Steps(7),
        iterations: 2,
        ..settings()
    };
    let r = run(&config(&f, "out", s)).unwrap();
    let m = &r.metrics;
    // Batches of 4, 1 | 4, 1 per epoch, each used twice; 7 steps stop inside the 4th batch.
    assert_eq!(
        m.iter().map(|m| m.iteration).collect::<Vec<_>>(),
        [1, 2, 1, 2, 1, 2, 1]
    );
    assert_eq!(
        m.iter().map(|m| m.examples).collect::<Vec<_>>(),
        [4, 4, 1, 1, 4, 4, 1]
    );
    assert_eq!(
        m.iter().map(|m| m.epoch).collect::<Vec<_>>(),
        [0, 0, 0, 0, 1, 1, 1]
    );
    // The second iteration runs against the first's π_old: the policy moved, so ratios ≠ 1.
    assert!(m[1].loss != m[0].loss);
}

#[test]
fn a_positive_beta_measures_kl_against_the_frozen_start() {
    let f = fixture(8);
    let s = TrainSettings {
        beta: 0.04,
        length: Length::Steps(3),
        ..settings()
    };
    let r = run(&config(&f, "out", s)).unwrap();
    assert_eq!(r.metrics[0].kl, 0.0, "step 1: the policy is the reference");
    assert!(r.metrics[2].kl > 0.0, "{:?}", r.metrics[2].kl);
}

#[test]
fn bf16_trains_with_f32_master_weights_and_cuda_fails_clearly_without_a_gpu() {
    let f = fixture(4);
    let s = TrainSettings {
        dtype: Dtype::Bf16,
        length: Length::Steps(2),
        ..settings()
    };
    let c = config(&f, "bf16", s);
    let r = run(&c).unwrap();
    assert!(r.metrics.iter().all(|m| m.loss.is_finite()));
    let w = flywheel_llama::weights::Weights::load_dir(&c.out.join(MODEL_DIR)).unwrap();
    assert!(w.tensors.values().all(|(_, t)| t.kind() == Kind::Float));
    if !tch::Cuda::is_available() {
        let mut c = config(&f, "cuda", settings());
        c.device = flywheel_train::DeviceChoice::Cuda;
        let msg = run(&c).unwrap_err().to_string();
        assert!(msg.contains("CUDA is not available"), "{msg}");
        assert!(!c.out.exists());
    }
}

#[test]
fn a_damaged_checkpoint_is_an_error_not_a_panic() {
    let f = fixture(6);
    let s = TrainSettings {
        length: Length::Epochs(3),
        ..settings()
    };
    let mut c = config(&f, "out", s);
    run(&c).unwrap();
    let ck = c.out.join("checkpoint");
    std::fs::remove_dir_all(c.out.join(MODEL_DIR)).unwrap();
    // Resuming needs the checkpoint itself: damage its parts one at a time.
    let state = std::fs::read_to_string(ck.join("state.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&state).unwrap();
    v["order"] = serde_json::json!([0, 1]);
    std::fs::write(ck.join("state.json"), v.to_string()).unwrap();
    let msg = run(&c).unwrap_err().to_string();
    assert!(msg.contains("does not fit"), "{msg}");
    std::fs::write(ck.join("state.json"), "{not json").unwrap();
    let msg = run(&c).unwrap_err().to_string();
    assert!(msg.contains("state.json"), "{msg}");
    std::fs::write(ck.join("state.json"), &state).unwrap();
    let opt = std::fs::read(ck.join("optimizer.safetensors")).unwrap();
    std::fs::write(ck.join("optimizer.safetensors"), &opt[..opt.len() / 2]).unwrap();
    let msg = run(&c).unwrap_err().to_string();
    assert!(msg.contains("optimizer.safetensors"), "{msg}");
    std::fs::write(ck.join("optimizer.safetensors"), &opt).unwrap();
    // Repaired, the run writes its model again from the final checkpoint.
    c.checkpoint_every = 0;
    let r = run(&c).unwrap();
    assert_eq!(r.steps_run, 0);
    assert!(c.out.join(MODEL_DIR).join("model.safetensors").is_file());
}
