//! `flywheel stats RUN_DIR [--json]`: per round, the figures of its Parquet files (polars) and of
//! its report: tasks, first-try and retry pass rates, mixed-group fraction, reflection length
//! p50, examples and reward mean, training loss, KL, grad norm and tokens/s, generation tokens/s,
//! held-out accuracy and wall time per stage. A Markdown table, or JSON with `--json`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use flywheel_stats::{GenerateFigures, LabelFigures, StatsError, TrainFigures};

use super::round::{RoundOutcome, ROUND_FILE};
use crate::run::{round_dir, GenerateLayout};

#[derive(Debug, Clone, clap::Args)]
pub struct StatsArgs {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Print JSON instead of a Markdown table.
    #[arg(long)]
    pub json: bool,
}

/// One round's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoundStats {
    /// The round.
    pub round: u32,
    /// `promoted`, `no_signal`, or `running` (no report yet).
    pub status: String,
    /// Stage one.
    pub generate: Option<GenerateFigures>,
    /// Stage two.
    pub label: Option<LabelFigures>,
    /// Stage three.
    pub train: Option<TrainFigures>,
    /// Held-out first-try and second-try accuracy of the round's model.
    pub eval_first: Option<f64>,
    /// See `eval_first`.
    pub eval_second: Option<f64>,
    /// Wall seconds per stage.
    pub seconds: BTreeMap<String, f64>,
}

/// Why the figures could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatsCommandError {
    /// A Parquet file could not be read.
    #[error(transparent)]
    Parquet(#[from] StatsError),
    /// Not a run directory.
    #[error("{path}: no rounds/ (not a run directory: make one with `flywheel init`)")]
    NotARun {
        /// The directory.
        path: PathBuf,
    },
}

pub fn run(args: &StatsArgs) -> Result<Vec<RoundStats>, StatsCommandError> {
    if !args.run_dir.join("rounds").is_dir() {
        return Err(StatsCommandError::NotARun {
            path: args.run_dir.clone(),
        });
    }
    let mut out = Vec::new();
    for r in crate::run::rounds(&args.run_dir) {
        let d = round_dir(&args.run_dir, r);
        let outcome: Option<RoundOutcome> = std::fs::read(d.join(ROUND_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let eval: Option<serde_json::Value> = std::fs::read(d.join("eval/eval.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let rate = |which: &str| {
            eval.as_ref()
                .and_then(|e| e["levels"][0][which]["rate"].as_f64())
        };
        out.push(RoundStats {
            round: r,
            status: match (&outcome, r) {
                (Some(o), _) => o.status.clone(),
                (None, 0) => "initial".into(),
                (None, _) => "running".into(),
            },
            generate: flywheel_stats::generate_figures(
                &GenerateLayout::of(&args.run_dir, r)
                    .unwrap_or(GenerateLayout::Empty)
                    .runs(&args.run_dir, r)
                    .iter()
                    .map(|d| d.join(flywheel_store::ROLLOUTS_FILE))
                    .collect::<Vec<_>>(),
            )?,
            label: flywheel_stats::label_figures(&d.join(flywheel_store::TRAIN_FILE))?,
            train: flywheel_stats::train_figures(
                &d.join("train").join(flywheel_store::METRICS_FILE),
            )?,
            eval_first: rate("first"),
            eval_second: rate("second"),
            seconds: outcome.map(|o| o.seconds).unwrap_or_default(),
        });
    }
    Ok(out)
}

/// The figures as a Markdown table, one row per round.
pub fn markdown(rows: &[RoundStats]) -> String {
    let pct = |v: Option<f64>| v.map_or("–".into(), |v| format!("{:.1}%", 100.0 * v));
    let num = |v: Option<f64>, p: usize| v.map_or("–".into(), |v| format!("{v:.p$}"));
    let mut s = String::from(
        "| round | status | tasks | first try | retry pass | mixed groups | reflection p50 | examples | reward mean | loss | KL | grad norm | train tokens/s | gen tokens/s | eval first | eval second | seconds (gen/label/train/export/eval) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let g = r.generate.clone().unwrap_or_default();
        let l = r.label.clone().unwrap_or_default();
        let t = r.train.clone().unwrap_or_default();
        let secs: Vec<String> = ["generate", "label", "train", "export", "eval"]
            .iter()
            .map(|k| r.seconds.get(*k).map_or("–".into(), |v| format!("{v:.0}")))
            .collect();
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.round,
            r.status,
            g.tasks,
            pct(g.first_try),
            pct(g.retry_pass),
            pct(g.mixed_fraction),
            num(g.reflection_p50, 0),
            l.examples,
            num(l.reward_mean, 3),
            num(t.loss, 4),
            num(t.kl, 4),
            num(t.grad_norm, 3),
            num(t.tokens_per_second, 1),
            num(g.tokens_per_second, 1),
            pct(r.eval_first),
            pct(r.eval_second),
            secs.join("/")
        ));
    }
    s
}
