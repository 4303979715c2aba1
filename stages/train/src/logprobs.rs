//! Log-probs of the span tokens under the policy, at the sampling temperature: the model runs on a
//! right-padded batch, the hidden states that predict span tokens are gathered first, and the LM
//! head runs on those rows only, so no `[batch, seq, vocab]` logits tensor ever exists (the
//! largest is `[span tokens, vocab]`).

use flywheel_llama::Llama;
use tch::{Device, Kind, Tensor};

/// Rows per chunk of the entropy figure.
const ENTROPY_ROWS: i64 = 128;

/// One training sequence: its ids and the span `[start, end)` whose tokens carry the loss.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence<'a> {
    /// Prompt followed by the span tokens.
    pub input_ids: &'a [u32],
    /// First span position (at least 1: position 0 has nothing before it to predict it).
    pub span_start: usize,
    /// End (exclusive) of the span.
    pub span_end: usize,
}

impl Sequence<'_> {
    /// Whether the sequence can be packed for a model of `vocab` tokens: its span inside
    /// `1..=len` and non-empty, every id inside the vocabulary. `index` names it in the error.
    pub fn check(&self, index: usize, vocab: usize) -> Result<(), PackError> {
        let len = self.input_ids.len();
        if self.span_start == 0 || self.span_start >= self.span_end || self.span_end > len {
            return Err(PackError::Span {
                index,
                start: self.span_start,
                end: self.span_end,
                len,
            });
        }
        if let Some(&id) = self.input_ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(PackError::Token { index, id, vocab });
        }
        Ok(())
    }
}

/// Why a batch cannot be packed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    /// The span is empty, starts at 0 or ends past the sequence.
    #[error("sequence {index}: span {start}..{end} is not within 1..={len}")]
    Span {
        /// The sequence's place in the batch.
        index: usize,
        /// Span start.
        start: usize,
        /// Span end.
        end: usize,
        /// Sequence length.
        len: usize,
    },
    /// A token id the model's vocabulary does not have.
    #[error("sequence {index}: token id {id} is outside the vocabulary ({vocab})")]
    Token {
        /// The sequence's place in the batch.
        index: usize,
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab: usize,
    },
}

/// A packed micro-batch: right-padded model inputs and where every span token sits.
pub struct SpanBatch {
    /// `[b, l]` int64, padded with 0.
    pub input_ids: Tensor,
    /// `[b, l]` int64: 1 for real tokens.
    pub attention_mask: Tensor,
    /// `[b, l]` int64: 0, 1, … per row.
    pub position_ids: Tensor,
    /// `[n]`: row-major index (`row * l + position - 1`) of the hidden state predicting each span
    /// token.
    gather: Tensor,
    /// `[n]`: the span tokens.
    targets: Tensor,
    /// `[n]` each: where each span token goes in the `[b, max_span]` grid.
    rows: Tensor,
    cols: Tensor,
    /// Sequences and the longest span.
    b: i64,
    max_span: i64,
}

