//! The tch Llama family against transformers: tiny checkpoints of every supported variant
//! (untied + attention bias, Llama 3 rope scaling, Qwen2 biases, Mistral) written by
//! `tests/fixtures/make_hf_variants.py`, with transformers' logits as the reference.

mod common;

use common::{cached_vs_full_max_diff, fixtures, max_abs_diff, positions, read_safetensors};
use flywheel_llama::Llama;
use tch::{Device, Kind, Tensor};

const VARIANTS: [&str; 4] = ["llama_untied_bias", "llama3_rope", "qwen2", "mistral"];

fn load(variant: &str) -> (Llama, Tensor, Tensor) {
    let dir = fixtures().join("hf_variants").join(variant);
    let model =
        Llama::load(&dir, Device::Cpu, Kind::Float).unwrap_or_else(|e| panic!("{variant}: {e}"));
    let mut r = read_safetensors(&dir.join("reference.safetensors"));
    (
        model,
        r.remove("input_ids").expect("input_ids"),
        r.remove("logits").expect("logits"),
    )
}

#[test]
fn logits_match_transformers_for_every_variant() {
    let _g = tch::no_grad_guard();
    for v in VARIANTS {
        let (model, ids, want) = load(v);
        let (b, s) = (ids.size()[0], ids.size()[1]);
        let pos = positions(s).expand([b, s], false);
        let got = model.forward(
            &ids,
            &pos,
            &Tensor::ones([b, s], (Kind::Int64, Device::Cpu)),
            None,
        );
        let d = max_abs_diff(&got, &want);
        assert!(d < 1e-4, "{v}: max |Δlogit| = {d}");
        // The reference logits are far from flat, so a wrong layer could not pass by accident.
        assert!(
            want.std(true).double_value(&[]) > 0.5,
            "{v}: reference logits too flat to be a test"
        );
    }
}

#[test]
fn variant_configs_are_read_as_written() {
    let (m, _, _) = load("llama_untied_bias");
    assert!(!m.config.tie_word_embeddings && m.config.attention_bias && m.lm_head.is_some());
    assert_eq!(m.config.rope_theta, 500.0);
    let (m, _, _) = load("llama3_rope");
    assert_eq!(m.config.rope_scaling.as_ref().map(|r| r.factor), Some(8.0));
    let (m, _, _) = load("qwen2");
    assert!(m.config.qkv_bias() && !m.config.o_bias());
    assert_eq!(m.config.rope_theta, 1_000_000.0);
}

#[test]
fn kv_cache_decoding_equals_full_forward() {
    let _g = tch::no_grad_guard();
    for v in VARIANTS {
        let (model, ids, _) = load(v);
        let ids = ids.narrow(0, 0, 1);
        let s = ids.size()[1];
        let (worst, cached) = cached_vs_full_max_diff(&model, &ids, 12);
        assert_eq!(cached, s);
        assert!(
            worst < 1e-4,
            "{v}: cached decode differs from full forward by {worst}"
        );
    }
}

#[test]
fn left_padded_batch_equals_separate_rows() {
    let _g = tch::no_grad_guard();
    let (model, ids, want) = load("qwen2");
    // Row 1 keeps only its last 13 tokens, left-padded with 7 pad positions.
    let (s, keep) = (ids.size()[1], 13);
    let pad = s - keep;
    let row1 = ids.get(1).narrow(0, pad, keep);
    let padded = Tensor::cat(
        &[
            Tensor::zeros([pad], (Kind::Int64, Device::Cpu)),
            row1.shallow_clone(),
        ],
        0,
    );
    let batch = Tensor::stack(&[ids.get(0), padded], 0);
    let mask = Tensor::stack(
        &[
            Tensor::ones([s], (Kind::Int64, Device::Cpu)),
            Tensor::cat(
                &[
                    Tensor::zeros([pad], (Kind::Int64, Device::Cpu)),
                    Tensor::ones([keep], (Kind::Int64, Device::Cpu)),
                ],
                0,
            ),
        ],
        0,
    );
    let pos = (mask.cumsum(1, Kind::Int64) - 1).clamp_min(0);
    let got = model.forward(&batch, &pos, &mask, None);
    assert!(max_abs_diff(&got.get(0), &want.get(0)) < 1e-4);
    let alone = model.forward(
        &row1.unsqueeze(0),
        &positions(keep),
        &Tensor::ones([1, keep], (Kind::Int64, Device::Cpu)),
        None,
    );
    let d = max_abs_diff(&got.get(1).narrow(0, pad, keep), &alone.get(0));
    assert!(d < 1e-4, "padded row differs from the row alone by {d}");
    assert!(
        !bool::try_from(got.isnan().any()).unwrap_or(true),
        "padding produced NaN logits"
    );
}

#[test]
fn bf16_model_stays_close_to_f32() {
    let _g = tch::no_grad_guard();
    let dir = fixtures().join("hf_variants").join("mistral");
    let model = Llama::load(&dir, Device::Cpu, Kind::BFloat16).expect("bf16 load");
    assert_eq!(model.kind(), Kind::BFloat16);
    let (_, ids, want) = load("mistral");
    let s = ids.size()[1];
    let got = model.forward(
        &ids,
        &positions(s).expand([2, s], false),
        &Tensor::ones([2, s], (Kind::Int64, Device::Cpu)),
        None,
    );
    let rel = max_abs_diff(&got, &want) / want.abs().max().double_value(&[]);
    assert!(rel < 0.05, "bf16 relative error {rel}");
    assert!(
        rel > 0.0,
        "bf16 path computed exactly in f32; the dtype was not applied"
    );
}
