//! Parquet tables declared once: a table is a `&'static [Column]` (name, Arrow type, nullability,
//! meaning), from which come its Arrow schema, its README table, the writer's check of every
//! batch (names, order, types and nulls) and the reader's check of a file's schema.
//!
//! Files are written zstd-compressed through [`TableWriter`], to a temporary name beside the
//! target that is renamed into place when complete (see [`flywheel_model::atomic::replace_file`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::parquet::arrow::ArrowWriter;
use ::parquet::basic::{Compression, ZstdLevel};
use ::parquet::errors::ParquetError;
use ::parquet::file::metadata::{KeyValue, ParquetMetaData};
use ::parquet::file::properties::WriterProperties;
use arrow::array::{Array, ArrayRef};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

/// Arrow type of a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// UTF-8 string.
    Utf8,
    /// Boolean.
    Boolean,
    /// Unsigned 32-bit integer.
    UInt32,
    /// Unsigned 64-bit integer.
    UInt64,
    /// 32-bit float.
    Float32,
    /// 64-bit float.
    Float64,
    /// List of unsigned 32-bit integers (non-null items).
    ListUInt32,
    /// List of 32-bit floats (non-null items).
    ListFloat32,
}

impl ColumnType {
    /// The Arrow data type.
    pub fn data_type(self) -> DataType {
        let list = |item| DataType::List(Arc::new(Field::new("item", item, false)));
        match self {
            ColumnType::Utf8 => DataType::Utf8,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::UInt32 => DataType::UInt32,
            ColumnType::UInt64 => DataType::UInt64,
            ColumnType::Float32 => DataType::Float32,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::ListUInt32 => list(DataType::UInt32),
            ColumnType::ListFloat32 => list(DataType::Float32),
        }
    }

    /// The type as written in the README (`List<UInt32>`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Utf8 => "Utf8",
            ColumnType::Boolean => "Boolean",
            ColumnType::UInt32 => "UInt32",
            ColumnType::UInt64 => "UInt64",
            ColumnType::Float32 => "Float32",
            ColumnType::Float64 => "Float64",
            ColumnType::ListUInt32 => "List<UInt32>",
            ColumnType::ListFloat32 => "List<Float32>",
        }
    }

    /// Whether `found` is this type, item nullability of lists aside (writers differ there).
    fn accepts(self, found: &DataType) -> bool {
        match (self.data_type(), found) {
            (DataType::List(want), DataType::List(got)) => want.data_type() == got.data_type(),
            (want, got) => &want == got,
        }
    }
}

/// One column of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    /// Column name.
    pub name: &'static str,
    /// Arrow type.
    pub ty: ColumnType,
    /// Whether the column has nulls (and when, in `doc`).
    pub nullable: bool,
    /// What the column holds.
    pub doc: &'static str,
}

/// A [`Column`], for `const` tables.
pub const fn col(name: &'static str, ty: ColumnType, nullable: bool, doc: &'static str) -> Column {
    Column {
        name,
        ty,
        nullable,
        doc,
    }
}

/// The Arrow schema of a table.
pub fn schema(columns: &[Column]) -> Schema {
    Schema::new(
        columns
            .iter()
            .map(|c| Field::new(c.name, c.ty.data_type(), c.nullable))
            .collect::<Vec<_>>(),
    )
}

/// A table as Markdown (column, type, null, meaning), for the README.
pub fn markdown(columns: &[Column]) -> String {
    let mut s = String::from("| column | type | null | meaning |\n| --- | --- | --- | --- |\n");
    for c in columns {
        let null = if c.nullable { "yes" } else { "no" };
        s.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            c.name,
            c.ty.name(),
            null,
            c.doc
        ));
    }
    s
}

/// Why a table could not be written, or a file is not the table it should be.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// A file operation failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// A batch (or a file's schema) does not follow the table's declaration.
    #[error("{path}: column {index}: expected {expected}, found {found}")]
    Column {
        /// The file.
        path: PathBuf,
        /// 0-based column position.
        index: usize,
        /// The declared column, in words.
        expected: String,
        /// What was there.
        found: String,
    },
    /// Arrow refused the batch.
    #[error("{path}: {source}")]
    Arrow {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: ArrowError,
    },
    /// Writing Parquet failed.
    #[error("{path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: ParquetError,
    },
}

