//! The run store: every stage reads and writes task, attempt, reflection and retry records
//! through one redb database, `RUN_DIR/store.redb`.
//!
//! Writes go in batches, one durable transaction each ([`Store::write`]): a crash loses at most
//! the batch being written, never part of one. Rewriting a record that is already stored with
//! the same content is a no-op and rewriting it with other content is an error, so rerunning a
//! command after a crash can neither duplicate nor silently overwrite work. Reads stream in key
//! order, `(task_index, attempt, reflection)`, without loading a table into memory.
//!
//! This crate is where the records of a run are defined, once, for every stage: the record types
//! ([`records`]), the redb schema, the Parquet tables ([`table`]) and the `rollouts.parquet`
//! export. It links neither libtorch nor ONNX Runtime.

pub mod eval;
mod fingerprint;
pub mod metrics;
mod parquet;
pub mod records;
mod schema;
pub mod table;
pub mod train;

use std::ops::RangeBounds;
use std::path::{Path, PathBuf};

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction};

pub use self::eval::{read_eval, write_eval, EvalRow, EVAL_COLUMNS, EVAL_FILE};
pub use self::fingerprint::{file_hash, model_files_hash, model_hash, text_hash, MODEL_FILES};
pub use self::metrics::{read_metrics, write_metrics, StepMetrics, METRICS_COLUMNS, METRICS_FILE};
pub use self::parquet::{
    columns_markdown, export_rollouts, rollouts_schema, ParquetExportError, COLUMNS, ROLLOUTS_FILE,
    ROW_GROUP_ROWS, RUN_META_KEY,
};
pub use self::records::{
    AttemptRecord, FinishReason, Generation, Kind, ReflectionRecord, RetryRecord, RunMeta,
    TaskRecord,
};
pub use self::schema::{DecodeError, SCHEMA_VERSION};
use self::schema::{StoredRecord, COUNTERS, COUNTER_NAMES, META, META_RUN, META_SCHEMA};
pub use self::table::{Column, ColumnType, TableError, TableWriter};
pub use self::train::{
    read_train, write_train, LabelMeta, Scale, Span, TrainExample, TrainReadError, LABEL_META_KEY,
    TRAIN_COLUMNS, TRAIN_FILE,
};

/// File name of the store inside a run directory.
pub const STORE_FILE: &str = "store.redb";

/// Everything that can go wrong opening, writing or reading a store, or hashing a model.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The run directory could not be created.
    #[error("cannot create run directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another process (or another `Store` in this one) has the store open.
    #[error("store {path} is in use by another flywheel process (or another Store in this one)")]
    Locked {
        /// The store file.
        path: PathBuf,
    },
    /// redb refused to open the file (not a redb file, or unreadable).
    #[error("cannot open store {path}: {source}")]
    Open {
        /// The store file.
        path: PathBuf,
        /// The cause.
        source: Box<redb::DatabaseError>,
    },
    /// [`Store::open_existing`] found no store.
    #[error("no run store at {path}: start a run there first")]
    Missing {
        /// The store file looked for.
        path: PathBuf,
    },
    /// A database operation failed.
    #[error("store {path}: {op} failed: {source}")]
    Redb {
        /// The store file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The cause.
        source: Box<redb::Error>,
    },
    /// The store was written by a build with another layout.
    #[error("store {path} has schema version {found}, but this build reads version {expected}")]
    SchemaVersion {
        /// The store file.
        path: PathBuf,
        /// The version found.
        found: u64,
        /// The version this build writes.
        expected: u64,
    },
    /// The run was created with other settings.
    #[error(
        "store {path} belongs to a run created with {field} = {stored}, but this command has \
         {field} = {given}{}",
        changed_note(field)
    )]
    MetaMismatch {
        /// The store file.
        path: PathBuf,
        /// The first differing `RunMeta` field.
        field: String,
        /// Its stored value, as JSON.
        stored: String,
        /// Its given value, as JSON.
        given: String,
    },
    /// The stored run settings could not be read.
    #[error("store {path}: run settings unreadable: {source}")]
    MetaJson {
        /// The store file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// A record is already stored under this key with other content; the batch was not written.
    #[error(
        "store {path}: {table} record for {key} is already stored with different content; \
         refusing to overwrite it (the whole batch was discarded)"
    )]
    Conflict {
        /// The store file.
        path: PathBuf,
        /// The table.
        table: &'static str,
        /// The key in words.
        key: String,
    },
    /// A record to write breaks an invariant; the batch was not written.
    #[error("store {path}: {table} record for {key} is invalid: {detail}")]
    Invalid {
        /// The store file.
        path: PathBuf,
        /// The table.
        table: &'static str,
        /// The key in words.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// A stored value could not be decoded.
    #[error("store {path}: {table} record for {key} is corrupt: {source}")]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// The table.
        table: &'static str,
        /// The key in words.
        key: String,
        /// The cause.
        source: DecodeError,
    },
    /// [`model_hash`] found no weight files.
    #[error(
        "no model weights in {dir}: expected *.safetensors, or *.onnx (with its .onnx.data) there \
         or in its onnx/ folder"
    )]
    NoWeights {
        /// The model directory.
        dir: PathBuf,
    },
    /// A model file (or the model directory) could not be read.
    #[error("cannot read model file {path}: {source}")]
    ReadWeights {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// What a fingerprint field stands for, so a mismatch says what changed.
fn changed_note(field: &str) -> String {
    let what = match field {
        "model_hash" => "the model's weights",
        "model_files_hash" => "the model's tokenizer, chat template or generation settings",
        "task_hash" => "the task's prompt templates, options, config or verifier",
        _ => return String::new(),
    };
    format!(" ({what} changed)")
}

/// Records to write in one transaction.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteBatch {
    /// Task records.
    pub tasks: Vec<TaskRecord>,
    /// Attempt records.
    pub attempts: Vec<AttemptRecord>,
    /// Reflection records.
    pub reflections: Vec<ReflectionRecord>,
    /// Retry records.
    pub retries: Vec<RetryRecord>,
}

