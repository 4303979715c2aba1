//! Greedy decoding with the tch model and its KV cache (the reference decoder that the ONNX
//! export and the sampling engine are checked against).

use crate::llama::{KvCache, Llama};
use std::time::Instant;
use tch::{Kind, Tensor};

/// Result of one greedy decode.
#[derive(Debug, Clone)]
pub struct Greedy {
    /// Generated ids, without the prompt; includes the EOS id when one stopped the decode.
    pub tokens: Vec<i64>,
    pub stopped_by_eos: bool,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
}

impl Greedy {
    /// New tokens per second over the decode phase (the first token comes from the prefill).
    pub fn decode_tokens_per_second(&self) -> f64 {
        let n = self.tokens.len().saturating_sub(1) as f64;
        if self.decode_seconds > 0.0 {
            n / self.decode_seconds
        } else {
            0.0
        }
    }
}

/// Greedy continuation of one prompt, at most `max_new` tokens, stopping at any of `eos`.
pub fn greedy(model: &Llama, prompt: &[i64], max_new: usize, eos: &[i64]) -> Greedy {
    let _guard = tch::no_grad_guard();
    let device = model.device();
    let mut cache = KvCache::new(&model.config);
    let mut tokens = Vec::with_capacity(max_new);
    let n = prompt.len() as i64;
    let t0 = Instant::now();
    let ids = Tensor::from_slice(prompt).to_device(device).unsqueeze(0);
    let pos = Tensor::arange(n, (Kind::Int64, device)).unsqueeze(0);
    let mut mask = Tensor::ones([1, n], (Kind::Int64, device));
    let mut logits = model.forward(&ids, &pos, &mask, Some(&mut cache));
    let prefill_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut stopped_by_eos = false;
    while tokens.len() < max_new {
        let next = logits.select(1, -1).argmax(-1, false).int64_value(&[0]);
        tokens.push(next);
        if eos.contains(&next) {
            stopped_by_eos = true;
            break;
        }
        if tokens.len() == max_new {
            break;
        }
        let p = cache.len();
        let ids = Tensor::from_slice(&[next]).to_device(device).unsqueeze(0);
        let pos = Tensor::from_slice(&[p]).to_device(device).unsqueeze(0);
        mask = Tensor::cat(&[&mask, &Tensor::ones([1, 1], (Kind::Int64, device))], 1);
        logits = model.forward(&ids, &pos, &mask, Some(&mut cache));
    }
    Greedy {
        tokens,
        stopped_by_eos,
        prefill_seconds,
        decode_seconds: t1.elapsed().as_secs_f64(),
    }
}