/// Checks that `found` has exactly the declared columns, in order, with their types.
pub fn check_schema(path: &Path, columns: &[Column], found: &Schema) -> Result<(), TableError> {
    let fields = found
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type()));
    check_columns(path, columns, fields)
}

/// The one column check of files and batches: `found` (name, type), in order, against the
/// declaration; the first difference is named.
fn check_columns<'a>(
    path: &Path,
    columns: &[Column],
    found: impl Iterator<Item = (&'a str, &'a DataType)>,
) -> Result<(), TableError> {
    let err = |index, expected: String, found: String| TableError::Column {
        path: path.to_owned(),
        index,
        expected,
        found,
    };
    let mut found = found;
    for (index, c) in columns.iter().enumerate() {
        let expected = || format!("`{}` {}", c.name, c.ty.name());
        let Some((name, ty)) = found.next() else {
            return Err(err(index, expected(), "no column".into()));
        };
        if name != c.name || !c.ty.accepts(ty) {
            return Err(err(index, expected(), format!("`{name}` {ty}")));
        }
    }
    if let Some((name, _)) = found.next() {
        return Err(err(
            columns.len(),
            "no more columns".into(),
            format!("`{name}`"),
        ));
    }
    Ok(())
}

/// A string value of a Parquet file's key/value footer.
pub fn footer_value(metadata: &ParquetMetaData, key: &str) -> Option<String> {
    metadata
        .file_metadata()
        .key_value_metadata()?
        .iter()
        .find(|e| e.key == key)?
        .value
        .clone()
}

/// A Parquet file of one table, written batch by batch (zstd, `row_group_rows` rows per row
/// group). Each batch is checked against the declaration before it is written.
pub struct TableWriter {
    columns: &'static [Column],
    schema: SchemaRef,
    writer: ArrowWriter<File>,
    path: PathBuf,
    rows: u64,
}

impl TableWriter {
    /// Creates `path` (normally the temporary file of an atomic replace) with key/value
    /// `metadata` in its footer.
    pub fn create(
        path: &Path,
        columns: &'static [Column],
        metadata: &[(&str, String)],
        row_group_rows: usize,
    ) -> Result<TableWriter, TableError> {
        let file = File::create(path).map_err(|source| TableError::Io {
            path: path.to_owned(),
            op: "create",
            source,
        })?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(row_group_rows.max(1)))
            .build();
        let schema: SchemaRef = Arc::new(schema(columns));
        let mut writer =
            ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(|source| {
                TableError::Parquet {
                    path: path.to_owned(),
                    source,
                }
            })?;
        for (key, value) in metadata {
            writer.append_key_value_metadata(KeyValue::new((*key).to_owned(), value.clone()));
        }
        Ok(TableWriter {
            columns,
            schema,
            writer,
            path: path.to_owned(),
            rows: 0,
        })
    }

    /// Writes one batch given as `(name, array)` pairs in declaration order; a name, type or
    /// null that breaks the declaration is refused before anything is written.
    pub fn write(&mut self, named: Vec<(&str, ArrayRef)>) -> Result<(), TableError> {
        check_columns(
            &self.path,
            self.columns,
            named.iter().map(|(n, a)| (*n, a.data_type())),
        )?;
        for (index, (c, (_, array))) in self.columns.iter().zip(&named).enumerate() {
            if !c.nullable && array.null_count() > 0 {
                let expected = format!("`{}` {} without nulls", c.name, c.ty.name());
                let found = format!("{} nulls", array.null_count());
                return Err(self.column_err(index, expected, found));
            }
        }
        let arrays: Vec<ArrayRef> = named.into_iter().map(|(_, a)| a).collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays).map_err(|source| {
            TableError::Arrow {
                path: self.path.clone(),
                source,
            }
        })?;
        self.rows += batch.num_rows() as u64;
        self.writer
            .write(&batch)
            .map_err(|source| TableError::Parquet {
                path: self.path.clone(),
                source,
            })
    }

    fn column_err(&self, index: usize, expected: String, found: String) -> TableError {
        TableError::Column {
            path: self.path.clone(),
            index,
            expected,
            found,
        }
    }

    /// Finishes the file and syncs it to disk; returns the rows written.
    pub fn finish(mut self) -> Result<u64, TableError> {
        self.writer.finish().map_err(|source| TableError::Parquet {
            path: self.path.clone(),
            source,
        })?;
        self.writer
            .inner()
            .sync_all()
            .map_err(|source| TableError::Io {
                path: self.path.clone(),
                op: "sync",
                source,
            })?;
        Ok(self.rows)
    }
}

