//! Whole GRPO steps on a real model against PyTorch + transformers (`fixtures/make_grpo_step.py`):
//! four right-padded sequences with spans of different lengths, β > 0 against the frozen start,
//! for each loss aggregation the loss, clip counts and named gradients at iteration 1, then (after
//! clipping and AdamW) at iteration 2 against the same π_old, where ratios ≠ 1 and both clips are
//! active. Each is checked with the step as one micro-batch and as four, which must also agree
//! with each other (gradient accumulation with step-wide denominators).

use std::path::Path;

use flywheel_llama::Llama;
use flywheel_store::TrainExample;
use flywheel_train::optim::{AdamW, AdamWConfig};
use flywheel_train::step::{accumulate, anchors, micro_batches, StepConfig};
use flywheel_train::{Aggregation, LossConfig};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

fn fixture() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grpo_step.json");
    serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json")
}

fn model_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grpo_model")
}

fn examples(f: &Value) -> Vec<TrainExample> {
    let seqs = f["sequences"].as_array().expect("sequences");
    seqs.iter()
        .enumerate()
        .map(|(i, s)| {
            let ids: Vec<u32> = s
                .as_array()
                .expect("ids")
                .iter()
                .map(|v| v.as_u64().expect("id") as u32)
                .collect();
            let start = f["span_starts"][i].as_u64().expect("start") as u32;
            let span = ids.len() - start as usize;
            TrainExample {
                task_index: i as u64,
                task_id: format!("t{i}"),
                level: None,
                attempt: 0,
                reflection: 0,
                span_end: ids.len() as u32,
                input_ids: ids,
                span_start: start,
                sampler_logprobs: vec![-1.0; span],
                reward: 0.0,
                advantage: f["advantages"][i].as_f64().expect("adv") as f32,
                retry_reason: String::new(),
                finish_reason: "eos".into(),
                model_hash: String::new(),
            }
        })
        .collect()
}

/// The aggregation TRL names `name` (its `loss_type`), through the settings' own names.
fn aggregation(name: &str) -> Aggregation {
    serde_json::from_value(serde_json::json!(name)).expect("a TRL loss_type")
}

/// max |a − b| / max |b| over a tensor's elements.
fn rel(ours: &[f32], want: &[f64]) -> f64 {
    assert_eq!(ours.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-12);
    ours.iter()
        .zip(want)
        .map(|(a, b)| (f64::from(*a) - b).abs())
        .fold(0.0, f64::max)
        / scale
}

struct Outcome {
    losses: Vec<f64>,
    grads: Vec<Vec<(String, Vec<f32>)>>,
}

