//! Writes the examples frame as `train.parquet` through the store's table writer, which checks
//! every column against [`TRAIN_COLUMNS`] (names, order, types, nulls) before anything is written.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, ArrowPrimitiveType, ListBuilder, PrimitiveBuilder, StringBuilder};
use arrow::datatypes::{Field, Float32Type as F32, UInt32Type as A32, UInt64Type as A64};
use flywheel_store::table::TableWriter;
use flywheel_store::{LabelMeta, LABEL_META_KEY, TRAIN_COLUMNS};
use polars::prelude::{
    DataFrame, Float32Type, PolarsError, PolarsNumericType, PolarsResult, UInt32Type, UInt64Type,
};

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

/// A numeric column without nulls, polars type `P` to Arrow type `A` (the same native type).
fn num_col<P, A>(df: &DataFrame, name: &str) -> PolarsResult<ArrayRef>
where
    P: PolarsNumericType,
    A: ArrowPrimitiveType<Native = P::Native>,
{
    let mut b = PrimitiveBuilder::<A>::with_capacity(df.height());
    for v in df
        .column(name)?
        .as_materialized_series()
        .unpack::<P>()?
        .iter()
    {
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

/// A list column without nulls (rows or items), polars item type `P` to Arrow item type `A`.
fn num_list<P, A>(df: &DataFrame, name: &str) -> PolarsResult<ArrayRef>
where
    P: PolarsNumericType,
    A: ArrowPrimitiveType<Native = P::Native>,
{
    let mut b = ListBuilder::new(PrimitiveBuilder::<A>::new()).with_field(Field::new(
        "item",
        A::DATA_TYPE,
        false,
    ));
    for item in df.column(name)?.list()?.amortized_iter() {
        let s = item.ok_or_else(|| missing(name))?;
        for v in s.as_ref().unpack::<P>()?.iter() {
            b.values().append_value(v.ok_or_else(|| missing(name))?);
        }
        b.append(true);
    }
    Ok(Arc::new(b.finish()))
}

/// The frame's columns as Arrow arrays, named, in [`TRAIN_COLUMNS`] order.
fn convert(df: &DataFrame) -> PolarsResult<Vec<(&'static str, ArrayRef)>> {
    Ok(vec![
        ("task_index", num_col::<UInt64Type, A64>(df, "task_index")?),
        ("task_id", str_col(df, "task_id", false)?),
        ("level", str_col(df, "level", true)?),
        ("attempt", num_col::<UInt32Type, A32>(df, "attempt")?),
        ("reflection", num_col::<UInt32Type, A32>(df, "reflection")?),
        ("input_ids", num_list::<UInt32Type, A32>(df, "input_ids")?),
        ("span_start", num_col::<UInt32Type, A32>(df, "span_start")?),
        ("span_end", num_col::<UInt32Type, A32>(df, "span_end")?),
        (
            "sampler_logprobs",
            num_list::<Float32Type, F32>(df, "sampler_logprobs")?,
        ),
        ("reward", num_col::<Float32Type, F32>(df, "reward")?),
        ("advantage", num_col::<Float32Type, F32>(df, "advantage")?),
        ("retry_reason", str_col(df, "retry_reason", false)?),
        ("finish_reason", str_col(df, "finish_reason", false)?),
        ("model_hash", str_col(df, "model_hash", false)?),
    ])
}
