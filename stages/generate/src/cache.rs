//! KV-cache bookkeeping for the engine: where rows sit in a cache tensor, copying rows between
//! caches, and grouping new requests for prefill.

use crate::engine::Request;

/// Where rows sit in a cache tensor: right-aligned to column `end`, rows `stride` columns apart.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    end: usize,
    stride: usize,
}

impl Layout {
    pub(crate) fn new(end: usize, stride: usize) -> Self {
        Self { end, stride }
    }
}

/// Copies the last `len` cached positions of row `from` (laid out as `src`) to the last `len`
/// positions of row `to` (laid out as `dst`), for every key/value head. Buffers are bytes and
/// `d` is the bytes of one position of one head (head size × element size), so one copy serves
/// every element type.
#[allow(clippy::too_many_arguments)]
pub(crate) fn copy_row(
    src: &[u8],
    s: Layout,
    from: usize,
    dst: &mut [u8],
    t: Layout,
    to: usize,
    kv: usize,
    d: usize,
    len: usize,
) {
    for h in 0..kv {
        let a = ((from * kv + h) * s.stride + (s.end - len)) * d;
        let b = ((to * kv + h) * t.stride + (t.end - len)) * d;
        dst[b..b + len * d].copy_from_slice(&src[a..a + len * d]);
    }
}

/// Splits waiting requests, in order, into prefill groups of at most `budget` padded tokens
/// each (at least one request per group).
pub(crate) fn prefill_groups(reqs: Vec<Request>, budget: usize) -> Vec<Vec<Request>> {
    let mut groups: Vec<Vec<Request>> = Vec::new();
    let mut lmax = 0;
    for req in reqs {
        let longest = lmax.max(req.prompt.len());
        match groups.last_mut() {
            Some(g) if (g.len() + 1) * longest <= budget => {
                g.push(req);
                lmax = longest;
            }
            _ => {
                lmax = req.prompt.len();
                groups.push(vec![req]);
            }
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::SamplingParams;

    fn req(len: usize) -> Request {
        Request {
            key: len as u64,
            prompt: vec![1; len],
            params: SamplingParams::default(),
            seed: 0,
            keep_kv: false,
        }
    }

    #[test]
    fn prefill_groups_keep_order_and_budget() {
        let lens = [10, 30, 5, 100, 20, 20, 20];
        let groups = prefill_groups(lens.iter().map(|&l| req(l)).collect(), 60);
        let got: Vec<Vec<u64>> = groups
            .iter()
            .map(|g| g.iter().map(|r| r.key).collect())
            .collect();
        // 10+30 pad to 2×30; adding 5 makes 3×30 > 60; 100 goes alone; then 20, 20, 20 = 60.
        assert_eq!(
            got,
            vec![vec![10, 30], vec![5], vec![100], vec![20, 20, 20]]
        );
    }
}