fn run_case(f: &Value, kind: &str, budget: usize) -> Outcome {
    let case = &f["cases"][kind];
    let mut model = Llama::load(&model_dir(), Device::Cpu, Kind::Float).expect("model");
    model.vs.unfreeze();
    let reference = Llama::load(&model_dir(), Device::Cpu, Kind::Float).expect("reference");
    let mut params: Vec<(String, Tensor)> = model.vs.variables().into_iter().collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut opt = AdamW::new(
        params,
        AdamWConfig {
            weight_decay: f["weight_decay"].as_f64().expect("wd"),
            ..Default::default()
        },
    );
    let cfg = StepConfig {
        loss: LossConfig {
            aggregation: aggregation(kind),
            epsilon: f["epsilon"].as_f64().expect("eps"),
            epsilon_high: f["epsilon_high"].as_f64().expect("eps high"),
            beta: f["beta"].as_f64().expect("beta"),
        },
        micro_batch_tokens: budget,
        max_grad_norm: f["max_grad_norm"].as_f64().expect("clip"),
        temperature: f["temperature"].as_f64().expect("t"),
        max_completion_len: f["max_completion_len"].as_u64().expect("max") as usize,
        is_correction: Default::default(),
        is_cap: 3.0,
    };
    let rows = examples(f);
    let refs: Vec<&TrainExample> = rows.iter().collect();
    let batches = micro_batches(&refs, budget, model.config.vocab_size, Device::Cpu).expect("pack");
    let fixed = anchors(&model, Some(&reference), &batches, cfg.temperature, true);
    let mut out = Outcome {
        losses: vec![],
        grads: vec![],
    };
    for it in ["iteration1", "iteration2"] {
        let want = &case[it];
        let stats = accumulate(&model, &batches, &fixed, &cfg).expect("accumulate");
        assert_eq!(
            stats.clip_ratio_low * stats.span_tokens as f64,
            want["clipped_low"].as_f64().expect("low"),
            "{kind} {it} clipped low"
        );
        assert_eq!(
            stats.clip_ratio_high * stats.span_tokens as f64,
            want["clipped_high"].as_f64().expect("high"),
            "{kind} {it} clipped high"
        );
        let vars = model.vs.variables();
        let grads = want["grads"]
            .as_object()
            .expect("grads")
            .keys()
            .map(|name| {
                let g = vars[name].grad().reshape([-1]);
                (name.clone(), Vec::<f32>::try_from(&g).expect("grad"))
            })
            .collect();
        out.losses.push(stats.loss);
        out.grads.push(grads);
        let norm = opt.clip_grad_norm(cfg.max_grad_norm);
        let want_norm = want["grad_norm"].as_f64().expect("norm");
        assert!(
            (norm - want_norm).abs() <= 1e-5 * want_norm,
            "{kind} {it}: grad norm {norm} vs {want_norm}"
        );
        opt.step(f["lr"].as_f64().expect("lr"));
    }
    out
}

#[test]
fn grpo_steps_on_a_real_model_match_pytorch_for_every_aggregation_and_split() {
    let f = fixture();
    assert_eq!(batches_of(&f, 1 << 20), 1);
    assert_eq!(
        batches_of(&f, 13),
        4,
        "a budget of one longest row splits the batch in four"
    );
    for kind in ["grpo", "bnpo", "dr_grpo", "dapo"] {
        let whole = run_case(&f, kind, 1 << 20);
        let split = run_case(&f, kind, 13);
        for (i, it) in ["iteration1", "iteration2"].iter().enumerate() {
            let want = &f["cases"][kind][it];
            let loss = want["loss"].as_f64().expect("loss");
            for (name, o) in [("one micro-batch", &whole), ("four micro-batches", &split)] {
                let got = o.losses[i];
                assert!(
                    (got - loss).abs() <= 1e-5 * loss.abs() + 1e-7,
                    "{kind} {it} {name}: loss {got} vs {loss}"
                );
                for (param, g) in &o.grads[i] {
                    let w: Vec<f64> = want["grads"][param]
                        .as_array()
                        .expect("g")
                        .iter()
                        .map(|v| v.as_f64().expect("f"))
                        .collect();
                    let r = rel(g, &w);
                    assert!(
                        r < 1e-5,
                        "{kind} {it} {name}: {param} off by {r:.2e} relative"
                    );
                }
            }
            // Accumulation: from the same weights the split gives the one-batch gradient. (At
            // iteration 2 the weights differ already: AdamW's first update is about ±lr for
            // every element, so rounding noise in gradients that are 0 in exact arithmetic, such
            // as k_proj's bias, moves them by different amounts in the two runs.)
            if i > 0 {
                continue;
            }
            for ((p, a), (_, b)) in whole.grads[i].iter().zip(&split.grads[i]) {
                let b64: Vec<f64> = b.iter().map(|&x| f64::from(x)).collect();
                let r = rel(a, &b64);
                assert!(
                    r < 1e-6,
                    "{kind} {it}: {p} differs by {r:.2e} between splits"
                );
            }
        }
    }
}

fn batches_of(f: &Value, budget: usize) -> usize {
    let rows = examples(f);
    let refs: Vec<&TrainExample> = rows.iter().collect();
    micro_batches(&refs, budget, 128, Device::Cpu)
        .expect("pack")
        .len()
}
