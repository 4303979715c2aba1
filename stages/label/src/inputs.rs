//! The inputs of a label run: the `rollouts.parquet` of one or more shards of one round. Each
//! file's footer and schema are read (not its rows) and the shards are checked to belong together
//! before any row is scanned.

use std::fs::File;
use std::path::{Path, PathBuf};

use flywheel_store::table::{check_schema, footer_value, TableError};
use flywheel_store::{RunMeta, COLUMNS, ROLLOUTS_FILE, RUN_META_KEY};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::LabelError;

/// One input file with the settings of the run that wrote it.
#[derive(Debug, Clone)]
pub struct Input {
    /// The `rollouts.parquet` file.
    pub path: PathBuf,
    /// Its run's settings (the footer's `flywheel.run_meta`).
    pub meta: RunMeta,
}

/// `RUN_DIR/rollouts.parquet` for a run directory, or the path itself for a file.
pub fn rollouts_path(run: &Path) -> PathBuf {
    if run.is_dir() {
        run.join(ROLLOUTS_FILE)
    } else {
        run.to_path_buf()
    }
}

/// Reads the footer and schema of `path` (missing, truncated or foreign files are refused).
pub fn open(path: &Path) -> Result<Input, LabelError> {
    let file = File::open(path).map_err(|source| LabelError::Open {
        path: path.to_owned(),
        source,
    })?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| LabelError::NotRollouts {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    check_schema(path, COLUMNS, builder.schema()).map_err(|e| match e {
        TableError::Column { .. } => LabelError::NotRollouts {
            path: path.to_owned(),
            detail: e.to_string(),
        },
        other => LabelError::Table(other),
    })?;
    let json =
        footer_value(builder.metadata(), RUN_META_KEY).ok_or_else(|| LabelError::NotRollouts {
            path: path.to_owned(),
            detail: format!("no `{RUN_META_KEY}` in the file's metadata"),
        })?;
    let meta: RunMeta = serde_json::from_str(&json).map_err(|e| LabelError::NotRollouts {
        path: path.to_owned(),
        detail: format!("`{RUN_META_KEY}` unreadable: {e}"),
    })?;
    Ok(Input {
        path: path.to_owned(),
        meta,
    })
}

/// Checks that the inputs are distinct shards of one round: every setting but the shard index
/// equal (the first difference is named), no shard twice.
pub fn check_shards(inputs: &[Input]) -> Result<(), LabelError> {
    let Some(first) = inputs.first() else {
        return Err(LabelError::NoInput);
    };
    let strip = |m: &RunMeta| -> Result<serde_json::Map<String, serde_json::Value>, LabelError> {
        let mut v = serde_json::to_value(m).map_err(|e| LabelError::NotRollouts {
            path: first.path.clone(),
            detail: e.to_string(),
        })?;
        let obj = v.as_object_mut().map(std::mem::take).unwrap_or_default();
        Ok(obj
            .into_iter()
            .filter(|(k, _)| k != "shard_index")
            .collect())
    };
    let reference = strip(&first.meta)?;
    for other in &inputs[1..] {
        let meta = strip(&other.meta)?;
        for (field, want) in &reference {
            let got = meta.get(field).unwrap_or(&serde_json::Value::Null);
            if got != want {
                return Err(LabelError::ShardMismatch {
                    first: first.path.clone(),
                    other: other.path.clone(),
                    field: field.clone(),
                    first_value: want.to_string(),
                    other_value: got.to_string(),
                });
            }
        }
    }
    let mut seen: Vec<(u32, &Path)> = Vec::with_capacity(inputs.len());
    for i in inputs {
        if let Some((_, earlier)) = seen.iter().find(|(s, _)| *s == i.meta.shard_index) {
            return Err(LabelError::DuplicateShard {
                shard: i.meta.shard_index,
                first: earlier.to_path_buf(),
                second: i.path.clone(),
            });
        }
        seen.push((i.meta.shard_index, &i.path));
    }
    Ok(())
}
