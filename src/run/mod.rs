//! A run directory of the whole loop: its settings (`flywheel.toml`) and its layout
//! (`rounds/NNNN/…`, `current`).

pub mod config;

use std::path::{Path, PathBuf};

/// The file naming the promoted round.
pub const CURRENT_FILE: &str = "current";

/// `RUN_DIR/rounds/NNNN`.
pub fn round_dir(run: &Path, round: u32) -> PathBuf {
    run.join("rounds").join(format!("{round:04}"))
}

/// The rounds of a run that have a directory under `RUN_DIR/rounds/`, in order (empty when
/// there is none).
pub fn rounds(run: &Path) -> Vec<u32> {
    let mut rounds: Vec<u32> = std::fs::read_dir(run.join("rounds"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    rounds.sort_unstable();
    rounds
}

/// `RUN_DIR/rounds/NNNN/model`: the model a round ends with (round 0: the starting model).
pub fn model_dir(run: &Path, round: u32) -> PathBuf {
    round_dir(run, round).join("model")
}

/// `rounds/NNNN/generate`: the round's generate run, or, when its generate stage ran as shards,
/// the folder of their runs `shard-I-of-N/`.
pub fn generate_dir(run: &Path, round: u32) -> PathBuf {
    round_dir(run, round).join("generate")
}

/// The run directory of shard `index` of `count` of a round's generate stage.
pub fn shard_dir(run: &Path, round: u32, index: u32, count: u32) -> PathBuf {
    generate_dir(run, round).join(format!("shard-{index}-of-{count}"))
}

/// A round's generate stage as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenerateLayout {
    /// Not started.
    Empty,
    /// One run in `generate/`.
    Single,
    /// Shard runs in `generate/shard-I-of-N/`: `N`, and which of them are complete.
    Shards {
        /// N.
        count: u32,
        /// The complete shards (their `rollouts.parquet` is written), in index order.
        complete: Vec<u32>,
    },
}

impl GenerateLayout {
    /// Reads `generate/`; an error names what does not fit (two shard counts, or shards beside
    /// an unsharded run).
    pub fn of(run: &Path, round: u32) -> Result<Self, String> {
        let dir = generate_dir(run, round);
        let mut shards: Vec<(u32, u32)> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_owned();
                let (i, n) = name.strip_prefix("shard-")?.split_once("-of-")?;
                Some((i.parse().ok()?, n.parse().ok()?))
            })
            .collect();
        shards.sort_unstable();
        let single = dir.join(flywheel_store::STORE_FILE).exists();
        match (single, shards.first()) {
            (false, None) => Ok(Self::Empty),
            (true, None) => Ok(Self::Single),
            (true, Some(_)) => Err(format!(
                "{}: holds both an unsharded run and shard runs",
                dir.display()
            )),
            (false, Some(&(_, count))) => {
                if let Some((_, other)) = shards.iter().find(|(_, n)| *n != count) {
                    return Err(format!(
                        "{}: shards of {count} and of {other} (one shard count per round)",
                        dir.display()
                    ));
                }
                let complete = shards
                    .iter()
                    .map(|&(i, _)| i)
                    .filter(|&i| {
                        shard_dir(run, round, i, count)
                            .join(flywheel_store::ROLLOUTS_FILE)
                            .is_file()
                    })
                    .collect();
                Ok(Self::Shards { count, complete })
            }
        }
    }

    /// The generate runs whose rollouts make up the round (shards in index order).
    pub fn runs(&self, run: &Path, round: u32) -> Vec<PathBuf> {
        match self {
            Self::Empty => Vec::new(),
            Self::Single => vec![generate_dir(run, round)],
            Self::Shards { count, complete } => complete
                .iter()
                .map(|&i| shard_dir(run, round, i, *count))
                .collect(),
        }
    }
}
