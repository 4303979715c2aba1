//! Parquet export of a run: `rollouts.parquet`, one row per generation, zstd-compressed.
//!
//! Rows stream from one read transaction of the store into row groups of [`ROW_GROUP_ROWS`]
//! rows, so memory stays bounded by one row group whatever the run's size. The file is written
//! to a temporary name in the same directory, fsynced and renamed, so `rollouts.parquet` is
//! either the previous complete file or the new complete file, never a partial one.
//!
//! Row order: by task_index, then attempt; after attempt *k* come its reflections and retries
//! interleaved (reflection 0, retry 0, reflection 1, retry 1, ...). [`COLUMNS`] is the single
//! source of the column list; [`columns_markdown`] renders it for the README.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float32Builder, Float64Builder, ListBuilder, StringBuilder,
    UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema};
use redb::ReadableTable;

use crate::records::{
    AttemptRecord, Generation, Kind, ReflectionRecord, RetryRecord, RunMeta, TaskRecord,
};
use crate::schema::StoredRecord;
use crate::table::{self, col, Column, ColumnType, TableError, TableWriter};
use crate::{Store, StoreError};

/// File name of the export inside a run directory.
pub const ROLLOUTS_FILE: &str = "rollouts.parquet";

/// Rows per row group (and per in-memory batch).
pub const ROW_GROUP_ROWS: usize = 1024;

/// The columns of `rollouts.parquet`, in file order.
pub const COLUMNS: &[Column] = &[
    col("model_hash", ColumnType::Utf8, false, "SHA-256 (hex) of the files (graph and weights) of the model that generated the row"),
    col("task", ColumnType::Utf8, false, "task name of the run"),
    col("task_index", ColumnType::UInt64, false, "0-based index of the instance among the input's records (blank lines not counted; global, not within the shard)"),
    col("task_id", ColumnType::Utf8, false, "the instance's id"),
    col("level", ColumnType::Utf8, true, "difficulty level; null when the task has none"),
    col("kind", ColumnType::Utf8, false, "`attempt`, `reflection` or `retry`"),
    col("attempt", ColumnType::UInt32, false, "0-based attempt number; for reflections and retries, the failed attempt they follow"),
    col("reflection", ColumnType::UInt32, true, "0-based reflection number within the attempt; null for attempts"),
    col("prompt_ids", ColumnType::ListUInt32, false, "the whole context fed to the model (chat-rendered, tokenized once)"),
    col("token_ids", ColumnType::ListUInt32, false, "generated token ids exactly as sampled, including the EOS id when one ended the sequence"),
    col("logprobs", ColumnType::ListFloat32, false, "log-prob of each sampled token under the temperature-scaled distribution over the whole vocabulary (before top-k/top-p truncation); same length as `token_ids`"),
    col("text", ColumnType::Utf8, false, "decoded generated text"),
    col("pass", ColumnType::Boolean, true, "the verifier's verdict; null for reflections"),
    col("reason", ColumnType::Utf8, true, "the verifier's reason; null for reflections"),
    col("finish_reason", ColumnType::Utf8, false, "`eos` (end-of-sequence sampled), `stop` (stop string) or `length` (max_new_tokens reached)"),
    col("seed", ColumnType::UInt64, false, "seed of this sequence's sampler"),
    col("prompt_tokens", ColumnType::UInt32, false, "length of `prompt_ids`"),
    col("new_tokens", ColumnType::UInt32, false, "length of `token_ids`"),
    col("started_unix_ms", ColumnType::UInt64, false, "when the request was admitted, in milliseconds since the Unix epoch"),
    col("seconds", ColumnType::Float64, false, "wall time from admission to finish, in seconds"),
];

/// The Arrow schema of `rollouts.parquet`, built from [`COLUMNS`].
pub fn rollouts_schema() -> Schema {
    table::schema(COLUMNS)
}

/// [`COLUMNS`] as a Markdown table (column, type, nullable, meaning), for the README.
pub fn columns_markdown() -> String {
    table::markdown(COLUMNS)
}

