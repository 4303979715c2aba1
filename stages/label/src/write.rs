//! Writes the examples frame as `train.parquet` through the store's table writer, which checks
//! every column against [`TRAIN_COLUMNS`] (names, order, types, nulls) before anything is written.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float32Builder, ListBuilder, StringBuilder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field};
use flywheel_store::table::TableWriter;
use flywheel_store::{LabelMeta, LABEL_META_KEY, TRAIN_COLUMNS};
use polars::prelude::{DataFrame, PolarsError, PolarsResult};

use crate::LabelError;

/// Rows per row group (and per converted batch).
const BATCH_ROWS: usize = 4096;

/// Writes `examples` (columns of [`TRAIN_COLUMNS`]) to `path` with `meta` in the footer; returns
/// the rows written.
pub fn write(path: &Path, examples: &DataFrame, meta: &LabelMeta) -> Result<u64, LabelError> {
    let json = serde_json::to_string(meta).map_err(|e| LabelError::Internal(e.to_string()))?;
    let mut writer =
        TableWriter::create(path, TRAIN_COLUMNS, &[(LABEL_META_KEY, json)], BATCH_ROWS)?;
    let mut offset = 0usize;
    while offset < examples.height() {
        let len = BATCH_ROWS.min(examples.height() - offset);
        let part = examples.slice(offset as i64, len);
        let columns = convert(&part).map_err(|e| LabelError::Polars {
            what: "convert the examples",
            source: e,
        })?;
        writer.write(columns)?;
        offset += len;
    }
    Ok(writer.finish()?)
}

fn missing(name: &str) -> PolarsError {
    PolarsError::ComputeError(format!("null in non-null column `{name}`").into())
}

fn u64_col(df: &DataFrame, name: &str) -> PolarsResult<ArrayRef> {
    let mut b = UInt64Builder::with_capacity(df.height());
    for v in df.column(name)?.u64()?.iter() {
        b.append_value(v.ok_or_else(|| missing(name))?);
    }
    Ok(Arc::new(b.finish()))
}

fn u32_col(df: &DataFrame, name: &str) -> PolarsResult<ArrayRef> {
    let mut b = UInt32Builder::with_capacity(df.height());
    for v in df.column(name)?.u32()?.iter() {
        b.append_value(v.ok_or_else(|| missing(name))?);
    }
    Ok(Arc::new(b.finish()))
}

fn f32_col(df: &DataFrame, name: &str) -> PolarsResult<ArrayRef> {
    let mut b = Float32Builder::with_capacity(df.height());
    for v in df.column(name)?.f32()?.iter() {
        b.append_value(v.ok_or_else(|| missing(name))?);
    }
    Ok(Arc::new(b.finish()))
}

/// A string column; `nullable` columns keep their nulls, the others refuse them.
fn str_col(df: &DataFrame, name: &str, nullable: bool) -> PolarsResult<ArrayRef> {
    let mut b = StringBuilder::new();
    for v in df.column(name)?.str()?.iter() {
        match (v, nullable) {
            (Some(s), _) => b.append_value(s),
            (None, true) => b.append_null(),
            (None, false) => return Err(missing(name)),
        }
    }
    Ok(Arc::new(b.finish()))
}

fn u32_list(df: &DataFrame, name: &str) -> PolarsResult<ArrayRef> {
    let mut b = ListBuilder::new(UInt32Builder::new()).with_field(Field::new(
        "item",
        DataType::UInt32,
        false,
    ));
    for item in df.column(name)?.list()?.amortized_iter() {
        let s = item.ok_or_else(|| missing(name))?;
        for v in s.as_ref().u32()?.iter() {
            b.values().append_value(v.ok_or_else(|| missing(name))?);
        }
        b.append(true);
    }
    Ok(Arc::new(b.finish()))
}

fn f32_list(df: &DataFrame, name: &str) -> PolarsResult<ArrayRef> {
    let mut b = ListBuilder::new(Float32Builder::new()).with_field(Field::new(
        "item",
        DataType::Float32,
        false,
    ));
    for item in df.column(name)?.list()?.amortized_iter() {
        let s = item.ok_or_else(|| missing(name))?;
        for v in s.as_ref().f32()?.iter() {
            b.values().append_value(v.ok_or_else(|| missing(name))?);
        }
        b.append(true);
    }
    Ok(Arc::new(b.finish()))
}

/// The frame's columns as Arrow arrays, named, in [`TRAIN_COLUMNS`] order.
fn convert(df: &DataFrame) -> PolarsResult<Vec<(&'static str, ArrayRef)>> {
    Ok(vec![
        ("task_index", u64_col(df, "task_index")?),
        ("task_id", str_col(df, "task_id", false)?),
        ("level", str_col(df, "level", true)?),
        ("attempt", u32_col(df, "attempt")?),
        ("reflection", u32_col(df, "reflection")?),
        ("input_ids", u32_list(df, "input_ids")?),
        ("span_start", u32_col(df, "span_start")?),
        ("span_end", u32_col(df, "span_end")?),
        ("sampler_logprobs", f32_list(df, "sampler_logprobs")?),
        ("reward", f32_col(df, "reward")?),
        ("advantage", f32_col(df, "advantage")?),
        ("retry_reason", str_col(df, "retry_reason", false)?),
        ("finish_reason", str_col(df, "finish_reason", false)?),
        ("model_hash", str_col(df, "model_hash", false)?),
    ])
}
