//! Token sampling: temperature, top-k, top-p, seeded per request, with the log-probability of
//! every sampled token. No full-vocabulary sort on the common paths.
//!
//! Truncation follows transformers' warpers (`TopKLogitsWarper` then `TopPLogitsWarper`) and
//! vLLM: top-k first, then top-p over the *renormalized* top-k mass, i.e. the smallest set of the
//! k most probable tokens whose share of the top-k mass reaches `top_p` (a token is kept when the
//! mass of the tokens more probable than it is below `top_p`). The reported log-prob is always of
//! the full tempered distribution, before truncation.

use flywheel_core::Xoshiro256;

/// Sampling settings of one request.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 1.0 disables nucleus sampling.
    pub top_p: f32,
    /// 0 disables top-k.
    pub top_k: usize,
    pub max_new_tokens: usize,
    /// Generation stops when the decoded text contains one of these (the text is kept).
    #[serde(default)]
    pub stop: Vec<String>,
    /// Keep going past end-of-sequence tokens (fixed-length runs for benchmarks).
    #[serde(default)]
    pub ignore_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens: 128,
            stop: Vec::new(),
            ignore_eos: false,
        }
    }
}

/// Draws one token from `logits` (one vocabulary row). Returns the token and its log-probability
/// under the temperature-scaled distribution over the whole vocabulary, before top-k/top-p
/// truncation (what a trainer recomputes as log π_old); greedy reports the plain log-softmax.
/// A logit that is NaN or +∞ (or a row that is all −∞): no distribution to sample from.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("logit {value} at vocabulary index {index} (a distribution needs finite logits)")]
pub struct NonFiniteLogit {
    /// The first offending vocabulary index.
    pub index: usize,
    /// Its value.
    pub value: f32,
}

pub fn sample(
    logits: &[f32],
    params: &SamplingParams,
    rng: &mut Xoshiro256,
) -> Result<(u32, f32), NonFiniteLogit> {
    let t = if params.temperature > 0.0 {
        params.temperature
    } else {
        1.0
    };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let inv_t = 1.0 / t;
    // One exp per entry (f32, vectorizable), accumulated in f64 so a 49k-entry sum does not drift.
    let weights: Vec<f32> = logits.iter().map(|&l| ((l - max) * inv_t).exp()).collect();
    let sum: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    // NaN or +inf anywhere makes the sum NaN (inf - inf); an all -inf row has max -inf. Only
    // then is the row searched for the culprit, so the common path costs nothing more.
    if !(sum.is_finite() && max.is_finite()) {
        let index = logits
            .iter()
            .position(|l| l.is_nan() || *l == f32::INFINITY)
            .unwrap_or(0);
        let value = logits.get(index).copied().unwrap_or(f32::NAN);
        return Err(NonFiniteLogit { index, value });
    }
    let log_z = sum.ln();
    let logprob = |i: usize| (f64::from((logits[i] - max) * inv_t) - log_z) as f32;
    if params.temperature <= 0.0 {
        let best = argmax(logits);
        return Ok((best as u32, logprob(best)));
    }
    let u = rng.uniform();
    let full = params.top_k == 0 || params.top_k >= logits.len();
    if full && params.top_p >= 1.0 {
        // Inverse CDF in vocabulary order: one pass, no sort.
        let target = u * sum;
        let mut acc = 0.0;
        for (i, &w) in weights.iter().enumerate() {
            acc += f64::from(w);
            if acc > target {
                return Ok((i as u32, logprob(i)));
            }
        }
        let last = logits.len() - 1;
        return Ok((last as u32, logprob(last)));
    }
    let cands = nucleus(logits, &weights, sum, params.top_k, params.top_p);
    let mass: f64 = cands.iter().map(|&(_, p)| p).sum();
    let target = u * mass;
    let mut acc = 0.0;
    for &(i, p) in &cands {
        acc += p;
        if acc > target {
            return Ok((i as u32, logprob(i)));
        }
    }
    let i = cands.last().map_or(0, |c| c.0);
    Ok((i as u32, logprob(i)))
}

pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best
}

