//! Admitting requests: prefill (whole prompts in padded groups, or only the new tokens of a
//! prompt that extends a kept sequence) and the refill that merges new rows into the cache.

use super::{run_err, Engine, EngineError, Request, Row, RunStats};
use crate::cache::{copy_row, prefill_groups, Layout};
use crate::prefix::Hit;
use ort::value::DynValue;

impl Engine {
    /// Prefills `reqs` in one left-padded batch and samples each one's first token. Returns the
    /// rows (`slot` = row in the presents), the presents and the padded prompt length.
    fn prefill(
        &mut self,
        reqs: Vec<Request>,
        stats: &mut RunStats,
    ) -> Result<(Vec<Row>, Vec<DynValue>, usize), EngineError> {
        let vocab = self.dims.vocab;
        let (k, lmax) = (
            reqs.len(),
            reqs.iter().map(|r| r.prompt.len()).max().unwrap_or(0),
        );
        let (mut ids, mut mask, mut pos) = (
            vec![0i64; k * lmax],
            vec![0i64; k * lmax],
            vec![0i64; k * lmax],
        );
        for (r, req) in reqs.iter().enumerate() {
            let pad = lmax - req.prompt.len();
            for (j, &t) in req.prompt.iter().enumerate() {
                ids[r * lmax + pad + j] = i64::from(t);
                mask[r * lmax + pad + j] = 1;
                pos[r * lmax + pad + j] = j as i64;
            }
            stats.prefill_tokens += req.prompt.len() as u64;
        }
        let empty = self.empty_past(k)?;
        let (logits, presents) = self.forward(k, ids, pos, mask, empty, false)?;
        let rows = reqs
            .into_iter()
            .enumerate()
            .map(|(slot, req)| {
                let mut row = Row::new(req, slot);
                self.advance(&mut row, &logits[slot * vocab..(slot + 1) * vocab])?;
                Ok(row)
            })
            .collect::<Result<_, EngineError>>()?;
        Ok((rows, presents, lmax))
    }

    /// Sorts new requests into those whose prompt extends a kept sequence, grouped by identical
    /// prompt, and the others (in their order).
    #[allow(clippy::type_complexity)]
    fn split_hits(&mut self, new: Vec<Request>) -> (Vec<(Hit, Vec<Request>)>, Vec<Request>) {
        let (mut hits, mut misses): (Vec<(Hit, Vec<Request>)>, Vec<Request>) = (vec![], vec![]);
        for req in new {
            if let Some((_, same)) = hits.iter_mut().find(|(_, g)| g[0].prompt == req.prompt) {
                same.push(req);
                continue;
            }
            match self.prefixes.lookup(&req.prompt) {
                Some(hit) => hits.push((hit, vec![req])),
                None => misses.push(req),
            }
        }
        (hits, misses)
    }

    /// Prefills the prompt the requests `same` share on top of the kept sequence `hit` covers
    /// (batch 1: past = its first `hit.len` positions) and samples each request's first token.
    /// Returns what [`Self::prefill`] does; every row is slot 0 of the presents.
    fn prefill_extending(
        &mut self,
        same: Vec<Request>,
        hit: Hit,
        stats: &mut RunStats,
    ) -> Result<(Vec<Row>, Vec<DynValue>, usize), EngineError> {
        let prompt = &same[0].prompt;
        let (m, n) = (hit.len, prompt.len());
        let ids: Vec<i64> = prompt[m..].iter().map(|&t| i64::from(t)).collect();
        let pos: Vec<i64> = (m as i64..n as i64).collect();
        let shape = vec![
            1,
            self.dims.kv_heads as i64,
            m as i64,
            self.dims.head_dim as i64,
        ];
        let past = self
            .prefixes
            .past(hit)
            .into_iter()
            .map(|buf| self.kv_type.tensor(shape.clone(), &buf).map_err(run_err))
            .collect::<Result<Vec<_>, _>>()?;
        stats.prefill_tokens += (n - m) as u64;
        stats.prefix_hits += same.len() as u64;
        stats.reused_tokens += (m * same.len() + (n - m) * (same.len() - 1)) as u64;
        let (logits, presents) = self.forward(1, ids, pos, vec![1i64; n], past, false)?;
        let rows = same
            .into_iter()
            .map(|req| {
                let mut row = Row::new(req, 0);
                self.advance(&mut row, &logits)?;
                Ok(row)
            })
            .collect::<Result<_, EngineError>>()?;
        Ok((rows, presents, n))
    }

    /// Keeps a finished row's sequence (prompt and the generated tokens fed back, i.e. all but
    /// the last) for prefix reuse, if its request asked for it and the cache is on; `cache` is
    /// the batch cache it lives in.
    pub(super) fn keep_prefix(
        &mut self,
        row: &Row,
        cache: &[DynValue],
        layout: Layout,
    ) -> Result<(), EngineError> {
        if !row.req.keep_kv || !self.prefixes.enabled() {
            return Ok(());
        }
        let fed = row.len.saturating_sub(row.req.prompt.len());
        let tokens: Vec<u32> = row
            .req
            .prompt
            .iter()
            .chain(&row.tokens[..fed.min(row.tokens.len())])
            .copied()
            .collect();
        let layers = cache
            .iter()
            .map(|v| self.kv_type.bytes(v))
            .collect::<Result<Vec<&[u8]>, _>>()
            .map_err(run_err)?;
        self.prefixes.insert(tokens, &layers, layout, row.slot);
        Ok(())
    }

