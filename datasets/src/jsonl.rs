//! Streaming JSONL reading: one JSON value per line, errors carry the line number and do not stop iteration.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::task::InstanceError;

/// Iterates `(line_number, value)` over a JSONL file, skipping blank lines.
pub struct JsonlReader {
    path: PathBuf,
    state: State,
    line: usize,
    buf: Vec<u8>,
}

enum State {
    Open(Box<dyn BufRead>),
    Failed(Option<std::io::Error>),
    Done,
}

impl JsonlReader {
    /// Opens `path`; an open failure is reported as the first item.
    pub fn open(path: &Path) -> Self {
        let state = match File::open(path) {
            Ok(f) => State::Open(Box::new(BufReader::new(f))),
            Err(e) => State::Failed(Some(e)),
        };
        Self::with_state(path, state)
    }

    /// Reads from any buffered reader; `path` is used in error messages only.
    pub fn from_reader(path: &Path, reader: Box<dyn BufRead>) -> Self {
        Self::with_state(path, State::Open(reader))
    }

    fn with_state(path: &Path, state: State) -> Self {
        Self {
            path: path.to_path_buf(),
            state,
            line: 0,
            buf: Vec::new(),
        }
    }
}

/// Parses one line's text; the error message is serde_json's (it names the column).
pub fn parse_line(line: usize, text: &str) -> Result<Value, InstanceError> {
    serde_json::from_str(text).map_err(|e| InstanceError::Json {
        line,
        message: e.to_string(),
    })
}

impl Iterator for JsonlReader {
    type Item = Result<(usize, Value), InstanceError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let reader = match &mut self.state {
                State::Open(r) => r,
                State::Failed(e) => {
                    let source = e.take()?;
                    self.state = State::Done;
                    return Some(Err(InstanceError::Open {
                        path: self.path.clone(),
                        source,
                    }));
                }
                State::Done => return None,
            };
            self.buf.clear();
            self.line += 1;
            match reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => {
                    self.state = State::Done;
                    return None;
                }
                Ok(_) => {}
                Err(source) => {
                    // A failing reader would fail forever; report once and stop.
                    self.state = State::Done;
                    return Some(Err(InstanceError::Read {
                        path: self.path.clone(),
                        line: self.line,
                        source,
                    }));
                }
            }
            let text = match std::str::from_utf8(&self.buf) {
                Ok(t) => t,
                Err(e) => {
                    return Some(Err(InstanceError::Json {
                        line: self.line,
                        message: format!("invalid UTF-8: {e}"),
                    }))
                }
            };
            if text.trim().is_empty() {
                continue;
            }
            return Some(parse_line(self.line, text).map(|v| (self.line, v)));
        }
    }
}