impl WriteBatch {
    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of records of all kinds.
    pub fn len(&self) -> usize {
        self.tasks.len() + self.attempts.len() + self.reflections.len() + self.retries.len()
    }

    /// Empties the batch, keeping its allocations.
    pub fn clear(&mut self) {
        self.tasks.clear();
        self.attempts.clear();
        self.reflections.clear();
        self.retries.clear();
    }
}

/// Everything stored for one task, each list in key order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskState {
    /// The task record, once written.
    pub task: Option<TaskRecord>,
    /// Its attempts.
    pub attempts: Vec<AttemptRecord>,
    /// Its reflections, ordered by (attempt, reflection).
    pub reflections: Vec<ReflectionRecord>,
    /// Its retries, ordered by (attempt, reflection).
    pub retries: Vec<RetryRecord>,
}

/// Record totals of a store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Task records.
    pub tasks: u64,
    /// Attempt records.
    pub attempts: u64,
    /// Attempts that passed.
    pub attempts_passed: u64,
    /// Reflection records.
    pub reflections: u64,
    /// Retry records.
    pub retries: u64,
    /// Retries that passed.
    pub retries_passed: u64,
}

/// The run store of one run directory. Cheap to share between threads (`&Store` is `Sync`).
/// redb page cache size: enough for the hot B-tree pages, independent of the run's size.
const CACHE_BYTES: usize = 16 << 20;

pub struct Store {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

enum Insert {
    New,
    Same,
}

impl Store {
    /// Creates or opens `run_dir/store.redb` (creating `run_dir` if needed). A new store records
    /// `meta`; an existing one must have been created with an equal `meta`, else
    /// [`StoreError::MetaMismatch`] names the first differing field.
    pub fn open(run_dir: &Path, meta: &RunMeta) -> Result<Store, StoreError> {
        std::fs::create_dir_all(run_dir).map_err(|source| StoreError::CreateDir {
            path: run_dir.to_path_buf(),
            source,
        })?;
        let store = Store::open_file(run_dir.join(STORE_FILE))?;
        let given = serde_json::to_vec(meta).map_err(|source| StoreError::MetaJson {
            path: store.path.clone(),
            source,
        })?;
        let txn = store.begin_write()?;
        {
            let mut table = txn.open_table(META).map_err(store.err("open meta table"))?;
            let stored_version = read_version(&table, &store.path)?;
            let stored_meta = table
                .get(META_RUN)
                .map_err(store.err("read run settings"))?
                .map(|g| g.value().to_vec());
            match (stored_version, stored_meta) {
                (Some(found), _) if found != SCHEMA_VERSION => {
                    return Err(StoreError::SchemaVersion {
                        path: store.path.clone(),
                        found,
                        expected: SCHEMA_VERSION,
                    })
                }
                (_, Some(bytes)) => store.compare_meta(&bytes, meta)?,
                (_, None) => {
                    table
                        .insert(META_SCHEMA, SCHEMA_VERSION.to_le_bytes().as_slice())
                        .map_err(store.err("write schema version"))?;
                    table
                        .insert(META_RUN, given.as_slice())
                        .map_err(store.err("write run settings"))?;
                }
            }
            // Create every table so that read transactions find them.
            txn.open_table(COUNTERS).map_err(store.err("open table"))?;
            txn.open_table(TaskRecord::TABLE)
                .map_err(store.err("open table"))?;
            txn.open_table(AttemptRecord::TABLE)
                .map_err(store.err("open table"))?;
            txn.open_table(ReflectionRecord::TABLE)
                .map_err(store.err("open table"))?;
            txn.open_table(RetryRecord::TABLE)
                .map_err(store.err("open table"))?;
        }
        txn.commit().map_err(store.err("commit"))?;
        Ok(store)
    }

