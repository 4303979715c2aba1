//! flywheel: the orchestration crate. Each subcommand lives in `commands/` as an argument struct
//! and a `run` function returning a report, so tests call exactly what the CLI calls.

pub mod commands;
pub mod pipeline;
pub mod run;
