//! Parquet input (TinyZero Countdown files): each row becomes a JSON object, numbered from 1.

use std::path::Path;

use serde_json::Value;

use crate::task::InstanceError;

type Rows = Box<dyn Iterator<Item = Result<(usize, Value), InstanceError>>>;

/// Streams the rows of a Parquet file as JSON objects.
#[cfg(feature = "parquet")]
pub fn rows(path: &Path) -> Rows {
    use parquet::file::reader::SerializedFileReader;

    let path_buf = path.to_path_buf();
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(source) => {
            return Box::new(std::iter::once(Err(InstanceError::Open {
                path: path_buf,
                source,
            })))
        }
    };
    let reader = match SerializedFileReader::new(file) {
        Ok(r) => r,
        Err(e) => {
            return Box::new(std::iter::once(Err(InstanceError::Parquet {
                path: path_buf,
                message: e.to_string(),
            })))
        }
    };
    let mut row_no = 0usize;
    let mut failed = false;
    Box::new(reader.into_iter().map_while(move |row| {
        // A decoding error usually repeats on every later row; report it once and stop.
        if failed {
            return None;
        }
        row_no += 1;
        Some(match row {
            Ok(row) => Ok((row_no, row.to_json_value())),
            Err(e) => {
                failed = true;
                Err(InstanceError::Parquet {
                    path: path_buf.clone(),
                    message: format!("row {row_no}: {e}"),
                })
            }
        })
    }))
}

#[cfg(not(feature = "parquet"))]
pub fn rows(path: &Path) -> Rows {
    Box::new(std::iter::once(Err(InstanceError::Parquet {
        path: path.to_path_buf(),
        message: "this build has no Parquet support (enable the `parquet` feature)".to_string(),
    })))
}
