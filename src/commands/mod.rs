//! One file per subcommand: clap arguments plus a `run` function that returns a report.

pub mod complete;
pub mod eval;
pub mod export;
pub mod generate;
pub mod hint;
pub mod import;
pub mod init;
pub mod label;
pub mod round;
pub mod stats;
pub mod train;
pub mod verify;

use clap::ValueEnum;
use std::path::PathBuf;

/// How a task renders its prompts (shared by every command that loads a task).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TaskFlags {
    /// Directory of prompt overrides: `<task>/system.txt`, `attempt.txt`, `reflect.txt`,
    /// `retry.txt` there replace the built-in templates (a run fingerprints the texts it uses).
    #[arg(long, value_name = "DIR")]
    pub prompts: Option<PathBuf>,
    /// Tell the model the verifier's reason in the reflection request (the paper does not).
    #[arg(long)]
    pub feedback: bool,
    /// The retry sees the task, its reflection and the retry request, not the failed attempt
    /// (the paper keeps the whole conversation).
    #[arg(long)]
    pub retry_without_attempt: bool,
}

impl TaskFlags {
    /// The task options these flags set.
    pub fn options(&self) -> flywheel_datasets::TaskOptions {
        flywheel_datasets::TaskOptions {
            prompt_dir: self.prompts.clone(),
            include_reason: self.feedback,
            retry_without_attempt: self.retry_without_attempt,
        }
    }
}

/// A value of a settings file (`flywheel.toml`) as a command's clap value (`dr_grpo` and
/// `dr-grpo` alike), or `None` when no value of the flag is spelled so.
pub fn setting<T: ValueEnum>(v: &str) -> Option<T> {
    T::from_str(v, true)
        .or_else(|_| T::from_str(&v.replace('_', "-"), true))
        .ok()
}

/// Where the libtorch model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum DeviceArg {
    /// CUDA when libtorch sees a GPU, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl DeviceArg {
    pub fn device(self) -> tch::Device {
        match self {
            Self::Auto => flywheel_llama::default_device(),
            Self::Cpu => tch::Device::Cpu,
            Self::Cuda => tch::Device::Cuda(0),
        }
    }
}

/// Floating-point type of the libtorch model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum DtypeArg {
    #[default]
    F32,
    Bf16,
}

impl DtypeArg {
    pub fn kind(self) -> tch::Kind {
        match self {
            Self::F32 => tch::Kind::Float,
            Self::Bf16 => tch::Kind::BFloat16,
        }
    }
}

/// The progress bar of long commands: elapsed time, bar, `pos/len` then `unit` (an indicatif
/// template tail such as `"steps | eta {eta}"`).
pub fn progress_bar(len: u64, unit: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit}"
    ))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}
