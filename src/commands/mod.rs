//! One file per subcommand: clap arguments plus a `run` function that returns a report.

pub mod complete;
pub mod export;
pub mod generate;
pub mod import;
pub mod verify;

use clap::ValueEnum;

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
            Self::Auto => flywheel_model::default_device(),
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
