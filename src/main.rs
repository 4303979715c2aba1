//! The `flywheel` command line: parses arguments and dispatches to `flywheel::commands`.

use clap::{Parser, Subcommand};
use flywheel::commands;

/// Reflect, Retry, Reward: improve a language model on verifiable tasks from pass/fail feedback.
#[derive(Parser)]
#[command(name = "flywheel", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A new run directory for the whole loop: documented settings and round 0's checked model.
    Init(commands::init::InitArgs),
    /// The next round of a run: generate, label, train, export (checked), evaluate, promote.
    Round(commands::round::RoundArgs),
    /// Per-round figures of a run from its Parquet files (a table, or JSON with --json).
    Stats(commands::stats::StatsArgs),
    /// Import a model (GGUF file or Hugging Face directory) as a flywheel model directory.
    Import(commands::import::ImportArgs),
    /// Export a model directory to an ONNX decoder folder (onnxruntime-genai layout).
    Export(commands::export::ExportArgs),
    /// Attempts, reflections and retries on ONNX Runtime into a resumable store and Parquet.
    Generate(commands::generate::GenerateArgs),
    /// Training examples from a run's rollouts: one per reflection, rewarded by its retry.
    Label(commands::label::LabelArgs),
    /// Held-out first-try and second-try accuracy with 95% intervals (and the change from a baseline).
    Eval(commands::eval::EvalArgs),
    /// Masked GRPO on the reflection tokens of train.parquet (libtorch), resumable.
    Train(commands::train::TrainArgs),
    /// Greedy completion of a chat prompt with the libtorch model.
    Complete(commands::complete::CompleteArgs),
    /// Run a task's verifier on given responses: one JSON verdict per input line.
    Verify(commands::verify::VerifyArgs),
}

fn main() -> std::process::ExitCode {
    match dispatch(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Library errors already carry their cause in their message; print it once.
            eprintln!("error: {e}");
            if let Some(hint) = commands::hint::hint(&e) {
                eprintln!("hint: {hint}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init(args) => {
            let report = commands::init::run(&args)?;
            match report.parity_max_abs_diff {
                Some(diff) => eprintln!(
                    "init: {} ({} training and {} held-out instances); round 0's model checked (max |Δlogit| {diff:.2e}); settings in {}",
                    report.run_dir.display(),
                    report.train_tasks,
                    report.eval_tasks,
                    report.run_dir.join(flywheel::run::config::CONFIG_FILE).display()
                ),
                None => eprintln!(
                    "init: {} already exists with these settings; nothing to do",
                    report.run_dir.display()
                ),
            }
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Round(args) => {
            let report = commands::round::run(&args)?;
            for line in [&report.busy, &report.waiting, &report.complete]
                .into_iter()
                .flatten()
            {
                eprintln!("{line}");
            }
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Stats(args) => {
            let rows = commands::stats::run(&args)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", commands::stats::markdown(&rows));
            }
        }
        Command::Import(args) => {
            let report = commands::import::run(&args)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Complete(args) => {
            let report = commands::complete::run(&args)?;
            println!("{}", report.completion);
            if let (Some(id), Some(v)) = (&report.instance_id, &report.verdict) {
                eprintln!("complete: {id}: pass={} reason={}", v.pass, v.reason);
            }
            eprintln!(
                "complete: {} prompt tokens, {} new tokens, prefill {:.2} s, decode {:.1} tokens/s ({})",
                report.prompt_tokens, report.new_tokens, report.prefill_seconds, report.decode_tokens_per_second, report.device
            );
        }
        Command::Export(args) => {
            let report = commands::export::run(&args)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Generate(args) => {
            let report = commands::generate::run(&args)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Label(args) => {
            let report = commands::label::run(&args)?;
            eprintln!("{report}");
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Eval(args) => {
            let report = commands::eval::run(&args)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
        }
        Command::Train(args) => {
            let report = commands::train::run(&args)?;
            eprintln!("{}", commands::train::summary(&report));
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Verify(args) => {
            let report = commands::verify::run(&args, &mut std::io::stdout().lock())?;
            eprintln!("{report}");
        }
    }
    Ok(())
}
