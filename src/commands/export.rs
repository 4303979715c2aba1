//! `flywheel export`: a model directory → an ONNX decoder folder, optionally checked against the
//! tch model in ONNX Runtime.

use flywheel_export::parity::{self, ParityError, ParityReport};
use flywheel_export::{ExportDtype, ExportError, ExportOptions, ExportReport, Ops};
use flywheel_llama::llama::{Llama, LoadError};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum DtypeChoice {
    #[default]
    F32,
    F16,
    Bf16,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Model directory (config.json + safetensors), as written by `import` or the trainer.
    #[arg(long)]
    pub model: PathBuf,
    /// Output folder (default: MODEL/onnx); written atomically.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Floating-point type of weights and activations (logits are always f32).
    #[arg(long, value_enum, default_value_t = DtypeChoice::F32)]
    pub dtype: DtypeChoice,
    /// Build attention and norms from ONNX Runtime's fused operators (GroupQueryAttention,
    /// RotaryEmbedding, SkipSimplifiedLayerNormalization) instead of standard ONNX operators:
    /// faster in ONNX Runtime and onnxruntime-genai, but not loadable by other runtimes.
    /// Needs a head size that is a multiple of 16.
    #[arg(long)]
    pub fused: bool,
    /// Replace the output folder if it exists (only once the new one is complete).
    #[arg(long)]
    pub force: bool,
    /// After exporting, run the graph in ONNX Runtime against the tch model (padded batched
    /// prefill of 4 prompts, then 16 cached decode steps) and report the max |Δlogit|.
    #[arg(long)]
    pub check: bool,
    /// ONNX Runtime intra-op threads for --check (0: its default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportCommandError {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Parity(#[from] ParityError),
    #[error("--check compares an f32 export with the f32 tch model; export with --dtype f32")]
    CheckNeedsF32,
    /// ONNX Runtime and tch disagree beyond [`PARITY_TOLERANCE`] or in a greedy choice.
    #[error("{out}: export parity failed: max |Δlogit| {max_abs_diff:.3e} (tolerance {PARITY_TOLERANCE:.0e}), greedy choices identical: {greedy_identical}")]
    ParityFailed {
        /// The export folder.
        out: std::path::PathBuf,
        /// The largest logit difference.
        max_abs_diff: f64,
        /// Whether every greedy choice agreed.
        greedy_identical: bool,
    },
}

/// Largest |Δlogit| between ONNX Runtime and tch that `--check` accepts (f32; SmolLM2's fused
/// graph stays within it, the tiny model within 1e-4).
pub const PARITY_TOLERANCE: f64 = 1e-3;

#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportCommandReport {
    #[serde(flatten)]
    pub export: ExportReport,
    pub parity: Option<ParityReport>,
}

pub fn run(args: &ExportArgs) -> Result<ExportCommandReport, ExportCommandError> {
    let dtype = match args.dtype {
        DtypeChoice::F32 => ExportDtype::F32,
        DtypeChoice::F16 => ExportDtype::F16,
        DtypeChoice::Bf16 => ExportDtype::Bf16,
    };
    if args.check && dtype != ExportDtype::F32 {
        return Err(ExportCommandError::CheckNeedsF32);
    }
    let out = args.out.clone().unwrap_or_else(|| args.model.join("onnx"));
    let options = ExportOptions {
        dtype,
        ops: if args.fused {
            Ops::Fused
        } else {
            Ops::Standard
        },
    };
    let export = flywheel_export::export(&args.model, &out, &options, args.force)?;
    eprintln!(
        "export: {} nodes, {:.1} MB of weights in {:.1} s",
        export.nodes,
        export.data_bytes as f64 / 1e6,
        export.seconds
    );
    let parity = if args.check {
        let model = Llama::load(&args.model, tch::Device::Cpu, tch::Kind::Float)?;
        let prompts = parity::default_prompts(model.config.vocab_size);
        let report = parity::check(&model, &out.join("model.onnx"), &prompts, 16, args.threads)?;
        eprintln!(
            "export --check: max |Δlogit| prefill {:.2e}, decode {:.2e}, greedy identical: {}",
            report.prefill_max_abs_diff, report.decode_max_abs_diff, report.greedy_identical
        );
        if !(report.max_abs_diff() < PARITY_TOLERANCE && report.greedy_identical) {
            return Err(ExportCommandError::ParityFailed {
                out: out.clone(),
                max_abs_diff: report.max_abs_diff(),
                greedy_identical: report.greedy_identical,
            });
        }
        Some(report)
    } else {
        None
    };
    Ok(ExportCommandReport { export, parity })
}
