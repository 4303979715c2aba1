//! Stage three of flywheel, in progress: the masked GRPO loss on reflection tokens, the span
//! log-probs it takes (LM head at span positions only), and AdamW with savable moments, gradient
//! clipping and the warmup-cosine schedule. The trainer loop, checkpoints and `flywheel train`
//! are not built yet; this crate is the exact, tested core they
//! will call.

pub mod logprobs;
pub mod loss;
pub mod optim;
pub mod step;

pub use logprobs::{span_logprobs, PackError, Sequence, SpanBatch};
pub use loss::{grpo_loss, Aggregation, LossConfig, LossInputs, LossOutput, StepTotals};
