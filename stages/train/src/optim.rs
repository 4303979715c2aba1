//! AdamW over named tensors, written out so its moments can be saved with the weights (tch's
//! `nn::Optimizer` cannot save or load its state), the learning-rate schedule (linear warmup,
//! then cosine decay to 0, as transformers' `get_cosine_schedule_with_warmup`) and global
//! gradient-norm clipping (as `torch.nn.utils.clip_grad_norm_`). The update is PyTorch's
//! `torch.optim.AdamW` step for step, so a run can be checked against it.

use tch::{Kind, Tensor};

/// AdamW settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay (not applied to norms and biases).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Whether a parameter decays: not biases, not normalization weights (as transformers' Trainer
/// groups them).
pub fn decays(name: &str) -> bool {
    !(name.ends_with("bias") || name.contains("norm"))
}

/// One trained tensor with its moments.
struct Slot {
    name: String,
    /// The model's tensor (its gradient drives the update).
    param: Tensor,
    /// An f32 master copy the update is applied to when the model runs in lower precision; the
    /// model's tensor is then refreshed from it, so small updates are not rounded away.
    master: Option<Tensor>,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    decay: bool,
}

/// AdamW over named parameters.
pub struct AdamW {
    config: AdamWConfig,
    slots: Vec<Slot>,
    step: u64,
}

impl AdamW {
    /// An optimizer over `params` (name, tensor that requires grad), moments at zero. Tensors
    /// that are not f32 get an f32 master copy (see [`AdamW::weights`]).
    pub fn new(params: Vec<(String, Tensor)>, config: AdamWConfig) -> Self {
        let slots = params
            .into_iter()
            .map(|(name, param)| Slot {
                decay: decays(&name),
                exp_avg: param.zeros_like().to_kind(Kind::Float),
                exp_avg_sq: param.zeros_like().to_kind(Kind::Float),
                master: (param.kind() != Kind::Float)
                    .then(|| tch::no_grad(|| param.detach().to_kind(Kind::Float))),
                name,
                param,
            })
            .collect();
        Self {
            config,
            slots,
            step: 0,
        }
    }

