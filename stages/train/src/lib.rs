//! Stage three of flywheel, in progress: the masked GRPO loss on reflection tokens and the span
//! log-probs it takes (LM head at span positions only). The optimizer, the trainer loop,
//! checkpoints and `flywheel train` are not built yet; this crate is the exact, tested core they
//! will call.

pub mod logprobs;
pub mod loss;

pub use logprobs::{span_logprobs, PackError, Sequence, SpanBatch};
pub use loss::{grpo_loss, Aggregation, LossConfig, LossInputs, LossOutput, StepTotals};
