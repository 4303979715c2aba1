//! `RUN_DIR/eval.parquet`: held-out accuracy of every evaluated round, one row per (round, level),
//! with the paired change from round 0 on the same tasks. Declared here beside the other tables so
//! `eval` and `round` write it, tests read it, and the README documents it from one list.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, StringArray, UInt32Array, UInt64Array};

use crate::table::{col, Column, ColumnType, TableError};

/// File name of the cross-round evaluation table inside a run directory.
pub const EVAL_FILE: &str = "eval.parquet";

/// The columns of `eval.parquet`, in file order.
pub const EVAL_COLUMNS: &[Column] = &[
    col(
        "round",
        ColumnType::UInt32,
        false,
        "the round whose model was evaluated (0: the initial model)",
    ),
    col(
        "level",
        ColumnType::Utf8,
        false,
        "`all`, or one level of the task",
    ),
    col(
        "model_hash",
        ColumnType::Utf8,
        false,
        "SHA-256 of the evaluated model's weights",
    ),
    col(
        "samples_per_task",
        ColumnType::UInt32,
        false,
        "samples per task (1: greedy)",
    ),
    col(
        "temperature",
        ColumnType::Float64,
        false,
        "sampling temperature of the evaluation (0: greedy)",
    ),
    col(
        "tasks",
        ColumnType::UInt64,
        false,
        "distinct held-out tasks of the level",
    ),
    col(
        "samples",
        ColumnType::UInt64,
        false,
        "tasks × samples per task",
    ),
    col(
        "first_passed",
        ColumnType::UInt64,
        false,
        "samples whose first try passed",
    ),
    col("first", ColumnType::Float64, false, "first-try accuracy"),
    col(
        "first_low",
        ColumnType::Float64,
        false,
        "95% Wilson interval of `first`, low end",
    ),
    col("first_high", ColumnType::Float64, false, "its high end"),
    col(
        "second_passed",
        ColumnType::UInt64,
        false,
        "samples that passed on the first try or on the retry after one reflection",
    ),
    col("second", ColumnType::Float64, false, "second-try accuracy"),
    col(
        "second_low",
        ColumnType::Float64,
        false,
        "95% Wilson interval of `second`, low end",
    ),
    col("second_high", ColumnType::Float64, false, "its high end"),
    col(
        "pairs",
        ColumnType::UInt64,
        false,
        "(task, sample) pairs shared with round 0's evaluation",
    ),
    col(
        "first_change",
        ColumnType::Float64,
        false,
        "paired change of first-try accuracy from round 0 on those pairs (0 for round 0)",
    ),
    col(
        "first_change_low",
        ColumnType::Float64,
        false,
        "95% paired-bootstrap interval of `first_change` (10,000 resamples), low end",
    ),
    col(
        "first_change_high",
        ColumnType::Float64,
        false,
        "its high end",
    ),
    col(
        "first_p",
        ColumnType::Float64,
        false,
        "two-sided exact McNemar p-value of `first_change`",
    ),
    col(
        "second_change",
        ColumnType::Float64,
        false,
        "paired change of second-try accuracy from round 0",
    ),
    col(
        "second_change_low",
        ColumnType::Float64,
        false,
        "95% paired-bootstrap interval of `second_change`, low end",
    ),
    col(
        "second_change_high",
        ColumnType::Float64,
        false,
        "its high end",
    ),
    col(
        "second_p",
        ColumnType::Float64,
        false,
        "two-sided exact McNemar p-value of `second_change`",
    ),
];

/// One row of `eval.parquet`, as [`EVAL_COLUMNS`] declares it (same names, same order).
#[derive(Clone, Debug, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[allow(missing_docs)]
pub struct EvalRow {
    pub round: u32,
    pub level: String,
    pub model_hash: String,
    pub samples_per_task: u32,
    pub temperature: f64,
    pub tasks: u64,
    pub samples: u64,
    pub first_passed: u64,
    pub first: f64,
    pub first_low: f64,
    pub first_high: f64,
    pub second_passed: u64,
    pub second: f64,
    pub second_low: f64,
    pub second_high: f64,
    pub pairs: u64,
    pub first_change: f64,
    pub first_change_low: f64,
    pub first_change_high: f64,
    pub first_p: f64,
    pub second_change: f64,
    pub second_change_low: f64,
    pub second_change_high: f64,
    pub second_p: f64,
}

/// One value of a row, typed as its column.
enum Cell<'a> {
    U32(u32),
    U64(u64),
    F64(f64),
    Str(&'a str),
}

/// The row's value of a declared column (the one place that maps names to fields, both ways).
fn cell<'a>(r: &'a EvalRow, name: &str) -> Option<Cell<'a>> {
    use Cell::*;
    Some(match name {
        "round" => U32(r.round),
        "level" => Str(&r.level),
        "model_hash" => Str(&r.model_hash),
        "samples_per_task" => U32(r.samples_per_task),
        "temperature" => F64(r.temperature),
        "tasks" => U64(r.tasks),
        "samples" => U64(r.samples),
        "first_passed" => U64(r.first_passed),
        "first" => F64(r.first),
        "first_low" => F64(r.first_low),
        "first_high" => F64(r.first_high),
        "second_passed" => U64(r.second_passed),
        "second" => F64(r.second),
        "second_low" => F64(r.second_low),
        "second_high" => F64(r.second_high),
        "pairs" => U64(r.pairs),
        "first_change" => F64(r.first_change),
        "first_change_low" => F64(r.first_change_low),
        "first_change_high" => F64(r.first_change_high),
        "first_p" => F64(r.first_p),
        "second_change" => F64(r.second_change),
        "second_change_low" => F64(r.second_change_low),
        "second_change_high" => F64(r.second_change_high),
        "second_p" => F64(r.second_p),
        _ => return None,
    })
}