    /// Prefills `new` requests and merges them with the unfinished `rows` into a new, trimmed
    /// cache. Returns the rows now in the cache (slots renumbered), the cache, its length, and the
    /// new rows that finished on their very first token (they never enter the cache).
    pub(super) fn refill(
        &mut self,
        rows: Vec<Row>,
        past: Vec<DynValue>,
        total: usize,
        cap: usize,
        new: Vec<Request>,
        stats: &mut RunStats,
    ) -> Result<Batch, EngineError> {
        let (kv, d) = (self.dims.kv_heads, self.dims.head_dim);
        // Rows are copied as bytes: `db` is one position of one head.
        let db = d * self.kv_type.size();
        let keep: Vec<Row> = rows.into_iter().filter(|r| r.done.is_none()).collect();
        // New prompts are prefilled in groups of bounded padded size, so a refill of long
        // prompts never needs one huge attention or activation buffer. Each entering row keeps
        // the index of its group; its `slot` is its row within that group's presents.
        let mut groups: Vec<(Layout, std::vec::IntoIter<DynValue>)> = Vec::new();
        let mut entering: Vec<(usize, Row)> = Vec::new();
        let mut finished = Vec::new();
        // Prompts that extend a kept sequence prefill only their new tokens on top of its cache
        // (identical prompts, such as one attempt's reflections, once); the rest in groups.
        let (hits, misses) = self.split_hits(new);
        let mut prefilled = Vec::new();
        for (hit, same) in hits {
            prefilled.push(self.prefill_extending(same, hit, stats)?);
        }
        for group in prefill_groups(misses, self.config.prefill_tokens) {
            prefilled.push(self.prefill(group, stats)?);
        }
        for (rows, presents, lmax) in prefilled {
            for row in rows {
                if row.done.is_some() {
                    self.keep_prefix(&row, &presents, Layout::new(lmax, lmax))?;
                    finished.push(row);
                } else {
                    entering.push((groups.len(), row));
                }
            }
            groups.push((Layout::new(lmax, lmax), presents.into_iter()));
        }
        let b2 = keep.len() + entering.len();
        let t2 = keep
            .iter()
            .chain(entering.iter().map(|(_, r)| r))
            .map(|r| r.len)
            .max()
            .unwrap_or(0);
        // Shared-buffer caches get room for the longest generation still possible, so decode
        // steps write in place until the next refill (or a regrow, if a refill never comes).
        let cap2 = if self.share_kv {
            t2 + self.headroom(keep.iter().chain(entering.iter().map(|(_, r)| r)), t2)
        } else {
            t2
        };
        let (src, dst) = (Layout::new(total, cap), Layout::new(t2, cap2));
        let mut cache = Vec::with_capacity(self.past_names.len());
        // Layer by layer, so each old and prefilled tensor is freed as soon as it is copied and
        // the refill holds about one cache, not three.
        let mut old = past.into_iter();
        let missing = || EngineError::Run("cache has fewer tensors than the graph".into());
        if b2 > 0 {
            for _ in 0..self.past_names.len() {
                let mut typed = self.kv_type.zeroed(b2 * kv * cap2 * d);
                let buf = typed.bytes_mut();
                if !keep.is_empty() {
                    let layer = old.next().ok_or_else(missing)?;
                    let data = self.kv_type.bytes(&layer).map_err(run_err)?;
                    for (to, row) in keep.iter().enumerate() {
                        copy_row(data, src, row.slot, buf, dst, to, kv, db, row.len);
                    }
                }
                let layers: Vec<Option<DynValue>> =
                    groups.iter_mut().map(|(_, it)| it.next()).collect();
                for (j, (g, row)) in entering.iter().enumerate() {
                    let layer = layers[*g].as_ref().ok_or_else(missing)?;
                    let data = self.kv_type.bytes(layer).map_err(run_err)?;
                    let to = keep.len() + j;
                    copy_row(data, groups[*g].0, row.slot, buf, dst, to, kv, db, row.len);
                }
                let shape = vec![b2 as i64, kv as i64, cap2 as i64, d as i64];
                cache.push(typed.into_tensor(shape).map_err(run_err)?);
            }
        }
        stats.refills += 1;
        let mut rows = keep;
        rows.extend(entering.into_iter().map(|(_, r)| r));
        for (i, row) in rows.iter_mut().enumerate() {
            row.slot = i;
        }
        Ok(Batch {
            rows,
            cache,
            total: t2,
            cap: cap2,
            finished,
        })
    }
}

/// The rows in the cache, the cache itself (one tensor per past input), its length and its
/// capacity in columns (larger than the length only in shared-buffer mode), and rows that
/// finished during a refill.
pub(super) struct Batch {
    pub(super) rows: Vec<Row>,
    pub(super) cache: Vec<DynValue>,
    pub(super) total: usize,
    pub(super) cap: usize,
    pub(super) finished: Vec<Row>,
}
