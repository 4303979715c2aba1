//! The GRPO loss as TRL's `GRPOTrainer` computes it (DESIGN §5), on one micro-batch, with every
//! denominator taken from the whole optimizer step: summing the losses of the micro-batches of a
//! step gives the loss (and gradient) of the step as one batch, whatever the split.
//!
//! Per token: ρ = exp(logπ_θ − logπ_old) and
//! l = −min(ρA, clip(ρ, 1 − ε, 1 + ε_high)·A) + β·(exp(ref − θ) − (ref − θ) − 1),
//! times an optional importance weight (sampler-mismatch correction). Masked positions are selected out (`where`), never multiplied by zero, so a NaN or
//! an infinity there (padding, a token outside the span) cannot reach the loss or its gradient.

use tch::{Kind, Tensor};

/// How per-token losses become one number (TRL's `loss_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Mean over the step's sequences of each sequence's mean over its loss tokens.
    Grpo,
    /// Sum over loss tokens / loss tokens of the step.
    Bnpo,
    /// Sum over loss tokens / (sequences of the step × the maximum completion length).
    DrGrpo,
    /// Sum over loss tokens / loss tokens of the whole step (TRL's default). With the step as the
    /// generation batch, as here, it equals `Bnpo`; TRL's `bnpo` differs only by normalizing per
    /// micro-batch, which is exactly the dependence on the split this crate removes.
    #[default]
    Dapo,
}

/// Settings of the loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossConfig {
    /// The aggregation.
    pub aggregation: Aggregation,
    /// Lower clip: ρ below 1 − ε stops counting for negative advantages.
    pub epsilon: f64,
    /// Upper clip: ρ above 1 + ε_high stops counting for positive advantages.
    pub epsilon_high: f64,
    /// KL coefficient (k3 estimator against the reference policy); 0 needs no reference.
    pub beta: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            aggregation: Aggregation::Dapo,
            epsilon: 0.2,
            epsilon_high: 0.2,
            beta: 0.0,
        }
    }
}

/// What the denominators count, over the whole optimizer step (all its micro-batches).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepTotals {
    /// Loss tokens (positions where the final mask is 1).
    pub tokens: f64,
    /// Sequences.
    pub sequences: f64,
    /// The maximum completion length (`dr_grpo`'s constant: the sampler's token limit).
    pub max_completion_len: f64,
}

/// One micro-batch, `[b, t]` tensors over the positions that may carry a loss.
pub struct LossInputs<'a> {
    /// log π_θ of each token (with gradient).
    pub logp: &'a Tensor,
    /// log π_old (no gradient): the policy before the step's first update.
    pub old_logp: &'a Tensor,
    /// log π_ref, needed when β > 0.
    pub ref_logp: Option<&'a Tensor>,
    /// Per-sequence advantages `[b]`.
    pub advantages: &'a Tensor,
    /// The final mask (1: a loss token), any numeric kind.
    pub mask: &'a Tensor,
    /// Optional per-token importance weights (sampler-mismatch correction), no gradient.
    pub weights: Option<&'a Tensor>,
}

/// The micro-batch's share of the step loss and the sums the step's figures are made of.
pub struct LossOutput {
    /// This micro-batch's contribution to the step loss (scalar, with gradient).
    pub loss: Tensor,
    /// Loss tokens whose ρ was clipped low (ρ < 1 − ε with A < 0).
    pub clipped_low: f64,
    /// Loss tokens whose ρ was clipped high (ρ > 1 + ε_high with A > 0).
    pub clipped_high: f64,
    /// Sum of the per-token KL estimate over loss tokens (0 without a reference).
    pub kl_sum: f64,
    /// Loss tokens in this micro-batch.
    pub tokens: f64,
}

/// Why the inputs cannot make a loss.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LossError {
    /// Tensors of different shapes.
    #[error("loss inputs: {what} has shape {found:?}, expected {expected:?}")]
    Shape {
        /// Which input.
        what: &'static str,
        /// Its shape.
        found: Vec<i64>,
        /// The shape of `logp` (or `[b]` for the advantages).
        expected: Vec<i64>,
    },
    /// β > 0 without reference log-probs.
    #[error("loss inputs: beta = {beta} needs the reference model's log-probs")]
    NoReference {
        /// The coefficient.
        beta: f64,
    },
    /// A denominator of the step is zero.
    #[error("the optimizer step has no {what}: nothing to train on")]
    Empty {
        /// Which count.
        what: &'static str,
    },
}

fn check(what: &'static str, t: &Tensor, expected: &[i64]) -> Result<(), LossError> {
    if t.size() != expected {
        return Err(LossError::Shape {
            what,
            found: t.size(),
            expected: expected.to_vec(),
        });
    }
    Ok(())
}

