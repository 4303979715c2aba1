//! Prefix reuse: the KV cache of finished sequences, kept so that a later prompt starting with
//! one of them prefills only its new tokens. In a flywheel run every reflection's prompt extends
//! its attempt's conversation and every retry's extends its reflection's, so most prompt tokens
//! of a run were already computed once.
//!
//! Matching is by token ids, longest common prefix, so it needs no knowledge of the caller: a
//! conversation re-rendered and re-tokenized still matches up to the first token that differs.
//! The cache holds at most a byte budget and drops the least recently used sequence first.

use crate::cache::{copy_row, Layout};

/// One finished sequence: its tokens and, per past input of the graph, its keys or values as
/// `[kv_heads, len, head_dim]` (bytes of the cache's element type).
struct Entry {
    tokens: Vec<u32>,
    layers: Vec<Vec<u8>>,
    used: u64,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.layers.iter().map(Vec::len).sum()
    }
}

/// A hit: which entry, and how many leading prompt tokens it covers. Valid until the next
/// `insert` (which may evict and reorder entries); the engine reads every hit of a refill
/// before it keeps any new prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hit {
    entry: usize,
    pub(crate) len: usize,
}

pub(crate) struct PrefixCache {
    entries: Vec<Entry>,
    bytes: usize,
    budget: usize,
    min_tokens: usize,
    clock: u64,
    kv: usize,
    d: usize,
}

