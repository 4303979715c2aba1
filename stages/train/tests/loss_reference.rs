//! The GRPO loss against PyTorch: `fixtures/grpo_loss.json`, written by `fixtures/make_grpo_loss.py`
//! from TRL's formulas (padding, spans of different lengths, a dropped row, NaN at masked
//! positions, ratios away from 1 with both clips active), for the four aggregations with and
//! without the KL term. Then gradient accumulation: any split of the batch into micro-batches
//! gives the loss and gradient of the whole.

use flywheel_train::{grpo_loss, Aggregation, LossConfig, LossInputs, StepTotals};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/grpo_loss.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

/// A `[rows, cols]` f32 tensor from JSON rows (null: NaN).
fn matrix(v: &Value) -> Tensor {
    let rows = v.as_array().expect("rows");
    let data: Vec<f32> = rows
        .iter()
        .flat_map(|r| r.as_array().expect("row").iter())
        .map(|x| x.as_f64().map_or(f32::NAN, |x| x as f32))
        .collect();
    Tensor::from_slice(&data).reshape([rows.len() as i64, -1])
}

fn vector(v: &Value) -> Tensor {
    let data: Vec<f32> = v
        .as_array()
        .expect("vector")
        .iter()
        .map(|x| x.as_f64().unwrap_or(f64::NAN) as f32)
        .collect();
    Tensor::from_slice(&data)
}

/// The aggregation TRL names `name` (its `loss_type`), through the settings' own names.
fn aggregation(name: &str) -> Aggregation {
    serde_json::from_value(serde_json::json!(name)).expect("a TRL loss_type")
}

struct Batch {
    logp: Tensor,
    old: Tensor,
    reference: Tensor,
    adv: Tensor,
    mask: Tensor,
}

impl Batch {
    fn rows(&self, from: i64, to: i64) -> Batch {
        let r = |t: &Tensor| t.narrow(0, from, to - from);
        Batch {
            logp: r(&self.logp),
            old: r(&self.old),
            reference: r(&self.reference),
            adv: r(&self.adv),
            mask: r(&self.mask),
        }
    }
}

/// The loss and d loss / d logp over micro-batches `splits` (row ranges) of `batch`.
fn loss_and_grad(
    batch: &Batch,
    cfg: &LossConfig,
    step: &StepTotals,
    splits: &[(i64, i64)],
) -> (f64, Tensor, f64, f64) {
    let leaf = batch.logp.detach().set_requires_grad(true);
    let (mut total, mut low, mut high) = (0.0, 0.0, 0.0);
    let mut grad = leaf.zeros_like();
    for &(from, to) in splits {
        let part = batch.rows(from, to);
        let logp = leaf.narrow(0, from, to - from);
        let inp = LossInputs {
            logp: &logp,
            old_logp: &part.old,
            ref_logp: Some(&part.reference),
            advantages: &part.adv,
            mask: &part.mask,
            weights: None,
        };
        let out = grpo_loss(&inp, cfg, step).expect("loss");
        total += out.loss.double_value(&[]);
        low += out.clipped_low;
        high += out.clipped_high;
        let g = Tensor::run_backward(&[&out.loss], &[&leaf], false, false);
        grad += &g[0];
    }
    (total, grad, low, high)
}

fn load() -> (Value, Batch, StepTotals) {
    let f = fixture();
    let batch = Batch {
        logp: matrix(&f["logp"]),
        old: matrix(&f["old_logp"]),
        reference: matrix(&f["ref_logp"]),
        adv: vector(&f["advantages"]),
        mask: matrix(&f["mask"]),
    };
    let step = StepTotals {
        tokens: batch.mask.sum(Kind::Double).double_value(&[]),
        sequences: batch.mask.size()[0] as f64,
        max_completion_len: f["max_completion_len"].as_f64().expect("max len"),
    };
    (f, batch, step)
}

fn config(f: &Value, case: &Value) -> LossConfig {
    LossConfig {
        aggregation: aggregation(case["aggregation"].as_str().expect("name")),
        epsilon: f["epsilon"].as_f64().expect("epsilon"),
        epsilon_high: f["epsilon_high"].as_f64().expect("epsilon_high"),
        beta: case["beta"].as_f64().expect("beta"),
    }
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().to_kind(Kind::Double).double_value(&[])
}

#[test]
fn loss_gradient_and_clip_counts_match_pytorch() {
    let (f, batch, step) = load();
    let cases = f["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 8);
    for case in cases {
        let cfg = config(&f, case);
        let (loss, grad, low, high) = loss_and_grad(&batch, &cfg, &step, &[(0, 5)]);
        let want = case["loss"].as_f64().expect("loss");
        assert!(
            (loss - want).abs() <= 1e-5 * want.abs(),
            "{case}: loss {loss} vs PyTorch {want}"
        );
        let want_grad = matrix(&case["grad"]);
        let scale = max_abs(&want_grad);
        let diff = max_abs(&(&grad - &want_grad));
        assert!(
            diff <= 1e-5 * scale,
            "{}: max |Δgrad| {diff} (scale {scale})",
            case["aggregation"]
        );
        assert_eq!(low, case["clipped_low"].as_f64().expect("low"));
        assert_eq!(high, case["clipped_high"].as_f64().expect("high"));
        assert!(
            low > 0.0 && high > 0.0,
            "both clips must be active in the fixture"
        );
        // Positions outside the mask get exactly zero gradient.
        let outside = grad.where_self(&batch.mask.eq(0.0), &grad.zeros_like());
        assert_eq!(max_abs(&outside), 0.0);
    }
}

#[test]
fn any_micro_batch_split_gives_the_whole_batch_loss_and_gradient() {
    let (f, batch, step) = load();
    for case in f["cases"].as_array().expect("cases") {
        let cfg = config(&f, case);
        let (whole, g_whole, ..) = loss_and_grad(&batch, &cfg, &step, &[(0, 5)]);
        for splits in [
            vec![(0, 1), (1, 4), (4, 5)],
            vec![(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)],
        ] {
            let (parts, g_parts, ..) = loss_and_grad(&batch, &cfg, &step, &splits);
            assert!(
                (parts - whole).abs() <= 1e-6 * whole.abs(),
                "{}: {parts} vs {whole}",
                case["aggregation"]
            );
            let diff = max_abs(&(&g_parts - &g_whole));
            assert!(
                diff <= 1e-6 * max_abs(&g_whole),
                "{}: {diff}",
                case["aggregation"]
            );
        }
    }
    // The device is the CPU throughout (the reference path).
    assert_eq!(batch.logp.device(), Device::Cpu);
}
