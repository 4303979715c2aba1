//! Held-out evaluation: from an evaluation run's store (greedy or sampled attempts, one reflection
//! and retry after each failure), the first-try and second-try accuracy with 95% Wilson
//! intervals, overall and per level, and the paired change between two evaluations of the same
//! tasks (exact McNemar test and a paired-bootstrap interval); across the rounds of a run, the
//! rows of `eval.parquet` and the plot `eval.png`. Plain data in, plain data out.

pub mod plot;
pub mod rounds;
pub mod stats;
pub mod summary;

pub use stats::{mcnemar_exact, paired_bootstrap, wilson, Interval};
pub use summary::{
    compare, markdown, outcomes, summarize, Accuracy, Change, EvalError, LevelSummary, Outcome,
    PairedChange,
};