/// Writes a whole one-batch table to `path` atomically (a temporary sibling renamed into place).
pub fn write_table(
    path: &Path,
    columns: &'static [Column],
    named: Vec<(&str, ArrayRef)>,
) -> Result<(), TableError> {
    flywheel_model::atomic::replace_file(
        path,
        |tmp| {
            let mut w = TableWriter::create(tmp, columns, &[], 65_536)?;
            w.write(named)?;
            w.finish().map(|_| ())
        },
        |source| TableError::Io {
            path: path.to_owned(),
            op: "rename into place",
            source,
        },
    )
}

/// Opens a table file for reading, its schema checked against `columns` first.
pub fn read_table(
    path: &Path,
    columns: &[Column],
) -> Result<::parquet::arrow::arrow_reader::ParquetRecordBatchReader, TableError> {
    use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = File::open(path).map_err(|source| TableError::Io {
        path: path.to_owned(),
        op: "open",
        source,
    })?;
    let parquet_err = |source| TableError::Parquet {
        path: path.to_owned(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err)?;
    check_schema(path, columns, builder.schema())?;
    builder.build().map_err(parquet_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{StringArray, UInt32Array};

    const T: &[Column] = &[
        col("a", ColumnType::UInt32, false, "first"),
        col("b", ColumnType::Utf8, true, "second"),
    ];

    fn arrays() -> (ArrayRef, ArrayRef) {
        (
            Arc::new(UInt32Array::from(vec![1, 2])),
            Arc::new(StringArray::from(vec![Some("x"), None])),
        )
    }

    #[test]
    fn writer_refuses_a_misnamed_or_swapped_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut w = TableWriter::create(&path, T, &[], 16).unwrap();
        let (a, b) = arrays();
        // Same types in the right places, wrong name: RecordBatch alone would accept this.
        let err = w
            .write(vec![("a", a.clone()), ("c", b.clone())])
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("column 1: expected `b` Utf8, found `c`"),
            "{err}"
        );
        let err = w
            .write(vec![("b", b.clone()), ("a", a.clone())])
            .unwrap_err();
        assert!(err.to_string().contains("column 0"), "{err}");
        w.write(vec![("a", a), ("b", b)]).unwrap();
        assert_eq!(w.finish().unwrap(), 2);
    }

    #[test]
    fn writer_refuses_nulls_in_a_required_column() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = TableWriter::create(&dir.path().join("t.parquet"), T, &[], 16).unwrap();
        let a: ArrayRef = Arc::new(UInt32Array::from(vec![Some(1), None]));
        let (_, b) = arrays();
        let err = w.write(vec![("a", a), ("b", b)]).unwrap_err();
        assert!(err.to_string().contains("1 nulls"), "{err}");
    }

    #[test]
    fn check_schema_names_the_first_difference() {
        let good = schema(T);
        check_schema(Path::new("f"), T, &good).unwrap();
        let other = Schema::new(vec![
            Field::new("a", DataType::UInt64, false),
            Field::new("b", DataType::Utf8, true),
        ]);
        let err = check_schema(Path::new("f"), T, &other).unwrap_err();
        assert!(
            err.to_string()
                .contains("column 0: expected `a` UInt32, found `a` UInt64"),
            "{err}"
        );
        let short = Schema::new(vec![Field::new("a", DataType::UInt32, false)]);
        assert!(check_schema(Path::new("f"), T, &short).is_err());
    }
}