impl PrefixCache {
    /// A cache of at most `budget` bytes (0 disables it) that reuses prefixes of at least
    /// `min_tokens` tokens, for caches of `kv` heads whose one position takes `d` bytes.
    pub(crate) fn new(budget: usize, min_tokens: usize, kv: usize, d: usize) -> Self {
        Self {
            entries: Vec::new(),
            bytes: 0,
            budget,
            min_tokens: min_tokens.max(1),
            clock: 0,
            kv,
            d,
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.budget > 0
    }

    /// The entry sharing the longest prefix with `prompt`. At least one prompt token is always
    /// left to prefill, since its logits give the first sampled token.
    pub(crate) fn lookup(&mut self, prompt: &[u32]) -> Option<Hit> {
        let limit = prompt.len().saturating_sub(1);
        let best = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let n = e
                    .tokens
                    .iter()
                    .zip(prompt)
                    .take(limit)
                    .take_while(|(a, b)| a == b)
                    .count();
                (i, n)
            })
            .max_by_key(|&(i, n)| (n, std::cmp::Reverse(i)))?;
        if best.1 < self.min_tokens {
            return None;
        }
        self.clock += 1;
        self.entries[best.0].used = self.clock;
        Some(Hit {
            entry: best.0,
            len: best.1,
        })
    }

    /// The first `hit.len` positions of the hit entry, one `[1, kv, len, d]` buffer per past input.
    pub(crate) fn past(&self, hit: Hit) -> Vec<Vec<u8>> {
        let (kv, d) = (self.kv, self.d);
        let e = &self.entries[hit.entry];
        let full = e.tokens.len();
        e.layers
            .iter()
            .map(|layer| {
                let mut out = Vec::with_capacity(kv * hit.len * d);
                for h in 0..kv {
                    let start = h * full * d;
                    out.extend_from_slice(&layer[start..start + hit.len * d]);
                }
                out
            })
            .collect()
    }

    /// Keeps the sequence `tokens`, whose keys and values are the last `tokens.len()` positions of
    /// row `slot` in `layers` (laid out as `src`). Older entries make room; a sequence larger
    /// than the whole budget is not kept.
    pub(crate) fn insert(&mut self, tokens: Vec<u32>, layers: &[&[u8]], src: Layout, slot: usize) {
        let (kv, d, len) = (self.kv, self.d, tokens.len());
        let one = kv * len * d;
        let count = layers.len();
        if len < self.min_tokens || one * count > self.budget {
            return;
        }
        // The same sequence again (a retried request): the newest copy replaces it.
        self.entries.retain(|e| e.tokens != tokens);
        self.bytes = self.entries.iter().map(Entry::bytes).sum();
        while self.bytes + one * count > self.budget {
            let Some((oldest, _)) = self.entries.iter().enumerate().min_by_key(|(_, e)| e.used)
            else {
                break;
            };
            self.bytes -= self.entries.swap_remove(oldest).bytes();
        }
        let dst = Layout::new(len, len);
        let layers: Vec<Vec<u8>> = layers
            .iter()
            .map(|data| {
                let mut buf = vec![0u8; one];
                copy_row(data, src, slot, &mut buf, dst, 0, kv, d, len);
                buf
            })
            .collect();
        self.clock += 1;
        let entry = Entry {
            tokens,
            layers,
            used: self.clock,
        };
        self.bytes += entry.bytes();
        self.entries.push(entry);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two layers, kv = 2, one byte per position; row `slot` of a `[2, kv, 6, 1]` byte tensor
    /// holds `100 * layer + 10 * head + position` at its last `len` positions.
    fn tensors(len: usize) -> Vec<Vec<u8>> {
        (0..2)
            .map(|l| {
                let mut t = vec![0u8; 2 * 2 * 6];
                for h in 0..2 {
                    for p in 0..len {
                        t[((2 + h) * 6) + 6 - len + p] = (100 * l + 10 * h + p) as u8;
                    }
                }
                t
            })
            .collect()
    }

    fn refs(t: &[Vec<u8>]) -> Vec<&[u8]> {
        t.iter().map(Vec::as_slice).collect()
    }

    #[test]
    fn longest_prefix_wins_and_one_token_is_left_to_prefill() {
        let mut c = PrefixCache::new(1 << 20, 2, 2, 1);
        let t = tensors(4);
        c.insert(vec![1, 2, 3, 4], &refs(&t), Layout::new(6, 6), 1);
        let t = tensors(3);
        c.insert(vec![1, 2, 9], &refs(&t), Layout::new(6, 6), 1);
        assert_eq!(c.lookup(&[1, 2, 3, 4, 5]).map(|h| h.len), Some(4));
        // The whole entry matches, but the last prompt token must still be prefilled.
        assert_eq!(c.lookup(&[1, 2, 3, 4]).map(|h| h.len), Some(3));
        assert_eq!(c.lookup(&[1, 2, 9, 9]).map(|h| h.len), Some(3));
        // Below the minimum reuse.
        assert_eq!(c.lookup(&[1, 7, 7]), None);
        let hit = c.lookup(&[1, 2, 3, 8]).expect("hit");
        let past = c.past(hit);
        // Layer 1, heads 0 and 1, positions 0..3.
        assert_eq!(past[1], vec![100, 101, 102, 110, 111, 112]);
    }

    #[test]
    fn budget_evicts_least_recently_used() {
        // Each 4-token entry: 2 layers × 2 heads × 4 positions × 4 bytes = 64 bytes.
        let mut c = PrefixCache::new(130, 1, 2, 4);
        let t = tensors(4);
        let t: Vec<Vec<u8>> = t
            .iter()
            .map(|l| l.iter().flat_map(|&b| [b, 0, 0, 0]).collect())
            .collect();
        let add = |c: &mut PrefixCache, first: u32| {
            c.insert(vec![first, 2, 3, 4], &refs(&t), Layout::new(6, 6), 1)
        };
        add(&mut c, 1);
        add(&mut c, 2);
        assert_eq!((c.len(), c.bytes()), (2, 128));
        assert!(c.lookup(&[1, 2, 3, 4, 5]).is_some());
        add(&mut c, 3);
        assert_eq!(c.len(), 2);
        assert!(c.lookup(&[1, 2, 3, 4, 5]).is_some(), "recently used stays");
        assert!(
            c.lookup(&[2, 2, 3, 4, 5]).is_none(),
            "least recently used went"
        );
        // Larger than the whole budget: not kept.
        let mut small = PrefixCache::new(60, 1, 2, 4);
        small.insert(vec![1, 2, 3, 4], &refs(&t), Layout::new(6, 6), 1);
        assert_eq!((small.len(), small.bytes()), (0, 0));
        assert!(PrefixCache::new(0, 1, 2, 4).lookup(&[1, 2]).is_none());
    }
}
