//! `flywheel import`: a GGUF file or a Hugging Face directory → a flywheel model directory.

use flywheel_llama::import::{self, ImportError, ImportReport};
use flywheel_model::paths;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// GGUF file to import (default: the embedded SmolLM2-135M-Instruct from the project environment).
    #[arg(long, conflicts_with = "hf")]
    pub gguf: Option<PathBuf>,
    /// Hugging Face model directory to import (config.json, safetensors, tokenizer files).
    #[arg(long)]
    pub hf: Option<PathBuf>,
    /// Output model directory; written atomically.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace the output directory if it exists (the old one is removed only after the new one is complete).
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: &ImportArgs) -> Result<ImportReport, ImportError> {
    match &args.hf {
        Some(dir) => import::import_hf(dir, &args.out, args.force),
        None => {
            let gguf = args.gguf.clone().unwrap_or_else(paths::default_gguf);
            import::import_gguf(&gguf, &args.out, args.force)
        }
    }
}
