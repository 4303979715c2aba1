//! AdamW, gradient clipping and the warmup-cosine schedule against PyTorch
//! (`fixtures/adamw.json` from `fixtures/make_adamw.py`): six steps on fixed gradients with decay
//! and no-decay groups, clipping active on some steps; then the same run stopped after three
//! steps and resumed from the saved moments ends bit for bit where the uninterrupted one does.

use flywheel_train::optim::{lr_at, AdamW, AdamWConfig};
use serde_json::Value;
use tch::{Kind, Tensor};

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/adamw.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn floats(v: &Value, out: &mut Vec<f32>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| floats(i, out)),
        x => out.push(x.as_f64().expect("number") as f32),
    }
}

fn tensor(v: &Value, shape: &[i64]) -> Tensor {
    let mut data = Vec::new();
    floats(v, &mut data);
    Tensor::from_slice(&data).reshape(shape)
}

struct Run {
    names: Vec<String>,
    shapes: Vec<Vec<i64>>,
    params: Vec<Tensor>,
    opt: AdamW,
}

fn start(f: &Value) -> Run {
    let names: Vec<String> = f["names"]
        .as_array()
        .expect("names")
        .iter()
        .map(|n| n.as_str().expect("name").to_owned())
        .collect();
    let shapes = vec![vec![3, 4], vec![4], vec![3]];
    let params: Vec<Tensor> = names
        .iter()
        .zip(&shapes)
        .map(|(n, s)| tensor(&f["init"][n], s).set_requires_grad(true))
        .collect();
    let betas = f["betas"].as_array().expect("betas");
    let config = AdamWConfig {
        beta1: betas[0].as_f64().expect("b1"),
        beta2: betas[1].as_f64().expect("b2"),
        eps: f["eps"].as_f64().expect("eps"),
        weight_decay: f["weight_decay"].as_f64().expect("wd"),
    };
    let named = names
        .iter()
        .cloned()
        .zip(params.iter().map(Tensor::shallow_clone))
        .collect();
    Run {
        opt: AdamW::new(named, config),
        names,
        shapes,
        params,
    }
}

/// Runs steps `range` of the fixture, checking each against PyTorch.
fn run_steps(f: &Value, run: &mut Run, range: std::ops::Range<usize>) {
    let (base, warmup, total) = (
        f["base_lr"].as_f64().expect("lr"),
        f["warmup"].as_u64().expect("warmup"),
        f["total"].as_u64().expect("total"),
    );
    for k in range {
        let want = &f["steps"][k];
        // A loss whose gradient is exactly the fixture's gradient.
        let loss = run
            .names
            .iter()
            .zip(&run.params)
            .zip(&run.shapes)
            .map(|((n, p), s)| (p * tensor(&f["grads"][k][n], s)).sum(Kind::Float))
            .fold(Tensor::from(0.0f32), |a, b| a + b);
        loss.backward();
        let lr = lr_at(base, k as u64, warmup, total);
        assert!(
            (lr - want["lr"].as_f64().expect("lr")).abs() < 1e-12,
            "step {k}: lr {lr}"
        );
        let norm = run
            .opt
            .clip_grad_norm(f["max_norm"].as_f64().expect("max norm"));
        let want_norm = want["grad_norm"].as_f64().expect("norm");
        assert!(
            (norm - want_norm).abs() <= 1e-5 * want_norm,
            "step {k}: norm {norm} vs {want_norm}"
        );
        run.opt.step(lr);
        for ((n, p), s) in run.names.iter().zip(&run.params).zip(&run.shapes) {
            let w = tensor(&want["params"][n], s);
            let diff = (p - &w).abs().max().double_value(&[]);
            let scale = w.abs().max().double_value(&[]);
            assert!(
                diff <= 1e-6 * scale.max(1.0),
                "step {k} {n}: max |Δ| {diff}"
            );
        }
    }
}

#[test]
fn six_steps_match_pytorch_adamw_with_clipping_and_schedule() {
    let f = fixture();
    let mut run = start(&f);
    run_steps(&f, &mut run, 0..6);
    assert_eq!(run.opt.steps(), 6);
    for (name, t) in run.opt.state() {
        let (param, which) = name.rsplit_once('.').expect("suffix");
        let i = run.names.iter().position(|n| n == param).expect("param");
        let want = tensor(&f["final_state"][param][which], &run.shapes[i]);
        let diff = (&t - &want).abs().max().double_value(&[]);
        assert!(
            diff <= 1e-6 * want.abs().max().double_value(&[]).max(1e-8),
            "{name}: {diff}"
        );
    }
}

#[test]
fn resuming_from_saved_moments_continues_bit_for_bit() {
    let f = fixture();
    let mut whole = start(&f);
    run_steps(&f, &mut whole, 0..6);
    let mut first = start(&f);
    run_steps(&f, &mut first, 0..3);
    let saved: Vec<(String, Tensor)> = first
        .opt
        .state()
        .into_iter()
        .map(|(n, t)| (n, t.copy()))
        .collect();
    let weights: Vec<Tensor> = first.params.iter().map(Tensor::copy).collect();
    let mut resumed = start(&f);
    tch::no_grad(|| {
        for (p, w) in resumed.params.iter_mut().zip(&weights) {
            p.copy_(w);
        }
    });
    resumed
        .opt
        .load_state(&saved, first.opt.steps())
        .expect("load");
    run_steps(&f, &mut resumed, 3..6);
    for (a, b) in whole.params.iter().zip(&resumed.params) {
        assert!(a.equal(b), "resumed weights differ");
    }
    let missing = vec![(String::from("w.weight.exp_avg"), saved[0].1.copy())];
    let err = resumed.opt.load_state(&missing, 3).unwrap_err();
    assert!(err.contains("exp_avg_sq"), "{err}");
}
