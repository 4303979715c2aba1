//! GRPO steps on the tiny model: with fixed advantages, rewarded spans become more likely and
//! punished ones less; one micro-batch or one per example gives the same gradient; sampler
//! log-probs that do not fit their span are refused before any update.

use flywheel_llama::{tiny, Llama};
use flywheel_store::TrainExample;
use flywheel_train::optim::{AdamW, AdamWConfig};
use flywheel_train::step::{anchors, micro_batches, update, StepConfig, StepError};
use flywheel_train::{Aggregation, LossConfig};
use tch::{Device, Kind};

fn model(dir: &std::path::Path) -> Llama {
    let path = dir.join("tiny");
    if !path.exists() {
        tiny::create(&path, 3).expect("tiny");
    }
    let mut m = Llama::load(&path, Device::Cpu, Kind::Float).expect("load");
    m.vs.unfreeze();
    m
}

fn example(i: u32, prompt: usize, span: usize, advantage: f32) -> TrainExample {
    let ids: Vec<u32> = (0..(prompt + span) as u32)
        .map(|j| (j * 31 + i * 17 + 5) % 250)
        .collect();
    TrainExample {
        task_index: u64::from(i),
        task_id: format!("t{i}"),
        level: None,
        attempt: 0,
        reflection: i,
        input_ids: ids,
        span_start: prompt as u32,
        span_end: (prompt + span) as u32,
        sampler_logprobs: vec![-1.0; span],
        reward: if advantage > 0.0 { 1.0 } else { 0.0 },
        advantage,
        retry_reason: "x".into(),
        finish_reason: "eos".into(),
        model_hash: "h".into(),
    }
}

fn config(budget: usize) -> StepConfig {
    StepConfig {
        loss: LossConfig {
            aggregation: Aggregation::Dapo,
            ..Default::default()
        },
        micro_batch_tokens: budget,
        max_grad_norm: 0.0,
        temperature: 0.7,
        max_completion_len: 16,
        is_correction: Default::default(),
        is_cap: 3.0,
    }
}

fn params(m: &Llama) -> Vec<(String, tch::Tensor)> {
    let mut v: Vec<(String, tch::Tensor)> = m.vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn span_means(m: &Llama, examples: &[&TrainExample]) -> Vec<f64> {
    let batches = micro_batches(examples, 1 << 20, m.config.vocab_size, Device::Cpu).unwrap();
    let old = anchors(m, None, &batches, 0.7, true);
    let flat: Vec<f32> = Vec::try_from(&old[0].old.as_ref().unwrap().0).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    for e in examples {
        let n = (e.span_end - e.span_start) as usize;
        out.push(flat[at..at + n].iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64);
        at += n;
    }
    out
}

#[test]
fn fixed_advantages_raise_rewarded_and_lower_punished_spans() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(dir.path());
    let ex = [
        example(0, 9, 6, 1.0),
        example(1, 14, 4, 1.0),
        example(2, 7, 8, -1.0),
        example(3, 11, 5, -1.0),
    ];
    let refs: Vec<&TrainExample> = ex.iter().collect();
    let before = span_means(&m, &refs);
    let mut opt = AdamW::new(params(&m), AdamWConfig::default());
    let batches = micro_batches(&refs, 40, m.config.vocab_size, Device::Cpu).unwrap();
    assert!(batches.len() > 1, "the budget splits the batch");
    for _ in 0..5 {
        let old = anchors(&m, None, &batches, 0.7, true);
        let stats = update(&m, &mut opt, &batches, &old, &config(40), 1e-3).unwrap();
        assert_eq!(stats.span_tokens, 6 + 4 + 8 + 5);
        assert!(stats.grad_norm > 0.0 && stats.loss.is_finite());
    }
    let after = span_means(&m, &refs);
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        if ex[i].advantage > 0.0 {
            assert!(a > b, "example {i} (rewarded): {b} -> {a}");
        } else {
            assert!(a < b, "example {i} (punished): {b} -> {a}");
        }
    }
}

#[test]
fn the_micro_batch_split_does_not_change_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let ex = [
        example(0, 9, 6, 0.8),
        example(1, 14, 4, -0.3),
        example(2, 7, 8, 1.1),
    ];
    let refs: Vec<&TrainExample> = ex.iter().collect();
    let mut norms = Vec::new();
    for budget in [1 << 20, 1] {
        let m = model(dir.path());
        let mut opt = AdamW::new(params(&m), AdamWConfig::default());
        let batches = micro_batches(&refs, budget, m.config.vocab_size, Device::Cpu).unwrap();
        let old = anchors(&m, None, &batches, 0.7, true);
        let stats = update(&m, &mut opt, &batches, &old, &config(budget), 1e-3).unwrap();
        norms.push((batches.len(), stats.grad_norm, stats.loss));
    }
    assert_eq!((norms[0].0, norms[1].0), (1, 3));
    let (a, b) = (norms[0].1, norms[1].1);
    assert!(
        (a - b).abs() <= 1e-5 * a,
        "grad norm {a} (one micro-batch) vs {b} (three)"
    );
    assert!((norms[0].2 - norms[1].2).abs() <= 1e-5 * norms[0].2.abs().max(1e-6));
}

#[test]
fn sampler_logprobs_that_do_not_fit_the_span_are_refused() {
    let mut e = example(0, 5, 4, 1.0);
    e.sampler_logprobs.pop();
    let err = micro_batches(&[&e], 100, 300, Device::Cpu)
        .err()
        .expect("refused");
    assert!(
        matches!(
            err,
            StepError::SamplerLogprobs {
                found: 3,
                span: 4,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_batch_used_once_needs_no_separate_pi_old_pass() {
    let dir = tempfile::tempdir().unwrap();
    let ex = [example(0, 9, 6, 0.8), example(1, 14, 4, -0.3)];
    let refs: Vec<&TrainExample> = ex.iter().collect();
    let mut out = Vec::new();
    for keep_old in [true, false] {
        let m = model(dir.path());
        let mut opt = AdamW::new(params(&m), AdamWConfig::default());
        let batches = micro_batches(&refs, 1 << 20, m.config.vocab_size, Device::Cpu).unwrap();
        let a = anchors(&m, None, &batches, 0.7, keep_old);
        assert_eq!(a[0].old.is_some(), keep_old);
        let stats = update(&m, &mut opt, &batches, &a, &config(1 << 20), 1e-3).unwrap();
        let w: Vec<f32> =
            Vec::try_from(m.vs.variables()["model.layers.0.self_attn.q_proj.weight"].reshape([-1]))
                .unwrap();
        out.push((stats, w));
    }
    let ((a, wa), (b, wb)) = (&out[0], &out[1]);
    assert!((a.loss - b.loss).abs() <= 1e-6 * a.loss.abs().max(1e-6));
    assert!((a.grad_norm - b.grad_norm).abs() <= 1e-6 * a.grad_norm);
    assert!((a.entropy - b.entropy).abs() <= 1e-6 * a.entropy);
    assert_eq!(
        a.clip_ratio_low + a.clip_ratio_high,
        0.0,
        "on policy: ratios are 1"
    );
    let d = wa
        .iter()
        .zip(wb)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(d < 1e-6, "updated weights differ by {d}");
}
