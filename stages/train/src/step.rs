//! One GRPO optimizer step over a batch of examples: micro-batches by a padded-token budget,
//! π_old (and π_ref) computed once before the step's first update (and reused for every iteration μ), the loss
//! of every micro-batch with the step's denominators, accumulated gradients, clipping, AdamW. The
//! figures practitioners read come back with it.

use flywheel_llama::Llama;
use flywheel_store::TrainExample;
use tch::{Kind, Tensor};

use crate::correction::{importance_weights, IsCorrection};
use crate::logprobs::{span_logprobs, span_logprobs_and_entropy, PackError, Sequence, SpanBatch};
use crate::loss::{grpo_loss, LossConfig, LossError, LossInputs, StepTotals};
use crate::optim::AdamW;

/// Settings of a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepConfig {
    /// The loss.
    pub loss: LossConfig,
    /// Padded tokens per micro-batch (at least one example each).
    pub micro_batch_tokens: usize,
    /// Global gradient-norm clip (0: none).
    pub max_grad_norm: f64,
    /// The sampling temperature (log-probs are of logits / T).
    pub temperature: f64,
    /// The sampler's token limit (`dr_grpo`'s constant).
    pub max_completion_len: usize,
    /// Sampler/trainer mismatch correction.
    pub is_correction: IsCorrection,
    /// Its cap.
    pub is_cap: f64,
}

/// What a step measured.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepStats {
    /// The step loss.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Padded tokens the model ran on.
    pub tokens: u64,
    /// Span (loss) tokens.
    pub span_tokens: u64,
    /// Fraction of span tokens clipped low / high.
    pub clip_ratio_low: f64,
    /// See `clip_ratio_low`.
    pub clip_ratio_high: f64,
    /// Mean k3 KL estimate per span token (0 without a reference).
    pub kl: f64,
    /// Mean and max |log π_old − log π_sampler| over span tokens.
    pub logprob_diff_mean: f64,
    /// See `logprob_diff_mean`.
    pub logprob_diff_max: f64,
    /// Mean entropy of π_old at span positions.
    pub entropy: f64,
    /// Mean importance weight over span tokens (1 without correction).
    pub is_weight_mean: f64,
}

/// Why a step cannot run.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// An example does not pack (span or token ids).
    #[error(transparent)]
    Pack(#[from] PackError),
    /// The loss refused its inputs.
    #[error(transparent)]
    Loss(#[from] LossError),
    /// An example's sampler log-probs do not match its span.
    #[error("example (task {task}, attempt {attempt}, reflection {reflection}): {found} sampler log-probs for a span of {span}")]
    SamplerLogprobs {
        task: u64,
        attempt: u32,
        reflection: u32,
        found: usize,
        span: usize,
    },
}

/// The example as a sequence to pack.
pub fn sequence(e: &TrainExample) -> Sequence<'_> {
    Sequence {
        input_ids: &e.input_ids,
        span_start: e.span_start as usize,
        span_end: e.span_end as usize,
    }
}

/// One sampler log-prob per span token (the span itself is [`Sequence::check`]ed).
pub fn check_sampler_logprobs(e: &TrainExample) -> Result<(), StepError> {
    let span = (e.span_end.saturating_sub(e.span_start)) as usize;
    if e.sampler_logprobs.len() != span {
        return Err(StepError::SamplerLogprobs {
            task: e.task_index,
            attempt: e.attempt,
            reflection: e.reflection,
            found: e.sampler_logprobs.len(),
            span,
        });
    }
    Ok(())
}

/// A packed micro-batch with what the loss needs besides the policy.
pub struct MicroBatch {
    batch: SpanBatch,
    advantages: Tensor,
    sampler: Tensor,
    padded_tokens: u64,
}

/// Splits `examples` in order into micro-batches of at most `budget` padded tokens and packs them
/// for a model of `vocab` tokens.
pub fn micro_batches(
    examples: &[&TrainExample],
    budget: usize,
    vocab: usize,
    device: tch::Device,
) -> Result<Vec<MicroBatch>, StepError> {
    let mut groups: Vec<Vec<&TrainExample>> = Vec::new();
    let mut longest = 0;
    for &e in examples {
        let len = e.input_ids.len();
        match groups.last_mut() {
            Some(g) if (g.len() + 1) * longest.max(len) <= budget => {
                g.push(e);
                longest = longest.max(len);
            }
            _ => {
                groups.push(vec![e]);
                longest = len;
            }
        }
    }
    groups
        .into_iter()
        .map(|g| {
            let seqs: Vec<Sequence<'_>> = g.iter().map(|e| sequence(e)).collect();
            let batch = SpanBatch::pack(&seqs, vocab, device)?;
            let mut sampler = Vec::new();
            for e in &g {
                check_sampler_logprobs(e)?;
                sampler.extend_from_slice(&e.sampler_logprobs);
            }
            let adv: Vec<f32> = g.iter().map(|e| e.advantage).collect();
            let longest = g.iter().map(|e| e.input_ids.len()).max().unwrap_or(0);
            Ok(MicroBatch {
                advantages: Tensor::from_slice(&adv).to_device(device),
                sampler: Tensor::from_slice(&sampler).to_device(device),
                padded_tokens: (g.len() * longest) as u64,
                batch,
            })
        })
        .collect()
}