/// The kept tokens, most probable first, with unnormalized probabilities: the top `top_k`
/// (0: all), then of those the smallest prefix whose share of their mass reaches `top_p`. Without
/// top-k, sorts a growing prefix (64, 512, …) rather than the whole vocabulary, which is exact
/// because the kept set is a prefix of the sorted order.
pub(crate) fn nucleus(
    logits: &[f32],
    weights: &[f32],
    sum: f64,
    top_k: usize,
    top_p: f32,
) -> Vec<(usize, f64)> {
    let n = logits.len();
    let k_cap = if top_k == 0 { n } else { top_k.min(n) };
    // With top-k the nucleus is measured against the top-k mass, so the whole top-k set is
    // needed at once; without it the mass is the vocabulary's and a prefix can suffice.
    let mut width = if k_cap < n { k_cap } else { 64.min(n) };
    loop {
        let mut idx: Vec<usize> = (0..n).collect();
        if width < idx.len() {
            idx.select_nth_unstable_by(width - 1, |&a, &b| logits[b].total_cmp(&logits[a]));
            idx.truncate(width);
        }
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        let mass = if k_cap < n {
            idx.iter().map(|&i| f64::from(weights[i])).sum()
        } else {
            sum
        };
        let mut out = Vec::with_capacity(idx.len());
        let mut acc = 0.0;
        for i in idx {
            let p = f64::from(weights[i]);
            out.push((i, p));
            acc += p;
            if acc >= f64::from(top_p) * mass {
                return out;
            }
        }
        if width >= k_cap {
            return out;
        }
        width = (width * 8).min(k_cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kept distribution computed independently: a full sort, top-k, renormalize, keep
    /// while the renormalized mass before a token is below top-p (transformers' warpers).
    fn reference(logits: &[f32], t: f64, top_k: usize, top_p: f64) -> Vec<(usize, f64)> {
        let m = logits
            .iter()
            .map(|&l| f64::from(l))
            .fold(f64::MIN, f64::max);
        let mut p: Vec<(usize, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i, ((f64::from(l) - m) / t).exp()))
            .collect();
        p.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if top_k > 0 {
            p.truncate(top_k);
        }
        let z: f64 = p.iter().map(|x| x.1).sum();
        let mut kept = Vec::new();
        let mut before = 0.0;
        for (i, w) in p {
            if before >= top_p {
                break;
            }
            before += w / z;
            kept.push((i, w));
        }
        let z2: f64 = kept.iter().map(|x| x.1).sum();
        kept.into_iter().map(|(i, w)| (i, w / z2)).collect()
    }

    #[test]
    fn top_p_is_taken_over_the_renormalized_top_k_mass() {
        // Probabilities ∝ 8, 4, 2, 1, 1 (mass 16). Top-k 3 keeps 8, 4, 2 (mass 14); top-p 0.8 of
        // that is 11.2, reached by 8 + 4 = 12: two tokens. Measured against the full mass, 0.8
        // would be 12.8 and take the third token too. Likewise k 2, p 0.6: 7.2 of 12 is reached
        // by the first token alone, 9.6 of 16 is not.
        let logits: Vec<f32> = [8.0f32, 4.0, 2.0, 1.0, 1.0]
            .iter()
            .map(|w| w.ln())
            .collect();
        for (k, top_p) in [
            (3, 0.8f32),
            (2, 0.6),
            (3, 0.5),
            (0, 0.8),
            (0, 0.95),
            (4, 0.99),
        ] {
            let want = reference(&logits, 1.0, k, f64::from(top_p));
            let weights: Vec<f32> = logits.iter().map(|l| l.exp() / 8.0).collect();
            let sum: f64 = weights.iter().map(|&w| f64::from(w)).sum();
            let got = nucleus(&logits, &weights, sum, k, top_p);
            let z: f64 = got.iter().map(|x| x.1).sum();
            let got: Vec<(usize, f64)> = got.into_iter().map(|(i, w)| (i, w / z)).collect();
            assert_eq!(
                got.len(),
                want.len(),
                "k={k} p={top_p}: {got:?} vs {want:?}"
            );
            for ((gi, gp), (wi, wp)) in got.iter().zip(&want) {
                assert_eq!(gi, wi);
                assert!((gp - wp).abs() < 1e-6, "k={k} p={top_p}: {gp} vs {wp}");
            }
        }
        // Sampled frequencies follow the renormalized kept distribution.
        let params = SamplingParams {
            top_k: 3,
            top_p: 0.8,
            ..Default::default()
        };
        let want = reference(&logits, 1.0, 3, 0.8);
        assert_eq!(want.len(), 2, "8/14 < 0.8 <= 12/14: two tokens");
        let mut rng = Xoshiro256::new(11);
        let mut counts = [0usize; 5];
        for _ in 0..30_000 {
            counts[sample(&logits, &params, &mut rng).unwrap().0 as usize] += 1;
        }
        for (i, p) in want {
            let f = counts[i] as f64 / 30_000.0;
            assert!((f - p).abs() < 0.01, "token {i}: {f} vs {p}");
        }
        assert_eq!(counts[2] + counts[3] + counts[4], 0);
    }

    #[test]
    fn a_non_finite_logit_is_an_error_naming_it() {
        let p = SamplingParams::default();
        let mut rng = Xoshiro256::new(1);
        let err = sample(&[0.0, f32::NAN, 1.0], &p, &mut rng).unwrap_err();
        assert_eq!(err.index, 1);
        let err = sample(&[0.0, 1.0, f32::INFINITY], &p, &mut rng).unwrap_err();
        assert_eq!((err.index, err.value), (2, f32::INFINITY));
        assert!(sample(&[f32::NEG_INFINITY; 3], &p, &mut rng).is_err());
        // -inf entries are masking, not an error.
        let (t, _) = sample(&[f32::NEG_INFINITY, 0.0], &p, &mut rng).unwrap();
        assert_eq!(t, 1);
    }

    #[test]
    fn greedy_takes_argmax_and_reports_log_softmax() {
        let logits = [1.0f32, 3.0, 2.0];
        let p = SamplingParams {
            temperature: 0.0,
            ..Default::default()
        };
        let (t, lp) = sample(&logits, &p, &mut Xoshiro256::new(1)).unwrap();
        assert_eq!(t, 1);
        // log softmax by hand: 3 - ln(e^1 + e^3 + e^2) = -0.40760596
        assert!((lp - (-0.407_605_96)).abs() < 1e-6, "{lp}");
    }

    #[test]
    fn sampling_frequencies_follow_the_tempered_distribution() {
        let logits = [0.0f32, (2.0f32).ln(), (5.0f32).ln()]; // probabilities 1/8, 2/8, 5/8 at T=1
        let p = SamplingParams::default();
        let mut rng = Xoshiro256::new(42);
        let mut counts = [0usize; 3];
        for _ in 0..40_000 {
            counts[sample(&logits, &p, &mut rng).unwrap().0 as usize] += 1;
        }
        let f: Vec<f64> = counts.iter().map(|&c| c as f64 / 40_000.0).collect();
        assert!(
            (f[0] - 0.125).abs() < 0.01
                && (f[1] - 0.25).abs() < 0.01
                && (f[2] - 0.625).abs() < 0.01,
            "{f:?}"
        );
        // At T=2 the probabilities are proportional to 1, √2, √5.
        let p2 = SamplingParams {
            temperature: 2.0,
            ..Default::default()
        };
        let (t, lp) = sample(&logits, &p2, &mut Xoshiro256::new(3)).unwrap();
        let z = 1.0 + 2f64.sqrt() + 5f64.sqrt();
        let want = [1.0 / z, 2f64.sqrt() / z, 5f64.sqrt() / z][t as usize].ln();
        assert!((f64::from(lp) - want).abs() < 1e-6);
    }

    #[test]
    fn top_k_and_top_p_never_leave_the_nucleus() {
        let logits: Vec<f32> = (0..1000).map(|i| -(i as f32) * 0.01).collect();
        let mut rng = Xoshiro256::new(7);
        let k = SamplingParams {
            top_k: 3,
            ..Default::default()
        };
        assert!((0..2000).all(|_| sample(&logits, &k, &mut rng).unwrap().0 < 3));
        // Three dominant tokens holding ~97% of the mass: top_p 0.9 keeps only them.
        let mut peaked = vec![-20.0f32; 5000];
        peaked[10] = 5.0;
        peaked[20] = 4.5;
        peaked[30] = 4.0;
        let p = SamplingParams {
            top_p: 0.9,
            ..Default::default()
        };
        let seen: std::collections::BTreeSet<u32> = (0..2000)
            .map(|_| sample(&peaked, &p, &mut rng).unwrap().0)
            .collect();
        assert_eq!(seen, [10, 20, 30].into_iter().collect());
    }

    #[test]
    fn same_seed_same_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let p = SamplingParams {
            top_p: 0.95,
            temperature: 0.7,
            ..Default::default()
        };
        let run = |seed| -> Vec<u32> {
            let mut r = Xoshiro256::new(seed);
            (0..100)
                .map(|_| sample(&logits, &p, &mut r).unwrap().0)
                .collect()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }
}