    /// Optimizer steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Clips the gradients to a global L2 norm of `max_norm` (0: no clipping) and returns the
    /// norm before clipping.
    pub fn clip_grad_norm(&self, max_norm: f64) -> f64 {
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self
                .slots
                .iter()
                .map(|s| s.param.grad())
                .filter(Tensor::defined)
                .collect();
            if grads.is_empty() {
                return 0.0;
            }
            // As torch: the norm of the per-tensor norms, without a copy of any gradient.
            let norms: Vec<Tensor> = grads
                .iter()
                .map(|g| match g.kind() {
                    Kind::Float => g.norm(),
                    _ => g.to_kind(Kind::Float).norm(),
                })
                .collect();
            let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
            let coef = max_norm / (total + 1e-6);
            if max_norm > 0.0 && coef < 1.0 {
                for mut g in grads {
                    let _ = g.g_mul_scalar_(coef);
                }
            }
            total
        })
    }

    /// One update at learning rate `lr` from the parameters' current gradients (a parameter
    /// without one is left alone), then the gradients are zeroed.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        tch::no_grad(|| {
            for s in &mut self.slots {
                let mut grad = s.param.grad();
                if !grad.defined() {
                    continue;
                }
                let g = grad.to_kind(Kind::Float);
                let mut target = s.master.as_ref().unwrap_or(&s.param).shallow_clone();
                if s.decay && c.weight_decay != 0.0 {
                    let _ = target.g_mul_scalar_(1.0 - lr * c.weight_decay);
                }
                let _ = s.exp_avg.lerp_(&g, 1.0 - c.beta1);
                let _ = s.exp_avg_sq.g_mul_scalar_(c.beta2);
                let _ = s.exp_avg_sq.addcmul_(&g, &g.g_mul_scalar(1.0 - c.beta2));
                // torch's single-tensor AdamW, in place with one temporary: the denominator,
                // scaled by −bias1/lr so that `addcdiv_` (value 1 in tch) adds −lr/bias1 · m/denom.
                if lr != 0.0 {
                    let mut denom = s.exp_avg_sq.sqrt();
                    let _ = denom.g_div_scalar_(bias2_sqrt);
                    let _ = denom.g_add_scalar_(c.eps);
                    let _ = denom.g_mul_scalar_(-bias1 / lr);
                    let _ = target.addcdiv_(&s.exp_avg, &denom);
                }
                if s.master.is_some() {
                    s.param.copy_(&target);
                }
                let _ = grad.zero_();
            }
        });
    }

    /// The optimizer's state as named tensors (`<name>.exp_avg`, `<name>.exp_avg_sq`), for saving
    /// beside the weights; the step count is [`AdamW::steps`].
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.slots
            .iter()
            .flat_map(|s| {
                [
                    (format!("{}.exp_avg", s.name), s.exp_avg.shallow_clone()),
                    (
                        format!("{}.exp_avg_sq", s.name),
                        s.exp_avg_sq.shallow_clone(),
                    ),
                ]
            })
            .collect()
    }

    /// The trained weights in f32, named (the master copies where the model runs in lower
    /// precision): what a checkpoint and the output model hold.
    pub fn weights(&self) -> Vec<(String, Tensor)> {
        self.slots
            .iter()
            .map(|s| {
                let t = s.master.as_ref().unwrap_or(&s.param);
                (s.name.clone(), t.shallow_clone())
            })
            .collect()
    }

    /// Sets the f32 master copies (and through them the model's tensors) from saved `weights`,
    /// so a lower-precision run resumes from its exact f32 state; a missing tensor is an error.
    pub fn load_weights(&mut self, weights: &[(String, Tensor)]) -> Result<(), String> {
        for s in &mut self.slots {
            let src = weights
                .iter()
                .find(|(n, _)| *n == s.name)
                .map(|(_, t)| t)
                .ok_or_else(|| format!("checkpoint weights have no `{}`", s.name))?;
            if src.size() != s.param.size() {
                return Err(format!(
                    "`{}` has shape {:?}, expected {:?}",
                    s.name,
                    src.size(),
                    s.param.size()
                ));
            }
            tch::no_grad(|| {
                if let Some(m) = &mut s.master {
                    m.copy_(src);
                }
                s.param.copy_(src);
            });
        }
        Ok(())
    }

    /// Restores moments saved by [`AdamW::state`] and the step count; a missing or misshapen
    /// moment is an error naming it.
    pub fn load_state(&mut self, state: &[(String, Tensor)], steps: u64) -> Result<(), String> {
        for s in &mut self.slots {
            for (suffix, dst) in [
                ("exp_avg", &mut s.exp_avg),
                ("exp_avg_sq", &mut s.exp_avg_sq),
            ] {
                let key = format!("{}.{suffix}", s.name);
                let src = state
                    .iter()
                    .find(|(n, _)| *n == key)
                    .map(|(_, t)| t)
                    .ok_or_else(|| format!("optimizer state has no `{key}`"))?;
                if src.size() != dst.size() {
                    return Err(format!(
                        "`{key}` has shape {:?}, expected {:?}",
                        src.size(),
                        dst.size()
                    ));
                }
                tch::no_grad(|| dst.copy_(src));
            }
        }
        self.step = steps;
        Ok(())
    }
}

/// Warmup steps for a warmup ratio (TRL: `ceil(total × ratio)`).
pub fn warmup_steps(total: u64, ratio: f64) -> u64 {
    (total as f64 * ratio).ceil() as u64
}

/// The learning rate of 0-based optimizer step `step` of `total`: linear warmup over `warmup`
/// steps, then cosine decay to 0 (transformers' `get_cosine_schedule_with_warmup`, half a cycle).
pub fn lr_at(base: f64, step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return base * step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64;
    base * (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norms_and_biases_do_not_decay() {
        assert!(decays("model.layers.0.self_attn.q_proj.weight"));
        assert!(decays("model.embed_tokens.weight"));
        assert!(!decays("model.layers.3.input_layernorm.weight"));
        assert!(!decays("model.norm.weight"));
        assert!(!decays("model.layers.0.self_attn.q_proj.bias"));
    }

    #[test]
    fn schedule_warms_up_linearly_then_decays_to_zero() {
        assert_eq!(warmup_steps(100, 0.03), 3);
        assert_eq!(lr_at(1.0, 0, 3, 100), 0.0);
        assert!((lr_at(1.0, 2, 3, 100) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(lr_at(1.0, 3, 3, 100), 1.0);
        assert!((lr_at(1.0, 3 + 97 / 2, 3, 100) - 0.5).abs() < 0.02);
        assert!(lr_at(1.0, 100, 3, 100) < 1e-12);
    }
}
