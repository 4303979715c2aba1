//! Parity check: the exported graph in ONNX Runtime against the tch model, on a left-padded
//! batch of prompts of different lengths, then cached decode steps feeding `present.*` back.

use flywheel_llama::{KvCache, Llama};
use flywheel_model::config::ModelConfig;
use flywheel_runtime::names::{past_key, past_value, present_key, present_value};
use flywheel_runtime::{self as runtime, RuntimeError};
use ort::session::Session;
use ort::value::Tensor as OrtTensor;
use std::path::Path;
use tch::{Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum ParityError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("ONNX Runtime run failed: {0}")]
    Run(String),
    #[error("no prompts given")]
    NoPrompts,
}

/// What the check measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ParityReport {
    pub batch: usize,
    pub prompt_lengths: Vec<usize>,
    pub decode_steps: usize,
    /// Max |Δlogit| over the non-padding positions of the batched prefill.
    pub prefill_max_abs_diff: f64,
    /// Max |Δlogit| over all rows of all decode steps.
    pub decode_max_abs_diff: f64,
    /// Whether ONNX Runtime's argmax equals tch's at every prefill end and decode step.
    pub greedy_identical: bool,
}

impl ParityReport {
    pub fn max_abs_diff(&self) -> f64 {
        self.prefill_max_abs_diff.max(self.decode_max_abs_diff)
    }
}

/// Owned key/value state for the ONNX decoder: per layer (key, value), each `[b, kv, t, d]`.
pub struct OrtKv {
    pub layers: Vec<(Vec<f32>, Vec<f32>)>,
    pub len: usize,
}

/// A minimal f32 decoder loop over an exported graph (one `run` per step).
pub struct OrtDecoder {
    pub session: Session,
    layers: usize,
    kv_heads: usize,
    head_dim: usize,
    vocab: usize,
}

impl OrtDecoder {
    pub fn new(onnx: &Path, cfg: &ModelConfig, threads: usize) -> Result<Self, ParityError> {
        Ok(Self {
            session: runtime::cpu_session(onnx, threads)?,
            layers: cfg.num_hidden_layers,
            kv_heads: cfg.kv_heads(),
            head_dim: cfg.head_dim(),
            vocab: cfg.vocab_size,
        })
    }

    pub fn empty_kv(&self) -> OrtKv {
        OrtKv {
            layers: vec![(Vec::new(), Vec::new()); self.layers],
            len: 0,
        }
    }

    /// One forward: `ids`/`positions` are `[b, s]` row-major, `mask` is `[b, kv.len + s]`.
    /// Returns logits `[b, s, vocab]` and the new key/value state.
    pub fn run(
        &mut self,
        b: usize,
        ids: &[i64],
        positions: &[i64],
        mask: &[i64],
        kv: &OrtKv,
    ) -> Result<(Vec<f32>, OrtKv), ParityError> {
        let s = ids.len() / b;
        let run_err = |e: ort::Error| ParityError::Run(e.to_string());
        let mut inputs =
            runtime::token_inputs(b, ids.to_vec(), Some(positions.to_vec()), mask.to_vec())
                .map_err(run_err)?;
        let kv_shape = vec![
            b as i64,
            self.kv_heads as i64,
            kv.len as i64,
            self.head_dim as i64,
        ];
        for (i, (k, v)) in kv.layers.iter().enumerate() {
            inputs.push((
                past_key(i),
                OrtTensor::from_array((kv_shape.clone(), k.clone()))
                    .map_err(run_err)?
                    .into(),
            ));
            inputs.push((
                past_value(i),
                OrtTensor::from_array((kv_shape.clone(), v.clone()))
                    .map_err(run_err)?
                    .into(),
            ));
        }
        let outputs = self.session.run(inputs).map_err(run_err)?;
        let extract = |name: &str| -> Result<Vec<f32>, ParityError> {
            let v = outputs
                .get(name)
                .ok_or_else(|| ParityError::Run(format!("no output `{name}`")))?;
            let (_, data) = v.try_extract_tensor::<f32>().map_err(run_err)?;
            Ok(data.to_vec())
        };
        let logits = extract("logits")?;
        if logits.len() != b * s * self.vocab {
            return Err(ParityError::Run(format!(
                "logits have {} values, expected {}",
                logits.len(),
                b * s * self.vocab
            )));
        }
        let mut layers = Vec::with_capacity(self.layers);
        for i in 0..self.layers {
            layers.push((extract(&present_key(i))?, extract(&present_value(i))?));
        }
        Ok((
            logits,
            OrtKv {
                layers,
                len: kv.len + s,
            },
        ))
    }
}