/// The loss of one micro-batch (see the module documentation).
pub fn grpo_loss(
    inp: &LossInputs<'_>,
    cfg: &LossConfig,
    step: &StepTotals,
) -> Result<LossOutput, LossError> {
    let shape = inp.logp.size();
    check("old_logp", inp.old_logp, &shape)?;
    check("mask", inp.mask, &shape)?;
    check("advantages", inp.advantages, &shape[..1])?;
    if let Some(w) = inp.weights {
        check("weights", w, &shape)?;
    }
    let denominator = match cfg.aggregation {
        Aggregation::Grpo => (step.sequences, "sequence"),
        Aggregation::Bnpo | Aggregation::Dapo => (step.tokens, "loss token"),
        Aggregation::DrGrpo => (step.sequences * step.max_completion_len, "sequence"),
    };
    if denominator.0 <= 0.0 {
        return Err(LossError::Empty {
            what: denominator.1,
        });
    }
    let on = inp.mask.to_kind(Kind::Bool);
    let zeros = inp.logp.zeros_like();
    // Masked positions take the value 0 before any arithmetic, so what they held never matters.
    let pick = |t: &Tensor| t.where_self(&on, &zeros);
    let logp = pick(inp.logp);
    let old = pick(&inp.old_logp.detach());
    let adv = inp.advantages.to_kind(inp.logp.kind()).unsqueeze(1);
    let ratio = (&logp - &old).exp();
    let clipped = ratio.clamp(1.0 - cfg.epsilon, 1.0 + cfg.epsilon_high);
    let unclipped_term = &ratio * &adv;
    let clipped_term = &clipped * &adv;
    let mut per_token = -unclipped_term.minimum(&clipped_term);
    let mut kl_sum = 0.0;
    if cfg.beta > 0.0 {
        let Some(reference) = inp.ref_logp else {
            return Err(LossError::NoReference { beta: cfg.beta });
        };
        check("ref_logp", reference, &shape)?;
        let d = pick(&reference.detach()) - &logp;
        let kl = d.exp() - &d - 1.0;
        kl_sum = kl
            .where_self(&on, &zeros)
            .sum(Kind::Double)
            .double_value(&[]);
        per_token += kl * cfg.beta;
    }
    if let Some(w) = inp.weights {
        per_token *= pick(&w.detach());
    }
    let per_token = per_token.where_self(&on, &zeros);
    let loss = match cfg.aggregation {
        Aggregation::Grpo => {
            let lengths = on
                .sum_dim_intlist(1, false, per_token.kind())
                .clamp_min(1.0);
            (per_token.sum_dim_intlist(1, false, per_token.kind()) / lengths).sum(per_token.kind())
                / denominator.0
        }
        _ => per_token.sum(per_token.kind()) / denominator.0,
    };
    let stats = tch::no_grad(|| {
        let low = ratio
            .lt(1.0 - cfg.epsilon)
            .logical_and(&adv.lt(0.0))
            .logical_and(&on);
        let high = ratio
            .gt(1.0 + cfg.epsilon_high)
            .logical_and(&adv.gt(0.0))
            .logical_and(&on);
        let count = |t: &Tensor| t.sum(Kind::Double).double_value(&[]);
        (count(&low), count(&high), count(&on))
    });
    Ok(LossOutput {
        loss,
        clipped_low: stats.0,
        clipped_high: stats.1,
        kl_sum,
        tokens: stats.2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_at_masked_positions_never_reaches_the_loss_or_gradient() {
        let logp = Tensor::from_slice(&[-1.0f32, f32::NAN, -0.5, f32::INFINITY])
            .reshape([2, 2])
            .set_requires_grad(true);
        let old = Tensor::from_slice(&[-1.1f32, f32::NAN, -0.4, -3.0]).reshape([2, 2]);
        let mask = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 0.0]).reshape([2, 2]);
        let adv = Tensor::from_slice(&[1.0f32, -1.0]);
        let step = StepTotals {
            tokens: 2.0,
            sequences: 2.0,
            max_completion_len: 2.0,
        };
        let inp = LossInputs {
            logp: &logp,
            old_logp: &old,
            ref_logp: Some(&old),
            advantages: &adv,
            mask: &mask,
            weights: None,
        };
        for aggregation in [
            Aggregation::Grpo,
            Aggregation::Bnpo,
            Aggregation::DrGrpo,
            Aggregation::Dapo,
        ] {
            let cfg = LossConfig {
                aggregation,
                beta: 0.04,
                ..Default::default()
            };
            let out = grpo_loss(&inp, &cfg, &step).unwrap();
            assert!(out.loss.double_value(&[]).is_finite(), "{aggregation:?}");
            let g = Tensor::run_backward(&[&out.loss], &[&logp], false, false);
            let g: Vec<f32> = Vec::try_from(g[0].reshape([-1])).unwrap();
            assert_eq!((g[1], g[3]), (0.0, 0.0), "{aggregation:?}: {g:?}");
            assert!(g[0].is_finite() && g[2].is_finite(), "{g:?}");
        }
    }

    #[test]
    fn an_empty_step_and_a_missing_reference_are_errors() {
        let t = Tensor::zeros([1, 2], (Kind::Float, tch::Device::Cpu));
        let adv = Tensor::zeros([1], (Kind::Float, tch::Device::Cpu));
        let inp = LossInputs {
            logp: &t,
            old_logp: &t,
            ref_logp: None,
            advantages: &adv,
            mask: &t,
            weights: None,
        };
        let empty = StepTotals {
            tokens: 0.0,
            sequences: 1.0,
            max_completion_len: 4.0,
        };
        assert!(matches!(
            grpo_loss(&inp, &LossConfig::default(), &empty),
            Err(LossError::Empty { .. })
        ));
        let step = StepTotals {
            tokens: 1.0,
            ..empty
        };
        let cfg = LossConfig {
            beta: 0.1,
            ..Default::default()
        };
        assert!(matches!(
            grpo_loss(&inp, &cfg, &step),
            Err(LossError::NoReference { .. })
        ));
    }
}