/// Why an export failed. A failed export leaves no partial file behind.
#[derive(Debug, thiserror::Error)]
pub enum ParquetExportError {
    /// Reading the store failed.
    #[error("export: {0}")]
    Store(#[from] StoreError),
    /// A generation belongs to a task that has no task record.
    #[error("export: store {path} has generations for task {task_index} but no task record")]
    MissingTask {
        /// The store file.
        path: PathBuf,
        /// The task.
        task_index: u64,
    },
    /// The finished export could not be renamed into place.
    #[error("export: cannot rename the finished export to {path}: {source}")]
    Rename {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing the file failed.
    #[error("export: {0}")]
    Table(#[from] TableError),
}

/// Key of the run's settings (JSON [`RunMeta`]) in the footer of `rollouts.parquet`.
pub const RUN_META_KEY: &str = "flywheel.run_meta";

/// Writes the run's generations to `out` (normally `RUN_DIR/rollouts.parquet`), streaming and
/// atomically (temporary file in the same directory, fsync, rename). Returns the rows written.
pub fn export_rollouts(store: &Store, out: &Path) -> Result<u64, ParquetExportError> {
    // The store is held open (redb locks the file), so no other process exports this run now.
    flywheel_model::atomic::replace_file(
        out,
        |tmp| write_file(store, tmp),
        |source| ParquetExportError::Rename {
            path: out.to_path_buf(),
            source,
        },
    )
}

fn write_file(store: &Store, path: &Path) -> Result<u64, ParquetExportError> {
    let meta = store.meta()?;
    let json = serde_json::to_string(&meta).map_err(|source| StoreError::MetaJson {
        path: store.path().to_path_buf(),
        source,
    })?;
    let mut writer = TableWriter::create(path, COLUMNS, &[(RUN_META_KEY, json)], ROW_GROUP_ROWS)?;
    let mut rows = RowBuilder::new(&meta);
    walk(store, &mut |row| {
        rows.push(&row);
        if rows.len == ROW_GROUP_ROWS {
            rows.flush(&mut writer)?;
        }
        Ok(())
    })?;
    if rows.len > 0 {
        rows.flush(&mut writer)?;
    }
    Ok(writer.finish()?)
}

/// One output row before it is columnized.
struct Row<'a> {
    task: &'a TaskRecord,
    kind: Kind,
    attempt: u32,
    reflection: Option<u32>,
    generation: &'a Generation,
    pass: Option<bool>,
    reason: Option<&'a str>,
}

/// A table's records in key order, one decoded record looked ahead.
struct Cursor<'t, T: StoredRecord> {
    iter: redb::Range<'t, T::Key, &'static [u8]>,
    next: Option<T>,
}

impl<'t, T: StoredRecord> Cursor<'t, T> {
    fn new(
        store: &Store,
        table: &'t redb::ReadOnlyTable<T::Key, &'static [u8]>,
    ) -> Result<Self, StoreError> {
        let iter = table.iter().map_err(store.err("read range"))?;
        let mut c = Cursor { iter, next: None };
        c.advance(store)?;
        Ok(c)
    }

