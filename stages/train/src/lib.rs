//! Stage three of flywheel, in progress: the masked GRPO loss on reflection tokens. The model
//! forward, the optimizer, the trainer loop and `flywheel train` are not built yet; this crate is
//! the exact, tested core they will call.

pub mod loss;

pub use loss::{grpo_loss, Aggregation, LossConfig, LossInputs, LossOutput, StepTotals};