impl SpanBatch {
    /// Packs `seqs` for a model with `vocab` tokens, on `device`.
    pub fn pack(
        seqs: &[Sequence<'_>],
        vocab: usize,
        device: Device,
    ) -> Result<SpanBatch, PackError> {
        let l = seqs.iter().map(|s| s.input_ids.len()).max().unwrap_or(0);
        let b = seqs.len();
        let (mut ids, mut mask, mut pos) =
            (vec![0i64; b * l], vec![0i64; b * l], vec![0i64; b * l]);
        let (mut gather, mut targets, mut rows, mut cols) = (vec![], vec![], vec![], vec![]);
        let mut max_span = 0;
        for (i, s) in seqs.iter().enumerate() {
            s.check(i, vocab)?;
            for (j, &t) in s.input_ids.iter().enumerate() {
                ids[i * l + j] = i64::from(t);
                mask[i * l + j] = 1;
                pos[i * l + j] = j as i64;
            }
            for p in s.span_start..s.span_end {
                gather.push((i * l + p - 1) as i64);
                targets.push(i64::from(s.input_ids[p]));
                rows.push(i as i64);
                cols.push((p - s.span_start) as i64);
            }
            max_span = max_span.max(s.span_end - s.span_start);
        }
        let t = |v: Vec<i64>| Tensor::from_slice(&v).to_device(device);
        let grid = |v: Vec<i64>| t(v).reshape([b as i64, l as i64]);
        Ok(SpanBatch {
            input_ids: grid(ids),
            attention_mask: grid(mask),
            position_ids: grid(pos),
            gather: t(gather),
            targets: t(targets),
            rows: t(rows),
            cols: t(cols),
            b: b as i64,
            max_span: max_span as i64,
        })
    }

    /// Span tokens in the batch.
    pub fn tokens(&self) -> i64 {
        self.targets.size()[0]
    }

    /// Places per-span-token values `[n]` into the `[b, max_span]` grid the loss takes (zeros
    /// elsewhere), keeping their gradient.
    pub fn to_grid(&self, flat: &Tensor) -> Tensor {
        let zeros = Tensor::zeros([self.b, self.max_span], (flat.kind(), flat.device()));
        zeros.index_put(&[Some(&self.rows), Some(&self.cols)], flat, false)
    }

    /// The loss mask of the grid: 1 where a span token sits.
    pub fn mask(&self) -> Tensor {
        let ones = Tensor::ones([self.tokens()], (Kind::Float, self.rows.device()));
        self.to_grid(&ones)
    }
}

/// log π(token) of every span token, `[n]` f32 in span order, from the logits divided by
/// `temperature` (as the sampler drew them). Gradient flows to the model's variables.
pub fn span_logprobs(model: &Llama, batch: &SpanBatch, temperature: f64) -> Tensor {
    head(model, batch, temperature, false).0
}

/// [`span_logprobs`] and the entropy (nats) of the policy at each span position, `[n]` each; the
/// entropy is detached (a figure, not a loss term).
pub fn span_logprobs_and_entropy(
    model: &Llama,
    batch: &SpanBatch,
    temperature: f64,
) -> (Tensor, Tensor) {
    let (logp, entropy) = head(model, batch, temperature, true);
    let entropy = entropy.unwrap_or_else(|| logp.zeros_like());
    (logp, entropy)
}

fn head(
    model: &Llama,
    batch: &SpanBatch,
    temperature: f64,
    entropy: bool,
) -> (Tensor, Option<Tensor>) {
    let hidden = model.hidden_states_right_padded(&batch.input_ids, &batch.position_ids);
    from_hidden(model, batch, &hidden, temperature, entropy)
}

/// [`span_logprobs`] from given final hidden states `[b, l, hidden]` (to check where gradient
/// reaches them: only the rows that predict span tokens).
pub fn span_logprobs_from_hidden(
    model: &Llama,
    batch: &SpanBatch,
    hidden: &Tensor,
    temperature: f64,
) -> Tensor {
    from_hidden(model, batch, hidden, temperature, false).0
}

fn from_hidden(
    model: &Llama,
    batch: &SpanBatch,
    hidden: &Tensor,
    temperature: f64,
    entropy: bool,
) -> (Tensor, Option<Tensor>) {
    let h = hidden.size()[2];
    let rows = hidden.reshape([-1, h]).index_select(0, &batch.gather);
    // Scaling the rows scales the logits: one `[n, vocab]` tensor fewer than logits / T.
    let logits = model.logits(&(rows / temperature));
    let all = logits.log_softmax(-1, Kind::Float);
    let logp = all
        .gather(1, &batch.targets.unsqueeze(1), false)
        .squeeze_dim(1);
    // In row chunks, so the figure adds no `[n, vocab]` temporaries to the step's peak.
    let entropy = entropy.then(|| {
        tch::no_grad(|| {
            let all = all.detach();
            let parts: Vec<Tensor> = all
                .split(ENTROPY_ROWS, 0)
                .iter()
                .map(|c| -(c.exp() * c).sum_dim_intlist(-1, false, Kind::Float))
                .collect();
            Tensor::cat(&parts, 0)
        })
    });
    (logp, entropy)
}
