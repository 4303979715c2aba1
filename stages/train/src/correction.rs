//! Sampler/trainer mismatch correction (TRL's `vllm_importance_sampling_*`): the loss of each span
//! token is multiplied by the importance ratio π_old/π_sampler, per token or per sequence, either
//! truncated at a cap or masked (weight 0) beyond it. The weights carry no gradient.

use tch::{Kind, Tensor};

/// How the importance ratio π_old/π_sampler weights the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IsCorrection {
    /// No weighting.
    #[default]
    None,
    /// Per token, min(ratio, cap).
    TokenTruncate,
    /// Per token, ratio where ratio ≤ cap, else 0.
    TokenMask,
    /// Per sequence (the product of its tokens' ratios), min(ratio, cap).
    SequenceTruncate,
    /// Per sequence, ratio where ratio ≤ cap, else 0 (TRL's default mode).
    SequenceMask,
}

impl IsCorrection {
    /// The names of the command line and of TRL (with `-` for `_`).
    pub const NAMES: [&'static str; 5] = [
        "none",
        "token-truncate",
        "token-mask",
        "sequence-truncate",
        "sequence-mask",
    ];

    /// Parses one of [`IsCorrection::NAMES`].
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "none" => Self::None,
            "token-truncate" => Self::TokenTruncate,
            "token-mask" => Self::TokenMask,
            "sequence-truncate" => Self::SequenceTruncate,
            "sequence-mask" => Self::SequenceMask,
            _ => return None,
        })
    }

    /// The command-line name.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// The `[b, t]` weights for `old` and `sampler` log-probs on the grid (`mask` 1 at span tokens),
/// or `None` without correction. Masked positions get weight 1 (the loss never reads them).
pub fn importance_weights(
    mode: IsCorrection,
    cap: f64,
    old: &Tensor,
    sampler: &Tensor,
    mask: &Tensor,
) -> Option<Tensor> {
    let keep = mask.gt(0.0);
    let zero = old.zeros_like();
    let diff = (old - sampler).detach().where_self(&keep, &zero);
    let w = match mode {
        IsCorrection::None => return None,
        IsCorrection::TokenTruncate => diff.exp().clamp_max(cap),
        IsCorrection::TokenMask => {
            let r = diff.exp();
            r.where_self(&r.le(cap), &zero)
        }
        IsCorrection::SequenceTruncate | IsCorrection::SequenceMask => {
            let r = diff
                .sum_dim_intlist(-1, true, Kind::Float)
                .exp()
                .expand_as(&diff);
            if mode == IsCorrection::SequenceTruncate {
                r.clamp_max(cap)
            } else {
                r.where_self(&r.le(cap), &zero)
            }
        }
    };
    Some(w.where_self(&keep, &old.ones_like()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(v: &[f32]) -> Tensor {
        Tensor::from_slice(v).reshape([2, 2])
    }

    #[test]
    fn weights_follow_trl_modes() {
        // Row 0: ratios e^1.5 ≈ 4.48 and e^-0.5; row 1: e^0.5 and a masked position.
        let old = grid(&[0.0, -1.0, -1.0, 0.0]);
        let sampler = grid(&[-1.5, -0.5, -1.5, 9.0]);
        let mask = grid(&[1.0, 1.0, 1.0, 0.0]);
        let get = |m| {
            Vec::<f32>::try_from(
                importance_weights(m, 3.0, &old, &sampler, &mask)
                    .unwrap()
                    .reshape([-1]),
            )
            .unwrap()
        };
        let e = |x: f32| x.exp();
        let close = |a: Vec<f32>, b: [f32; 4]| {
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
            }
        };
        close(
            get(IsCorrection::TokenTruncate),
            [3.0, e(-0.5), e(0.5), 1.0],
        );
        close(get(IsCorrection::TokenMask), [0.0, e(-0.5), e(0.5), 1.0]);
        // Row 0's sequence ratio is e^1.0 ≈ 2.72 (under the cap); row 1's is e^0.5.
        close(
            get(IsCorrection::SequenceTruncate),
            [e(1.0), e(1.0), e(0.5), 1.0],
        );
        close(
            get(IsCorrection::SequenceMask),
            [e(1.0), e(1.0), e(0.5), 1.0],
        );
        let strict = Vec::<f32>::try_from(
            importance_weights(IsCorrection::SequenceMask, 2.0, &old, &sampler, &mask)
                .unwrap()
                .reshape([-1]),
        )
        .unwrap();
        close(strict, [0.0, 0.0, e(0.5), 1.0]);
        assert!(importance_weights(IsCorrection::None, 3.0, &old, &sampler, &mask).is_none());
        for n in IsCorrection::NAMES {
            assert_eq!(IsCorrection::parse(n).map(IsCorrection::as_str), Some(n));
        }
    }
}
