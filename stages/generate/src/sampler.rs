//! Token sampling: temperature, top-k, top-p, seeded per request, with the log-probability of
//! every sampled token. No full-vocabulary sort on the common paths.

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

/// xoshiro256** seeded through SplitMix64: small, fast, stable across platforms and versions,
/// so the same seed gives the same draws everywhere.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Draws one token from `logits` (one vocabulary row). Returns the token and its log-probability
/// under the temperature-scaled distribution over the whole vocabulary, before top-k/top-p
/// truncation (what a trainer recomputes as log π_old); greedy reports the plain log-softmax.
pub fn sample(logits: &[f32], params: &SamplingParams, rng: &mut Rng) -> (u32, f32) {
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
    let log_z = sum.ln();
    let logprob = |i: usize| (f64::from((logits[i] - max) * inv_t) - log_z) as f32;
    if params.temperature <= 0.0 {
        let best = argmax(logits);
        return (best as u32, logprob(best));
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
                return (i as u32, logprob(i));
            }
        }
        let last = logits.len() - 1;
        return (last as u32, logprob(last));
    }
    let cands = nucleus(logits, &weights, sum, params.top_k, params.top_p);
    let mass: f64 = cands.iter().map(|&(_, p)| p).sum();
    let target = u * mass;
    let mut acc = 0.0;
    for &(i, p) in &cands {
        acc += p;
        if acc > target {
            return (i as u32, logprob(i));
        }
    }
    let i = cands.last().map_or(0, |c| c.0);
    (i as u32, logprob(i))
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

/// The smallest set of most probable tokens, sorted by probability, that satisfies top-k and
/// top-p; unnormalized probabilities. Sorts a growing prefix (64, 512, …) rather than the whole
/// vocabulary, which is exact because the kept set is a prefix of the sorted order.
fn nucleus(
    logits: &[f32],
    weights: &[f32],
    sum: f64,
    top_k: usize,
    top_p: f32,
) -> Vec<(usize, f64)> {
    let k_cap = if top_k == 0 {
        logits.len()
    } else {
        top_k.min(logits.len())
    };
    let mut width = 64.min(k_cap);
    loop {
        let mut idx: Vec<usize> = (0..logits.len()).collect();
        if width < idx.len() {
            idx.select_nth_unstable_by(width - 1, |&a, &b| logits[b].total_cmp(&logits[a]));
            idx.truncate(width);
        }
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        let mut out = Vec::with_capacity(idx.len());
        let mut acc = 0.0;
        for i in idx {
            let p = f64::from(weights[i]);
            out.push((i, p));
            acc += p;
            if acc >= f64::from(top_p) * sum {
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

    #[test]
    fn greedy_takes_argmax_and_reports_log_softmax() {
        let logits = [1.0f32, 3.0, 2.0];
        let p = SamplingParams {
            temperature: 0.0,
            ..Default::default()
        };
        let (t, lp) = sample(&logits, &p, &mut Rng::new(1));
        assert_eq!(t, 1);
        // log softmax by hand: 3 - ln(e^1 + e^3 + e^2) = -0.40760596
        assert!((lp - (-0.407_605_96)).abs() < 1e-6, "{lp}");
    }

    #[test]
    fn sampling_frequencies_follow_the_tempered_distribution() {
        let logits = [0.0f32, (2.0f32).ln(), (5.0f32).ln()]; // probabilities 1/8, 2/8, 5/8 at T=1
        let p = SamplingParams::default();
        let mut rng = Rng::new(42);
        let mut counts = [0usize; 3];
        for _ in 0..40_000 {
            counts[sample(&logits, &p, &mut rng).0 as usize] += 1;
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
        let (t, lp) = sample(&logits, &p2, &mut Rng::new(3));
        let z = 1.0 + 2f64.sqrt() + 5f64.sqrt();
        let want = [1.0 / z, 2f64.sqrt() / z, 5f64.sqrt() / z][t as usize].ln();
        assert!((f64::from(lp) - want).abs() < 1e-6);
    }

    #[test]
    fn top_k_and_top_p_never_leave_the_nucleus() {
        let logits: Vec<f32> = (0..1000).map(|i| -(i as f32) * 0.01).collect();
        let mut rng = Rng::new(7);
        let k = SamplingParams {
            top_k: 3,
            ..Default::default()
        };
        assert!((0..2000).all(|_| sample(&logits, &k, &mut rng).0 < 3));
        // Three dominant tokens holding ~97% of the mass: top_p 0.9 keeps only them.
        let mut peaked = vec![-20.0f32; 5000];
        peaked[10] = 5.0;
        peaked[20] = 4.5;
        peaked[30] = 4.0;
        let p = SamplingParams {
            top_p: 0.9,
            ..Default::default()
        };
        let seen: std::collections::BTreeSet<u32> =
            (0..2000).map(|_| sample(&peaked, &p, &mut rng).0).collect();
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
            let mut r = Rng::new(seed);
            (0..100).map(|_| sample(&logits, &p, &mut r).0).collect()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }
}