fn set(r: &mut EvalRow, name: &str, v: Cell<'_>) {
    match (name, v) {
        ("round", Cell::U32(v)) => r.round = v,
        ("samples_per_task", Cell::U32(v)) => r.samples_per_task = v,
        ("level", Cell::Str(v)) => r.level = v.to_owned(),
        ("model_hash", Cell::Str(v)) => r.model_hash = v.to_owned(),
        ("tasks", Cell::U64(v)) => r.tasks = v,
        ("samples", Cell::U64(v)) => r.samples = v,
        ("first_passed", Cell::U64(v)) => r.first_passed = v,
        ("second_passed", Cell::U64(v)) => r.second_passed = v,
        ("pairs", Cell::U64(v)) => r.pairs = v,
        (name, Cell::F64(v)) => {
            let f = match name {
                "temperature" => &mut r.temperature,
                "first" => &mut r.first,
                "first_low" => &mut r.first_low,
                "first_high" => &mut r.first_high,
                "second" => &mut r.second,
                "second_low" => &mut r.second_low,
                "second_high" => &mut r.second_high,
                "first_change" => &mut r.first_change,
                "first_change_low" => &mut r.first_change_low,
                "first_change_high" => &mut r.first_change_high,
                "first_p" => &mut r.first_p,
                "second_change" => &mut r.second_change,
                "second_change_low" => &mut r.second_change_low,
                "second_change_high" => &mut r.second_change_high,
                "second_p" => &mut r.second_p,
                _ => return,
            };
            *f = v;
        }
        _ => {}
    }
}

/// Writes `rows` to `path` atomically (a temporary sibling renamed into place).
pub fn write_eval(path: &Path, rows: &[EvalRow]) -> Result<(), TableError> {
    let internal = |name: &str| TableError::Column {
        path: path.to_owned(),
        index: 0,
        expected: format!("a field for column `{name}`"),
        found: "none".into(),
    };
    let mut named: Vec<(&str, ArrayRef)> = Vec::with_capacity(EVAL_COLUMNS.len());
    for c in EVAL_COLUMNS {
        let cells = rows
            .iter()
            .map(|r| cell(r, c.name).ok_or_else(|| internal(c.name)))
            .collect::<Result<Vec<_>, _>>()?;
        let array: ArrayRef = match c.ty {
            ColumnType::UInt32 => Arc::new(UInt32Array::from_iter_values(cells.iter().map(|v| {
                if let Cell::U32(v) = v {
                    *v
                } else {
                    0
                }
            }))),
            ColumnType::UInt64 => Arc::new(UInt64Array::from_iter_values(cells.iter().map(|v| {
                if let Cell::U64(v) = v {
                    *v
                } else {
                    0
                }
            }))),
            ColumnType::Float64 => {
                Arc::new(Float64Array::from_iter_values(cells.iter().map(|v| {
                    if let Cell::F64(v) = v {
                        *v
                    } else {
                        0.0
                    }
                })))
            }
            _ => Arc::new(StringArray::from_iter_values(cells.iter().map(|v| {
                if let Cell::Str(v) = v {
                    *v
                } else {
                    ""
                }
            }))),
        };
        named.push((c.name, array));
    }
    crate::table::write_table(path, EVAL_COLUMNS, named)
}

/// Reads a whole `eval.parquet` (schema checked against [`EVAL_COLUMNS`] first).
pub fn read_eval(path: &Path) -> Result<Vec<EvalRow>, TableError> {
    let reader = crate::table::read_table(path, EVAL_COLUMNS)?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|source| TableError::Arrow {
            path: path.to_owned(),
            source,
        })?;
        let start = rows.len();
        rows.resize(start + batch.num_rows(), EvalRow::default());
        // The schema check above fixed every column's type, so each downcast succeeds.
        for (c, array) in EVAL_COLUMNS.iter().zip(batch.columns()) {
            let any = array.as_any();
            for (i, row) in rows[start..].iter_mut().enumerate() {
                let v = if let Some(a) = any.downcast_ref::<UInt32Array>() {
                    Cell::U32(a.value(i))
                } else if let Some(a) = any.downcast_ref::<UInt64Array>() {
                    Cell::U64(a.value(i))
                } else if let Some(a) = any.downcast_ref::<Float64Array>() {
                    Cell::F64(a.value(i))
                } else if let Some(a) = any.downcast_ref::<StringArray>() {
                    Cell::Str(a.value(i))
                } else {
                    continue;
                };
                set(row, c.name, v);
            }
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_has_a_field_and_rows_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EVAL_FILE);
        let mut a = EvalRow {
            round: 2,
            level: "trivial".into(),
            model_hash: "ab".into(),
            samples_per_task: 1,
            tasks: 7,
            samples: 7,
            first_passed: 3,
            ..Default::default()
        };
        // Distinct values in every float column, so a swapped mapping cannot round-trip.
        for (i, c) in EVAL_COLUMNS.iter().enumerate() {
            assert!(cell(&a, c.name).is_some(), "no field for {}", c.name);
            if c.ty == ColumnType::Float64 {
                set(&mut a, c.name, Cell::F64(i as f64 / 100.0));
            }
        }
        let b = EvalRow {
            round: 0,
            level: "all".into(),
            ..a.clone()
        };
        write_eval(&path, &[a.clone(), b.clone()]).unwrap();
        assert_eq!(read_eval(&path).unwrap(), vec![a, b]);
    }
}