/// Max |a − b|; infinite when either side has a non-finite logit (NaN would otherwise vanish in
/// `f64::max` and a broken model would pass).
fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    let finite = |t: &Tensor| t.isfinite().all().int64_value(&[]) != 0;
    if !finite(a) || !finite(b) {
        return f64::INFINITY;
    }
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

/// Runs the check. The tch model must be f32 on the CPU; `prompts` are token ids.
pub fn check(
    model: &Llama,
    onnx: &Path,
    prompts: &[Vec<i64>],
    steps: usize,
    threads: usize,
) -> Result<ParityReport, ParityError> {
    let _guard = tch::no_grad_guard();
    if prompts.is_empty() {
        return Err(ParityError::NoPrompts);
    }
    let mut ort = OrtDecoder::new(onnx, &model.config, threads)?;
    let b = prompts.len();
    let s = prompts.iter().map(Vec::len).max().unwrap_or(0);
    // Left padding: pad id 0, position ids counting from each row's first real token.
    let mut ids = vec![0i64; b * s];
    let mut mask = vec![0i64; b * s];
    let mut pos = vec![0i64; b * s];
    for (r, p) in prompts.iter().enumerate() {
        let pad = s - p.len();
        for (j, &t) in p.iter().enumerate() {
            ids[r * s + pad + j] = t;
            mask[r * s + pad + j] = 1;
            pos[r * s + pad + j] = j as i64;
        }
    }
    let shape = [b as i64, s as i64];
    let t_ids = Tensor::from_slice(&ids).view(shape);
    let t_pos = Tensor::from_slice(&pos).view(shape);
    let mut t_mask = Tensor::from_slice(&mask).view(shape);
    let mut cache = KvCache::new(&model.config);
    let want = model.forward(&t_ids, &t_pos, &t_mask, Some(&mut cache));
    let (got, mut kv) = ort.run(b, &ids, &pos, &mask, &ort.empty_kv())?;
    let vocab = model.config.vocab_size as i64;
    let got = Tensor::from_slice(&got).view([b as i64, s as i64, vocab]);
    let real = t_mask.to_kind(Kind::Bool).unsqueeze(-1);
    let prefill = max_diff(
        &want.masked_fill(&real.logical_not(), 0.0),
        &got.masked_fill(&real.logical_not(), 0.0),
    );
    let mut greedy_identical = want
        .select(1, -1)
        .argmax(-1, false)
        .equal(&got.select(1, -1).argmax(-1, false));
    let mut next = want.select(1, -1).argmax(-1, false);
    let mut last_pos: Vec<i64> = prompts.iter().map(|p| p.len() as i64 - 1).collect();
    let mut mask_vec = mask;
    let mut decode = 0f64;
    for _ in 0..steps {
        let step_ids: Vec<i64> = Vec::<i64>::try_from(&next).unwrap_or_default();
        last_pos.iter_mut().for_each(|p| *p += 1);
        let total = kv.len + 1;
        let mut new_mask = Vec::with_capacity(b * total);
        for r in 0..b {
            new_mask.extend_from_slice(&mask_vec[r * (total - 1)..(r + 1) * (total - 1)]);
            new_mask.push(1);
        }
        mask_vec = new_mask;
        t_mask = Tensor::from_slice(&mask_vec).view([b as i64, total as i64]);
        let want = model.forward(
            &next.unsqueeze(1),
            &Tensor::from_slice(&last_pos).unsqueeze(1),
            &t_mask,
            Some(&mut cache),
        );
        let (got, new_kv) = ort.run(b, &step_ids, &last_pos, &mask_vec, &kv)?;
        kv = new_kv;
        let got = Tensor::from_slice(&got).view([b as i64, 1, vocab]);
        decode = decode.max(max_diff(&want, &got));
        greedy_identical &= want
            .select(1, -1)
            .argmax(-1, false)
            .equal(&got.select(1, -1).argmax(-1, false));
        next = want.select(1, -1).argmax(-1, false);
    }
    Ok(ParityReport {
        batch: b,
        prompt_lengths: prompts.iter().map(Vec::len).collect(),
        decode_steps: steps,
        prefill_max_abs_diff: prefill,
        decode_max_abs_diff: decode,
        greedy_identical,
    })
}

/// Deterministic prompts of different lengths with ids in `[0, vocab)`, for `--check`.
pub fn default_prompts(vocab: usize) -> Vec<Vec<i64>> {
    let mut state = 0x5eed_u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as i64 % vocab as i64
    };
    [11usize, 4, 17, 8]
        .iter()
        .map(|&n| (0..n).map(|_| next()).collect())
        .collect()
}