    /// Returns the looked-ahead record and reads the following one.
    fn advance(&mut self, store: &Store) -> Result<Option<T>, StoreError> {
        let next = match self.iter.next() {
            None => None,
            Some(entry) => {
                let (k, v) = entry.map_err(store.err("read record"))?;
                Some(store.decode::<T>(k.value(), v.value())?)
            }
        };
        Ok(std::mem::replace(&mut self.next, next))
    }
}

/// Calls `f` on every generation in export order, from one read transaction.
fn walk(
    store: &Store,
    f: &mut dyn FnMut(Row<'_>) -> Result<(), ParquetExportError>,
) -> Result<(), ParquetExportError> {
    let txn = store.begin_read()?;
    let open = |e| store.err("open table")(e);
    let tasks = txn.open_table(TaskRecord::TABLE).map_err(open)?;
    let attempts_t = txn.open_table(AttemptRecord::TABLE).map_err(open)?;
    let reflections_t = txn.open_table(ReflectionRecord::TABLE).map_err(open)?;
    let retries_t = txn.open_table(RetryRecord::TABLE).map_err(open)?;
    let mut attempts = Cursor::<AttemptRecord>::new(store, &attempts_t)?;
    let mut reflections = Cursor::<ReflectionRecord>::new(store, &reflections_t)?;
    let mut retries = Cursor::<RetryRecord>::new(store, &retries_t)?;
    let mut task: Option<TaskRecord> = None;
    loop {
        // Export order key: (task, attempt, 0) for an attempt, then (task, attempt, 1, g, kind).
        let a = attempts
            .next
            .as_ref()
            .map(|r| (r.task_index, r.attempt, 0, 0, 0));
        let g = reflections
            .next
            .as_ref()
            .map(|r| (r.task_index, r.attempt, 1, r.reflection, 0));
        let r = retries
            .next
            .as_ref()
            .map(|r| (r.task_index, r.attempt, 1, r.reflection, 1));
        let Some(min) = [a, g, r].into_iter().flatten().min() else {
            return Ok(());
        };
        let task_index = min.0;
        if task.as_ref().map(|t| t.task_index) != Some(task_index) {
            let value = tasks
                .get(task_index)
                .map_err(store.err("read task"))?
                .ok_or_else(|| ParquetExportError::MissingTask {
                    path: store.path().to_path_buf(),
                    task_index,
                })?;
            task = Some(store.decode::<TaskRecord>(task_index, value.value())?);
        }
        let Some(task) = task.as_ref() else {
            return Ok(());
        };
        if Some(min) == a {
            if let Some(rec) = attempts.advance(store)? {
                f(Row {
                    task,
                    kind: Kind::Attempt,
                    attempt: rec.attempt,
                    reflection: None,
                    generation: &rec.generation,
                    pass: Some(rec.pass),
                    reason: Some(&rec.reason),
                })?;
            }
        } else if Some(min) == g {
            if let Some(rec) = reflections.advance(store)? {
                f(Row {
                    task,
                    kind: Kind::Reflection,
                    attempt: rec.attempt,
                    reflection: Some(rec.reflection),
                    generation: &rec.generation,
                    pass: None,
                    reason: None,
                })?;
            }
        } else if let Some(rec) = retries.advance(store)? {
            f(Row {
                task,
                kind: Kind::Retry,
                attempt: rec.attempt,
                reflection: Some(rec.reflection),
                generation: &rec.generation,
                pass: Some(rec.pass),
                reason: Some(&rec.reason),
            })?;
        }
    }
}

/// Column builders for up to one row group.
struct RowBuilder {
    model_hash: String,
    task_name: String,
    len: usize,
    model: StringBuilder,
    task: StringBuilder,
    task_index: UInt64Builder,
    task_id: StringBuilder,
    level: StringBuilder,
    kind: StringBuilder,
    attempt: UInt32Builder,
    reflection: UInt32Builder,
    prompt_ids: ListBuilder<UInt32Builder>,
    token_ids: ListBuilder<UInt32Builder>,
    logprobs: ListBuilder<Float32Builder>,
    text: StringBuilder,
    pass: BooleanBuilder,
    reason: StringBuilder,
    finish_reason: StringBuilder,
    seed: UInt64Builder,
    prompt_tokens: UInt32Builder,
    new_tokens: UInt32Builder,
    started_unix_ms: UInt64Builder,
    seconds: Float64Builder,
}

fn ids_builder() -> ListBuilder<UInt32Builder> {
    ListBuilder::new(UInt32Builder::new()).with_field(Field::new("item", DataType::UInt32, false))
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl RowBuilder {
    fn new(meta: &RunMeta) -> Self {
        RowBuilder {
            model_hash: meta.model_hash.clone(),
            task_name: meta.task.clone(),
            len: 0,
            model: StringBuilder::new(),
            task: StringBuilder::new(),
            task_index: UInt64Builder::new(),
            task_id: StringBuilder::new(),
            level: StringBuilder::new(),
            kind: StringBuilder::new(),
            attempt: UInt32Builder::new(),
            reflection: UInt32Builder::new(),
            prompt_ids: ids_builder(),
            token_ids: ids_builder(),
            logprobs: ListBuilder::new(Float32Builder::new()).with_field(Field::new(
                "item",
                DataType::Float32,
                false,
            )),
            text: StringBuilder::new(),
            pass: BooleanBuilder::new(),
            reason: StringBuilder::new(),
            finish_reason: StringBuilder::new(),
            seed: UInt64Builder::new(),
            prompt_tokens: UInt32Builder::new(),
            new_tokens: UInt32Builder::new(),
            started_unix_ms: UInt64Builder::new(),
            seconds: Float64Builder::new(),
        }
    }

    fn push(&mut self, row: &Row<'_>) {
        let g = row.generation;
        self.model.append_value(&self.model_hash);
        self.task.append_value(&self.task_name);
        self.task_index.append_value(row.task.task_index);
        self.task_id.append_value(&row.task.id);
        self.level.append_option(row.task.level.as_deref());
        self.kind.append_value(row.kind.as_str());
        self.attempt.append_value(row.attempt);
        self.reflection.append_option(row.reflection);
        self.prompt_ids.values().append_slice(&g.prompt_ids);
        self.prompt_ids.append(true);
        self.token_ids.values().append_slice(&g.token_ids);
        self.token_ids.append(true);
        self.logprobs.values().append_slice(&g.logprobs);
        self.logprobs.append(true);
        self.text.append_value(&g.text);
        self.pass.append_option(row.pass);
        self.reason.append_option(row.reason);
        self.finish_reason.append_value(g.finish_reason.as_str());
        self.seed.append_value(g.seed);
        self.prompt_tokens.append_value(len_u32(g.prompt_ids.len()));
        self.new_tokens.append_value(len_u32(g.token_ids.len()));
        self.started_unix_ms.append_value(g.started_unix_ms);
        self.seconds.append_value(g.seconds);
        self.len += 1;
    }

    /// Writes the buffered rows as one record batch and empties the builders.
    fn flush(&mut self, writer: &mut TableWriter) -> Result<(), TableError> {
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("model_hash", Arc::new(self.model.finish())),
            ("task", Arc::new(self.task.finish())),
            ("task_index", Arc::new(self.task_index.finish())),
            ("task_id", Arc::new(self.task_id.finish())),
            ("level", Arc::new(self.level.finish())),
            ("kind", Arc::new(self.kind.finish())),
            ("attempt", Arc::new(self.attempt.finish())),
            ("reflection", Arc::new(self.reflection.finish())),
            ("prompt_ids", Arc::new(self.prompt_ids.finish())),
            ("token_ids", Arc::new(self.token_ids.finish())),
            ("logprobs", Arc::new(self.logprobs.finish())),
            ("text", Arc::new(self.text.finish())),
            ("pass", Arc::new(self.pass.finish())),
            ("reason", Arc::new(self.reason.finish())),
            ("finish_reason", Arc::new(self.finish_reason.finish())),
            ("seed", Arc::new(self.seed.finish())),
            ("prompt_tokens", Arc::new(self.prompt_tokens.finish())),
            ("new_tokens", Arc::new(self.new_tokens.finish())),
            ("started_unix_ms", Arc::new(self.started_unix_ms.finish())),
            ("seconds", Arc::new(self.seconds.finish())),
        ];
        self.len = 0;
        writer.write(columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_follows_columns() {
        let schema = rollouts_schema();
        assert_eq!(schema.fields().len(), COLUMNS.len());
        let names: Vec<&str> = COLUMNS.iter().map(|c| c.name).collect();
        let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len(), "duplicate column name");
        let md = columns_markdown();
        for c in COLUMNS {
            assert!(md.contains(&format!("| `{}` | {} |", c.name, c.ty.name())));
        }
    }
}
