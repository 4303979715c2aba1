//! The vocabulary every room of flywheel shares, with no heavy dependency: the one seeded RNG
//! (SplitMix64 and xoshiro256**) and the names of what a generation is and why it ended.

pub mod rng;

use serde::{Deserialize, Serialize};

pub use rng::{SplitMix64, Xoshiro256};

/// Why generation of a sequence stopped.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// The model sampled its end-of-sequence token (included in the generated ids).
    Eos,
    /// A stop string matched.
    Stop,
    /// The token limit was reached: `max_new_tokens`, or the model's context.
    Length,
}

impl FinishReason {
    /// The lowercase name used in JSON and Parquet: `eos`, `stop` or `length`.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Eos => "eos",
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }

    /// The reason named by [`FinishReason::as_str`].
    pub fn parse(name: &str) -> Option<FinishReason> {
        [FinishReason::Eos, FinishReason::Stop, FinishReason::Length]
            .into_iter()
            .find(|r| r.as_str() == name)
    }
}

/// Which of the three generations of the method a sequence is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A first attempt at the task.
    Attempt,
    /// A self-reflection on a failed attempt.
    Reflection,
    /// A retry conditioned on one reflection.
    Retry,
}

impl Kind {
    /// The lowercase name used in JSON and Parquet: `attempt`, `reflection` or `retry`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Attempt => "attempt",
            Kind::Reflection => "reflection",
            Kind::Retry => "retry",
        }
    }

    /// The kind named by [`Kind::as_str`].
    pub fn parse(name: &str) -> Option<Kind> {
        [Kind::Attempt, Kind::Reflection, Kind::Retry]
            .into_iter()
            .find(|k| k.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for r in [FinishReason::Eos, FinishReason::Stop, FinishReason::Length] {
            assert_eq!(FinishReason::parse(r.as_str()), Some(r));
        }
        for k in [Kind::Attempt, Kind::Reflection, Kind::Retry] {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("Attempt"), None);
    }
}
