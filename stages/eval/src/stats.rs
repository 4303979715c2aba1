//! The interval and test statistics of an evaluation, written from their textbook definitions.

use flywheel_core::SplitMix64;
use serde::Serialize;

/// A two-sided interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

/// z of a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// The Wilson score interval of `k` successes in `n` trials at normal quantile `z` (Wilson 1927):
/// (p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n). Unlike the normal approximation it stays
/// inside [0, 1] and is not degenerate at 0 or n successes. `n = 0` gives [0, 1].
pub fn wilson(k: u64, n: u64, z: f64) -> Interval {
    if n == 0 {
        return Interval {
            low: 0.0,
            high: 1.0,
        };
    }
    let (k, n) = (k.min(n) as f64, n as f64);
    let p = k / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    Interval {
        low: (center - half).max(0.0),
        high: (center + half).min(1.0),
    }
}

/// Two-sided exact McNemar test: with `b` pairs that went pass → fail and `c` fail → pass, the
/// probability under "no change" (each discordant pair either way with probability ½) of a split
/// at least as uneven: 2·P(X ≤ min(b, c)), X ~ Binomial(b + c, ½), capped at 1.
pub fn mcnemar_exact(b: u64, c: u64) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let m = b.min(c);
    // Σ_{i ≤ m} C(n, i) / 2^n, in logs so that large n neither overflows nor underflows early.
    let ln_half_n = -(n as f64) * std::f64::consts::LN_2;
    let mut ln_c = 0.0f64; // ln C(n, 0)
    let mut tail = 0.0f64;
    for i in 0..=m {
        if i > 0 {
            ln_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_c + ln_half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

/// A 95% percentile interval of the mean paired difference `after − before` (each 0 or 1) from
/// `resamples` bootstrap resamples of the pairs, seeded; `None` without pairs.
pub fn paired_bootstrap(pairs: &[(bool, bool)], resamples: usize, seed: u64) -> Option<Interval> {
    if pairs.is_empty() || resamples == 0 {
        return None;
    }
    let d: Vec<i32> = pairs
        .iter()
        .map(|&(before, after)| i32::from(after) - i32::from(before))
        .collect();
    let mut rng = SplitMix64::new(seed);
    let n = d.len();
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| {
            let s: i64 = (0..n).map(|_| i64::from(d[rng.index(n)])).sum();
            s as f64 / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * resamples as f64).floor() as usize).min(resamples - 1)];
    Some(Interval {
        low: at(0.025),
        high: at(0.975),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 5e-5, "{a} vs {b}");
    }

    #[test]
    fn wilson_matches_hand_computed_values() {
        // k = 5, n = 10: centre 0.5, half-width 1.96·√(2.5 + 0.9604)/13.8415 = 0.26340.
        let w = wilson(5, 10, Z95);
        close(w.low, 0.236_593);
        close(w.high, 0.763_407);
        // k = 0: the lower bound is 0 and the upper 2·(z²/2)/(n + z²) = 0.27753.
        let w = wilson(0, 10, Z95);
        assert_eq!(w.low, 0.0);
        close(w.high, 0.277_533);
        // k = n mirrors k = 0.
        let w = wilson(10, 10, Z95);
        close(w.low, 1.0 - 0.277_533);
        close(w.high, 1.0);
        assert_eq!(
            wilson(0, 0, Z95),
            Interval {
                low: 0.0,
                high: 1.0
            }
        );
        // Larger n narrows it around p̂.
        let w = wilson(300, 1000, Z95);
        close(w.low, 0.272_40);
        close(w.high, 0.329_13);
    }

    #[test]
    fn mcnemar_exact_is_the_doubled_binomial_tail() {
        close(mcnemar_exact(0, 6), 2.0 / 64.0);
        close(mcnemar_exact(2, 8), 2.0 * (1.0 + 10.0 + 45.0) / 1024.0);
        close(mcnemar_exact(8, 2), 2.0 * (1.0 + 10.0 + 45.0) / 1024.0);
        assert_eq!(mcnemar_exact(5, 5), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        // Large counts stay finite and small.
        let p = mcnemar_exact(400, 600);
        assert!(p > 0.0 && p < 1e-9, "{p}");
    }

    #[test]
    fn the_bootstrap_interval_is_seeded_and_brackets_the_change() {
        let same: Vec<(bool, bool)> = (0..50).map(|i| (i % 3 == 0, i % 3 == 0)).collect();
        assert_eq!(
            paired_bootstrap(&same, 2000, 1),
            Some(Interval {
                low: 0.0,
                high: 0.0
            })
        );
        // 20 of 100 tasks fixed, none broken: the change is +0.2.
        let better: Vec<(bool, bool)> = (0..100).map(|i| (i < 30, i < 50)).collect();
        let a = paired_bootstrap(&better, 4000, 7).unwrap();
        assert_eq!(Some(a), paired_bootstrap(&better, 4000, 7));
        assert!(
            a.low > 0.1 && a.low < 0.2 && a.high > 0.2 && a.high < 0.3,
            "{a:?}"
        );
        assert_eq!(paired_bootstrap(&[], 100, 1), None);
    }
}
