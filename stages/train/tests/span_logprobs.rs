//! Span log-probs from gathered hidden states against the plain full forward of each sequence
//! alone (full `[1, seq, vocab]` logits, log-softmax at the temperature, gather at p − 1): padding,
//! gathering and temperature must change nothing. Bad spans and token ids are refused.

use flywheel_llama::{tiny, Llama};
use flywheel_train::logprobs::{span_logprobs, PackError, Sequence, SpanBatch};
use tch::{Device, Kind, Tensor};

fn model() -> (tempfile::TempDir, Llama) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tiny");
    tiny::create(&path, 11).expect("tiny");
    let mut llama = Llama::load(&path, Device::Cpu, Kind::Float).expect("load");
    // Loaded for inference (frozen); the trainer trains its variables.
    llama.vs.unfreeze();
    (dir, llama)
}

fn reference(model: &Llama, s: &Sequence<'_>, temperature: f64) -> Vec<f32> {
    let ids: Vec<i64> = s.input_ids.iter().map(|&t| i64::from(t)).collect();
    let n = ids.len() as i64;
    let input = Tensor::from_slice(&ids).reshape([1, n]);
    let positions = Tensor::arange(n, (Kind::Int64, Device::Cpu)).reshape([1, n]);
    let mask = Tensor::ones([1, n], (Kind::Int64, Device::Cpu));
    let logits = model.forward(&input, &positions, &mask, None);
    let lp = (logits / temperature).log_softmax(-1, Kind::Float);
    (s.span_start..s.span_end)
        .map(|p| lp.double_value(&[0, p as i64 - 1, ids[p]]) as f32)
        .collect()
}

#[test]
fn gathered_span_logprobs_equal_the_full_forward_at_the_temperature() {
    let (_dir, model) = model();
    let a: Vec<u32> = (0..23).map(|i| (i * 7 + 3) % 256).collect();
    let b: Vec<u32> = (0..9).map(|i| (i * 13 + 5) % 256).collect();
    let c: Vec<u32> = (0..16).map(|i| (i * 3 + 1) % 256).collect();
    let seqs = [
        Sequence {
            input_ids: &a,
            span_start: 15,
            span_end: 23,
        },
        Sequence {
            input_ids: &b,
            span_start: 1,
            span_end: 9,
        },
        Sequence {
            input_ids: &c,
            span_start: 12,
            span_end: 14,
        },
    ];
    let vocab = model.config.vocab_size;
    let batch = SpanBatch::pack(&seqs, vocab, Device::Cpu).expect("pack");
    assert_eq!(batch.tokens(), 8 + 8 + 2);
    for temperature in [1.0, 0.7] {
        let got: Vec<f32> =
            Vec::try_from(tch::no_grad(|| span_logprobs(&model, &batch, temperature)))
                .expect("vec");
        let want: Vec<f32> = seqs
            .iter()
            .flat_map(|s| reference(&model, s, temperature))
            .collect();
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                "T={temperature} token {i}: {g} vs {w}"
            );
        }
    }
    // The grid the loss takes: each row's span left-aligned, zeros and mask 0 after it.
    let grid = batch.to_grid(&span_logprobs(&model, &batch, 1.0));
    assert_eq!(grid.size(), vec![3, 8]);
    let mask: Vec<f32> = Vec::try_from(batch.mask().reshape([-1])).expect("mask");
    assert_eq!(mask.iter().sum::<f32>(), 18.0);
    assert_eq!(&mask[16..24], &[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    // Gradient reaches the weights through the gathered rows.
    let loss = grid.sum(Kind::Float);
    loss.backward();
    let g = model.embed_tokens.grad();
    assert!(g.defined() && g.abs().sum(Kind::Double).double_value(&[]) > 0.0);
}

#[test]
fn spans_outside_the_sequence_and_foreign_token_ids_are_refused() {
    let ids = [1u32, 2, 3];
    let bad = |start, end| Sequence {
        input_ids: &ids,
        span_start: start,
        span_end: end,
    };
    for (s, e) in [(0, 2), (2, 2), (1, 4)] {
        assert!(matches!(
            SpanBatch::pack(&[bad(s, e)], 300, Device::Cpu),
            Err(PackError::Span { .. })
        ));
    }
    let err = SpanBatch::pack(&[bad(1, 3)], 3, Device::Cpu).err();
    assert_eq!(
        err,
        Some(PackError::Token {
            index: 0,
            id: 3,
            vocab: 3
        })
    );
}

#[test]
fn gradient_reaches_only_the_hidden_states_that_predict_span_tokens() {
    use flywheel_train::logprobs::span_logprobs_from_hidden;
    use flywheel_train::{grpo_loss, Aggregation, LossConfig, LossInputs, StepTotals};
    let (_dir, model) = model();
    let a: Vec<u32> = (0..14).map(|i| (i * 5 + 1) % 256).collect();
    let b: Vec<u32> = (0..9).map(|i| (i * 11 + 2) % 256).collect();
    let seqs = [
        Sequence {
            input_ids: &a,
            span_start: 8,
            span_end: 14,
        },
        Sequence {
            input_ids: &b,
            span_start: 3,
            span_end: 6,
        },
    ];
    let batch = SpanBatch::pack(&seqs, model.config.vocab_size, Device::Cpu).expect("pack");
    let hidden = model
        .hidden_states(
            &batch.input_ids,
            &batch.position_ids,
            &batch.attention_mask,
            None,
        )
        .detach()
        .set_requires_grad(true);
    for aggregation in [
        Aggregation::Grpo,
        Aggregation::Bnpo,
        Aggregation::DrGrpo,
        Aggregation::Dapo,
    ] {
        let logp = span_logprobs_from_hidden(&model, &batch, &hidden, 0.7);
        let grid = batch.to_grid(&logp);
        let old = grid.detach() - 0.05;
        let out = grpo_loss(
            &LossInputs {
                logp: &grid,
                old_logp: &old,
                ref_logp: Some(&(old.shallow_clone() + 0.1)),
                advantages: &Tensor::from_slice(&[1.3f32, -0.4]),
                mask: &batch.mask(),
                weights: None,
            },
            &LossConfig {
                aggregation,
                beta: 0.1,
                ..Default::default()
            },
            &StepTotals {
                tokens: 9.0,
                sequences: 2.0,
                max_completion_len: 8.0,
            },
        )
        .expect("loss");
        let mut g = hidden.grad();
        if g.defined() {
            let _ = g.zero_();
        }
        out.loss.backward();
        let g = hidden.grad();
        for (row, s) in seqs.iter().enumerate() {
            for pos in 0..14usize {
                let norm = g
                    .get(row as i64)
                    .get(pos as i64)
                    .abs()
                    .sum(Kind::Double)
                    .double_value(&[]);
                // Position p − 1 predicts span token p.
                let predicts = pos + 1 >= s.span_start && pos + 1 < s.span_end;
                if predicts {
                    assert!(
                        norm > 0.0,
                        "{aggregation:?}: row {row} position {pos} gets no gradient"
                    );
                } else {
                    assert_eq!(
                        norm, 0.0,
                        "{aggregation:?}: row {row} position {pos} is outside the span"
                    );
                }
            }
        }
    }
}