    /// Opens the store of an existing run, whatever its settings (for export and inspection).
    pub fn open_existing(run_dir: &Path) -> Result<Store, StoreError> {
        let path = run_dir.join(STORE_FILE);
        if !path.is_file() {
            return Err(StoreError::Missing { path });
        }
        let store = Store::open_file(path)?;
        let txn = store.begin_read()?;
        let table = match txn.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                return Err(StoreError::Missing { path: store.path })
            }
            Err(e) => return Err(store.err("open meta table")(e)),
        };
        match read_version(&table, &store.path)? {
            Some(SCHEMA_VERSION) => {}
            Some(found) => {
                return Err(StoreError::SchemaVersion {
                    path: store.path.clone(),
                    found,
                    expected: SCHEMA_VERSION,
                })
            }
            None => return Err(StoreError::Missing { path: store.path }),
        }
        drop(table);
        drop(txn);
        Ok(store)
    }

    /// redb's page cache defaults to 1 GiB; a bounded cache keeps a long run's memory flat
    /// (writes are append-mostly and reads are one sequential pass at export).
    fn open_file(path: PathBuf) -> Result<Store, StoreError> {
        match Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
        {
            Ok(db) => Ok(Store { db, path }),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(StoreError::Locked { path }),
            Err(e) => Err(StoreError::Open {
                path,
                source: Box::new(e),
            }),
        }
    }

    /// The store file, `RUN_DIR/store.redb`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The settings the run was created with.
    pub fn meta(&self) -> Result<RunMeta, StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(META).map_err(self.err("open meta table"))?;
        let bytes = table
            .get(META_RUN)
            .map_err(self.err("read run settings"))?
            .ok_or_else(|| StoreError::Missing {
                path: self.path.clone(),
            })?;
        serde_json::from_slice(bytes.value()).map_err(|source| StoreError::MetaJson {
            path: self.path.clone(),
            source,
        })
    }

    fn compare_meta(&self, stored_bytes: &[u8], given: &RunMeta) -> Result<(), StoreError> {
        let json_err = |source| StoreError::MetaJson {
            path: self.path.clone(),
            source,
        };
        let stored: RunMeta = serde_json::from_slice(stored_bytes).map_err(json_err)?;
        if &stored == given {
            return Ok(());
        }
        let stored = serde_json::to_value(&stored).map_err(json_err)?;
        let given = serde_json::to_value(given).map_err(json_err)?;
        let (Some(stored), Some(given)) = (stored.as_object(), given.as_object()) else {
            return Ok(());
        };
        for (field, g) in given {
            let s = stored.get(field).unwrap_or(&serde_json::Value::Null);
            if s != g {
                return Err(StoreError::MetaMismatch {
                    path: self.path.clone(),
                    field: field.clone(),
                    stored: s.to_string(),
                    given: g.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Writes the whole batch in one durable transaction. A record already stored with
    /// identical content is skipped; one stored with different content fails the batch with
    /// [`StoreError::Conflict`] and nothing of the batch is written.
    pub fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.validate(batch)?;
        let txn = self.begin_write()?;
        let mut added = [0u64; 6];
        (added[0], _) = self.insert_all(&txn, &batch.tasks)?;
        (added[1], added[2]) = self.insert_all(&txn, &batch.attempts)?;
        (added[3], _) = self.insert_all(&txn, &batch.reflections)?;
        (added[4], added[5]) = self.insert_all(&txn, &batch.retries)?;
        self.check_parents(&txn, batch)?;
        if added.iter().any(|&n| n > 0) {
            let mut counters = txn
                .open_table(COUNTERS)
                .map_err(self.err("open counters"))?;
            for (name, n) in COUNTER_NAMES.iter().zip(added) {
                if n > 0 {
                    let current = counters
                        .get(*name)
                        .map_err(self.err("read counter"))?
                        .map_or(0, |g| g.value());
                    counters
                        .insert(*name, current + n)
                        .map_err(self.err("write counter"))?;
                }
            }
        }
        txn.commit().map_err(self.err("commit"))
    }

    fn validate(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        let gens = batch
            .attempts
            .iter()
            .map(|r| {
                (
                    AttemptRecord::NAME,
                    AttemptRecord::describe(r.key()),
                    &r.generation,
                )
            })
            .chain(batch.reflections.iter().map(|r| {
                let key = ReflectionRecord::describe(r.key());
                (ReflectionRecord::NAME, key, &r.generation)
            }))
            .chain(batch.retries.iter().map(|r| {
                (
                    RetryRecord::NAME,
                    RetryRecord::describe(r.key()),
                    &r.generation,
                )
            }));
        for (table, key, g) in gens {
            if g.logprobs.len() != g.token_ids.len() {
                return Err(StoreError::Invalid {
                    path: self.path.clone(),
                    table,
                    key,
                    detail: format!(
                        "{} log-probs for {} token ids (must be one per token)",
                        g.logprobs.len(),
                        g.token_ids.len()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Every child record's parent is stored (now, with this batch inserted): an attempt's task,
    /// a reflection's failed attempt, a retry's reflection. Else the transaction is dropped.
    fn check_parents(&self, txn: &WriteTransaction, batch: &WriteBatch) -> Result<(), StoreError> {
        let orphan = |table: &'static str, key: String, detail: &str| StoreError::Invalid {
            path: self.path.clone(),
            table,
            key,
            detail: detail.to_owned(),
        };
        let open = |e| self.err("open table")(e);
        let tasks = txn.open_table(TaskRecord::TABLE).map_err(open)?;
        for a in &batch.attempts {
            if tasks
                .get(a.task_index)
                .map_err(self.err("read task"))?
                .is_none()
            {
                let key = AttemptRecord::describe(a.key());
                return Err(orphan(AttemptRecord::NAME, key, "its task is not stored"));
            }
        }
        let attempts = txn.open_table(AttemptRecord::TABLE).map_err(open)?;
        for r in &batch.reflections {
            let parent = attempts
                .get((r.task_index, r.attempt))
                .map_err(self.err("read attempt"))?
                .map(|g| self.decode::<AttemptRecord>((r.task_index, r.attempt), g.value()))
                .transpose()?;
            let key = || ReflectionRecord::describe(r.key());
            match parent {
                None => {
                    return Err(orphan(
                        ReflectionRecord::NAME,
                        key(),
                        "its attempt is not stored",
                    ))
                }
                Some(a) if a.pass => {
                    return Err(orphan(ReflectionRecord::NAME, key(), "its attempt passed"))
                }
                Some(_) => {}
            }
        }
        let reflections = txn.open_table(ReflectionRecord::TABLE).map_err(open)?;
        for r in &batch.retries {
            let parent = (r.task_index, r.attempt, r.reflection);
            if reflections
                .get(parent)
                .map_err(self.err("read reflection"))?
                .is_none()
            {
                let key = RetryRecord::describe(r.key());
                return Err(orphan(
                    RetryRecord::NAME,
                    key,
                    "its reflection is not stored",
                ));
            }
        }
        Ok(())
    }

    /// Inserts records absent from the table; returns (records added, of which passed).
    fn insert_all<T: StoredRecord>(
        &self,
        txn: &WriteTransaction,
        records: &[T],
    ) -> Result<(u64, u64), StoreError> {
        if records.is_empty() {
            return Ok((0, 0));
        }
        let mut table = txn.open_table(T::TABLE).map_err(self.err("open table"))?;
        let (mut added, mut passed) = (0, 0);
        for r in records {
            let key = r.key();
            let value = r.encode();
            let outcome = match table.get(key).map_err(self.err("read record"))? {
                None => Insert::New,
                Some(old) if old.value() == value.as_slice() => Insert::Same,
                Some(_) => {
                    return Err(StoreError::Conflict {
                        path: self.path.clone(),
                        table: T::NAME,
                        key: T::describe(key),
                    })
                }
            };
            if let Insert::New = outcome {
                table
                    .insert(key, value.as_slice())
                    .map_err(self.err("insert record"))?;
                added += 1;
                passed += u64::from(r.pass() == Some(true));
            }
        }
        Ok((added, passed))
    }

    /// Calls `f` on every task, in task_index order, streaming from one read transaction.
    pub fn for_each_task(
        &self,
        mut f: impl FnMut(TaskRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.scan::<TaskRecord>(&self.begin_read()?, .., &mut f)
    }

    /// Calls `f` on every attempt, in (task_index, attempt) order.
    pub fn for_each_attempt(
        &self,
        mut f: impl FnMut(AttemptRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.scan::<AttemptRecord>(&self.begin_read()?, .., &mut f)
    }

    /// Calls `f` on every reflection, in (task_index, attempt, reflection) order.
    pub fn for_each_reflection(
        &self,
        mut f: impl FnMut(ReflectionRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.scan::<ReflectionRecord>(&self.begin_read()?, .., &mut f)
    }

    /// Calls `f` on every retry, in (task_index, attempt, reflection) order.
    pub fn for_each_retry(
        &self,
        mut f: impl FnMut(RetryRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.scan::<RetryRecord>(&self.begin_read()?, .., &mut f)
    }

    /// Everything stored for one task (all read in one consistent snapshot).
    pub fn task_state(&self, task_index: u64) -> Result<TaskState, StoreError> {
        let txn = self.begin_read()?;
        let mut state = TaskState::default();
        let t = task_index;
        self.scan::<TaskRecord>(&txn, t..=t, &mut |r| {
            state.task = Some(r);
            Ok(())
        })?;
        self.scan::<AttemptRecord>(&txn, (t, 0)..=(t, u32::MAX), &mut |r| {
            state.attempts.push(r);
            Ok(())
        })?;
        let all = (t, 0, 0)..=(t, u32::MAX, u32::MAX);
        self.scan::<ReflectionRecord>(&txn, all.clone(), &mut |r| {
            state.reflections.push(r);
            Ok(())
        })?;
        self.scan::<RetryRecord>(&txn, all, &mut |r| {
            state.retries.push(r);
            Ok(())
        })?;
        Ok(state)
    }

    /// Record totals (kept up to date by [`Store::write`], so this reads six numbers).
    pub fn counts(&self) -> Result<Counts, StoreError> {
        let txn = self.begin_read()?;
        let table = txn
            .open_table(COUNTERS)
            .map_err(self.err("open counters"))?;
        let mut n = [0u64; 6];
        for (slot, name) in n.iter_mut().zip(COUNTER_NAMES) {
            *slot = table
                .get(name)
                .map_err(self.err("read counter"))?
                .map_or(0, |g| g.value());
        }
        Ok(Counts {
            tasks: n[0],
            attempts: n[1],
            attempts_passed: n[2],
            reflections: n[3],
            retries: n[4],
            retries_passed: n[5],
        })
    }

    /// Streams the records of `range` in key order to `f`.
    pub(crate) fn scan<T: StoredRecord>(
        &self,
        txn: &ReadTransaction,
        range: impl RangeBounds<T::Key> + 'static,
        f: &mut dyn FnMut(T) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let table = txn.open_table(T::TABLE).map_err(self.err("open table"))?;
        for entry in table.range(range).map_err(self.err("read range"))? {
            let (key, value) = entry.map_err(self.err("read record"))?;
            f(self.decode::<T>(key.value(), value.value())?)?;
        }
        Ok(())
    }

    pub(crate) fn decode<T: StoredRecord>(
        &self,
        key: T::Key,
        value: &[u8],
    ) -> Result<T, StoreError> {
        T::decode(key, value).map_err(|source| StoreError::Corrupt {
            path: self.path.clone(),
            table: T::NAME,
            key: T::describe(key),
            source,
        })
    }

    pub(crate) fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        self.db.begin_read().map_err(self.err("begin read"))
    }

    fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        self.db.begin_write().map_err(self.err("begin write"))
    }

    /// Wraps a redb error with this store's path and the operation.
    pub(crate) fn err<E: Into<redb::Error>>(
        &self,
        op: &'static str,
    ) -> impl Fn(E) -> StoreError + '_ {
        move |e| StoreError::Redb {
            path: self.path.clone(),
            op,
            source: Box::new(e.into()),
        }
    }
}

fn read_version(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    path: &Path,
) -> Result<Option<u64>, StoreError> {
    let redb_err = |e: redb::StorageError| StoreError::Redb {
        path: path.to_path_buf(),
        op: "read schema version",
        source: Box::new(e.into()),
    };
    let Some(guard) = table.get(META_SCHEMA).map_err(redb_err)? else {
        return Ok(None);
    };
    match <[u8; 8]>::try_from(guard.value()) {
        Ok(bytes) => Ok(Some(u64::from_le_bytes(bytes))),
        Err(_) => Ok(Some(u64::MAX)),
    }
}