/// What a step's updates are measured against, per micro-batch, fixed before the first update.
pub struct Anchor {
    /// log π_old of the span tokens `[n]` and the sum of π_old's entropy over them; `None` when
    /// the batch is used once (μ = 1): π_old is then the policy of the gradient pass itself,
    /// detached, and a separate forward would be wasted.
    pub old: Option<(Tensor, f64)>,
    /// log π_ref `[n]`, when a reference model is given.
    pub reference: Option<Tensor>,
}

/// The anchors of every micro-batch (no gradient): with `keep_old` (μ > 1), π_old, the policy
/// before the step's first update, reused unchanged for every iteration over the same batch;
/// π_ref from the frozen reference model when β > 0.
pub fn anchors(
    model: &Llama,
    reference: Option<&Llama>,
    batches: &[MicroBatch],
    temperature: f64,
    keep_old: bool,
) -> Vec<Anchor> {
    tch::no_grad(|| {
        batches
            .iter()
            .map(|mb| Anchor {
                old: keep_old.then(|| {
                    let (old, entropy) = span_logprobs_and_entropy(model, &mb.batch, temperature);
                    (old, entropy.sum(Kind::Double).double_value(&[]))
                }),
                reference: reference.map(|r| span_logprobs(r, &mb.batch, temperature)),
            })
            .collect()
    })
}

/// One optimizer update at learning rate `lr` over `batches` against their [`anchors`]:
/// [`accumulate`], clip, AdamW.
pub fn update(
    model: &Llama,
    opt: &mut AdamW,
    batches: &[MicroBatch],
    anchors: &[Anchor],
    cfg: &StepConfig,
    lr: f64,
) -> Result<StepStats, StepError> {
    let mut stats = accumulate(model, batches, anchors, cfg)?;
    stats.grad_norm = opt.clip_grad_norm(cfg.max_grad_norm);
    opt.step(lr);
    Ok(stats)
}

/// The loss of every micro-batch, back-propagated: the step's gradient is left accumulated in
/// the model's variables (`grad_norm` is not measured here).
pub fn accumulate(
    model: &Llama,
    batches: &[MicroBatch],
    anchors: &[Anchor],
    cfg: &StepConfig,
) -> Result<StepStats, StepError> {
    let span_tokens: i64 = batches.iter().map(|mb| mb.batch.tokens()).sum();
    let sequences: usize = batches
        .iter()
        .map(|mb| mb.advantages.size()[0] as usize)
        .sum();
    let totals = StepTotals {
        tokens: span_tokens as f64,
        sequences: sequences as f64,
        max_completion_len: cfg.max_completion_len as f64,
    };
    let mut stats = StepStats {
        span_tokens: span_tokens as u64,
        ..Default::default()
    };
    let (mut low, mut high, mut kl, mut diff_sum) = (0.0, 0.0, 0.0, 0.0);
    let (mut entropy, mut weight_sum) = (0.0, 0.0);
    for (mb, anchor) in batches.iter().zip(anchors) {
        let (logp, old) = match &anchor.old {
            Some((old, entropy_sum)) => {
                entropy += entropy_sum;
                (
                    span_logprobs(model, &mb.batch, cfg.temperature),
                    old.shallow_clone(),
                )
            }
            None => {
                let (logp, e) = span_logprobs_and_entropy(model, &mb.batch, cfg.temperature);
                entropy += e.sum(Kind::Double).double_value(&[]);
                let old = logp.detach();
                (logp, old)
            }
        };
        let grid = |t: &Tensor| mb.batch.to_grid(t);
        let mask = mb.batch.mask();
        let old_grid = grid(&old);
        let weights = importance_weights(
            cfg.is_correction,
            cfg.is_cap,
            &old_grid,
            &grid(&mb.sampler),
            &mask,
        );
        weight_sum += match &weights {
            Some(w) => (w * &mask).sum(Kind::Double).double_value(&[]),
            None => mb.batch.tokens() as f64,
        };
        let ref_grid = anchor.reference.as_ref().map(grid);
        let out = grpo_loss(
            &LossInputs {
                logp: &grid(&logp),
                old_logp: &old_grid,
                ref_logp: ref_grid.as_ref(),
                advantages: &mb.advantages,
                mask: &mask,
                weights: weights.as_ref(),
            },
            &cfg.loss,
            &totals,
        )?;
        out.loss.backward();
        stats.loss += out.loss.double_value(&[]);
        stats.tokens += mb.padded_tokens;
        low += out.clipped_low;
        high += out.clipped_high;
        kl += out.kl_sum;
        let d = (&old - &mb.sampler).abs();
        diff_sum += d.sum(Kind::Double).double_value(&[]);
        stats.logprob_diff_max = stats
            .logprob_diff_max
            .max(d.max().to_kind(Kind::Double).double_value(&[]));
    }
    let n = (span_tokens as f64).max(1.0);
    stats.clip_ratio_low = low / n;
    stats.clip_ratio_high = high / n;
    stats.kl = kl / n;
    stats.logprob_diff_mean = diff_sum / n;
    stats.entropy = entropy / n;
    stats.is_weight_mean = weight_sum / n;
    Ok(stats)
}
