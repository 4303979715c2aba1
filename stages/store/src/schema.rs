//! The redb schema: table definitions, key layout and the compact binary value encoding.
//!
//! Keys are redb tuple keys, which redb orders element by element, so every table iterates in
//! `(task_index, attempt, reflection)` order. A value holds a record without its key fields, in
//! a little-endian binary layout (version [`SCHEMA_VERSION`]):
//!
//! - integers and floats: fixed width, little-endian (`f32`/`f64` as their IEEE bits, so values
//!   round-trip bit for bit, NaN and -0.0 included);
//! - `bool`: one byte, 0 or 1; `Option<String>`: one byte 0 (none) or 1 followed by the string;
//! - strings: `u64` byte length then UTF-8 bytes; `Vec<u32>`/`Vec<f32>`: `u64` element count then
//!   the elements;
//! - [`Generation`]: prompt ids, token ids, log-probs, text, finish reason (one byte: 0 eos,
//!   1 stop, 2 length), seed, started (ms), seconds;
//! - task: id, level, fields JSON; attempt and retry: generation, pass, reason; reflection:
//!   generation.
//!
//! The run's [`crate::RunMeta`] is stored as JSON under [`META_RUN`]; running totals for
//! [`crate::Counts`] are kept in [`COUNTERS`], updated in the same transaction as the records.

use redb::TableDefinition;

use crate::records::{
    AttemptRecord, FinishReason, Generation, ReflectionRecord, RetryRecord, TaskRecord,
};

/// Version of the table layout and value encoding; a store of another version is refused.
pub const SCHEMA_VERSION: u64 = 2;

/// Run-level entries: [`META_RUN`] (JSON `RunMeta`) and [`META_SCHEMA`] (version, `u64` LE).
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Key of the run's settings in [`META`].
pub const META_RUN: &str = "run";
/// Key of the schema version in [`META`].
pub const META_SCHEMA: &str = "schema_version";

/// Running totals, keyed by the names in [`COUNTER_NAMES`].
pub const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// Counter names, in the order of [`crate::Counts`]'s fields.
pub const COUNTER_NAMES: [&str; 6] = [
    "tasks",
    "attempts",
    "attempts_passed",
    "reflections",
    "retries",
    "retries_passed",
];

/// Key: task_index.
pub const TASKS: TableDefinition<u64, &[u8]> = TableDefinition::new("tasks");
/// Key: (task_index, attempt).
pub const ATTEMPTS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("attempts");
/// Key: (task_index, attempt, reflection).
pub const REFLECTIONS: TableDefinition<(u64, u32, u32), &[u8]> =
    TableDefinition::new("reflections");
/// Key: (task_index, attempt, reflection).
pub const RETRIES: TableDefinition<(u64, u32, u32), &[u8]> = TableDefinition::new("retries");

/// Why a stored value could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The value ended before the field did.
    #[error("value truncated while reading {0}")]
    Truncated(&'static str),
    /// A string field is not UTF-8.
    #[error("field {0} is not valid UTF-8")]
    Utf8(&'static str),
    /// A tag byte has no meaning.
    #[error("field {field} has invalid tag {tag}")]
    Tag {
        /// The field.
        field: &'static str,
        /// The byte read.
        tag: u8,
    },
    /// Bytes remain after the last field.
    #[error("{0} unexpected trailing bytes")]
    Trailing(usize),
}

/// Appends fields to a value buffer.
struct Enc(Vec<u8>);

impl Enc {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }
    fn len(&mut self, n: usize) {
        // usize is at most 64 bits on every supported target.
        self.u64(n as u64);
    }
    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
    fn bool(&mut self, b: bool) {
        self.u8(u8::from(b));
    }
    fn u32s(&mut self, v: &[u32]) {
        self.len(v.len());
        self.0.reserve(v.len() * 4);
        for x in v {
            self.0.extend_from_slice(&x.to_le_bytes());
        }
    }
    fn f32s(&mut self, v: &[f32]) {
        self.len(v.len());
        self.0.reserve(v.len() * 4);
        for x in v {
            self.0.extend_from_slice(&x.to_bits().to_le_bytes());
        }
    }
    fn generation(&mut self, g: &Generation) {
        self.u32s(&g.prompt_ids);
        self.u32s(&g.token_ids);
        self.f32s(&g.logprobs);
        self.str(&g.text);
        self.u8(match g.finish_reason {
            FinishReason::Eos => 0,
            FinishReason::Stop => 1,
            FinishReason::Length => 2,
        });
        self.u64(g.seed);
        self.u64(g.started_unix_ms);
        self.f64(g.seconds);
    }
}

/// Reads fields from a value.
struct Dec<'a> {
    buf: &'a [u8],
}

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(field));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    fn f64(&mut self, field: &'static str) -> Result<f64, DecodeError> {
        Ok(f64::from_bits(self.u64(field)?))
    }
    /// A length prefix for items of `width` bytes, checked against the bytes left so a corrupt
    /// length cannot trigger a huge allocation.
    fn len(&mut self, width: usize, field: &'static str) -> Result<usize, DecodeError> {
        let n = usize::try_from(self.u64(field)?).map_err(|_| DecodeError::Truncated(field))?;
        match n.checked_mul(width) {
            Some(bytes) if bytes <= self.buf.len() => Ok(n),
            _ => Err(DecodeError::Truncated(field)),
        }
    }
    fn str(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let n = self.len(1, field)?;
        let bytes = self.take(n, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Utf8(field))
    }
    fn opt_str(&mut self, field: &'static str) -> Result<Option<String>, DecodeError> {
        match self.u8(field)? {
            0 => Ok(None),
            1 => Ok(Some(self.str(field)?)),
            tag => Err(DecodeError::Tag { field, tag }),
        }
    }
    fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::Tag { field, tag }),
        }
    }
    fn words(
        &mut self,
        field: &'static str,
    ) -> Result<impl Iterator<Item = [u8; 4]> + 'a, DecodeError> {
        let n = self.len(4, field)?;
        let bytes = self.take(n * 4, field)?;
        Ok(bytes.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]))
    }
    fn u32s(&mut self, field: &'static str) -> Result<Vec<u32>, DecodeError> {
        Ok(self.words(field)?.map(u32::from_le_bytes).collect())
    }
    fn f32s(&mut self, field: &'static str) -> Result<Vec<f32>, DecodeError> {
        Ok(self
            .words(field)?
            .map(|w| f32::from_bits(u32::from_le_bytes(w)))
            .collect())
    }
    fn generation(&mut self) -> Result<Generation, DecodeError> {
        Ok(Generation {
            prompt_ids: self.u32s("prompt_ids")?,
            token_ids: self.u32s("token_ids")?,
            logprobs: self.f32s("logprobs")?,
            text: self.str("text")?,
            finish_reason: match self.u8("finish_reason")? {
                0 => FinishReason::Eos,
                1 => FinishReason::Stop,
                2 => FinishReason::Length,
                tag => {
                    return Err(DecodeError::Tag {
                        field: "finish_reason",
                        tag,
                    })
                }
            },
            seed: self.u64("seed")?,
            started_unix_ms: self.u64("started_unix_ms")?,
            seconds: self.f64("seconds")?,
        })
    }
    fn end(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.buf.len()))
        }
    }
}

/// Encodes a task's value (its key is `task_index`).
pub fn encode_task(t: &TaskRecord) -> Vec<u8> {
    let mut e = Enc(Vec::with_capacity(16 + t.id.len() + t.fields_json.len()));
    e.str(&t.id);
    e.opt_str(t.level.as_deref());
    e.str(&t.fields_json);
    e.0
}

/// Decodes a task's value.
pub fn decode_task(task_index: u64, value: &[u8]) -> Result<TaskRecord, DecodeError> {
    let mut d = Dec { buf: value };
    let t = TaskRecord {
        task_index,
        id: d.str("id")?,
        level: d.opt_str("level")?,
        fields_json: d.str("fields_json")?,
    };
    d.end()?;
    Ok(t)
}

fn generation_capacity(g: &Generation) -> usize {
    64 + 4 * (g.prompt_ids.len() + g.token_ids.len() + g.logprobs.len()) + g.text.len()
}

/// Encodes an attempt's value (its key is `(task_index, attempt)`).
pub fn encode_attempt(a: &AttemptRecord) -> Vec<u8> {
    let mut e = Enc(Vec::with_capacity(
        generation_capacity(&a.generation) + a.reason.len(),
    ));
    e.generation(&a.generation);
    e.bool(a.pass);
    e.str(&a.reason);
    e.0
}

/// Decodes an attempt's value.
pub fn decode_attempt(key: (u64, u32), value: &[u8]) -> Result<AttemptRecord, DecodeError> {
    let mut d = Dec { buf: value };
    let a = AttemptRecord {
        task_index: key.0,
        attempt: key.1,
        generation: d.generation()?,
        pass: d.bool("pass")?,
        reason: d.str("reason")?,
    };
    d.end()?;
    Ok(a)
}

/// Encodes a reflection's value (its key is `(task_index, attempt, reflection)`).
pub fn encode_reflection(r: &ReflectionRecord) -> Vec<u8> {
    let mut e = Enc(Vec::with_capacity(generation_capacity(&r.generation)));
    e.generation(&r.generation);
    e.0
}

/// Decodes a reflection's value.
pub fn decode_reflection(
    key: (u64, u32, u32),
    value: &[u8],
) -> Result<ReflectionRecord, DecodeError> {
    let mut d = Dec { buf: value };
    let r = ReflectionRecord {
        task_index: key.0,
        attempt: key.1,
        reflection: key.2,
        generation: d.generation()?,
    };
    d.end()?;
    Ok(r)
}

/// Encodes a retry's value (its key is `(task_index, attempt, reflection)`).
pub fn encode_retry(r: &RetryRecord) -> Vec<u8> {
    let mut e = Enc(Vec::with_capacity(
        generation_capacity(&r.generation) + r.reason.len(),
    ));
    e.generation(&r.generation);
    e.bool(r.pass);
    e.str(&r.reason);
    e.0
}

/// Decodes a retry's value.
pub fn decode_retry(key: (u64, u32, u32), value: &[u8]) -> Result<RetryRecord, DecodeError> {
    let mut d = Dec { buf: value };
    let r = RetryRecord {
        task_index: key.0,
        attempt: key.1,
        reflection: key.2,
        generation: d.generation()?,
        pass: d.bool("pass")?,
        reason: d.str("reason")?,
    };
    d.end()?;
    Ok(r)
}

/// A record type stored in its own table: its key, table and value encoding.
pub trait StoredRecord: Sized {
    /// The redb key (a plain or tuple integer key that is its own borrowed form).
    type Key: redb::Key + for<'a> redb::Value<SelfType<'a> = Self::Key> + Copy + 'static;
    /// The table holding this record type.
    const TABLE: TableDefinition<'static, Self::Key, &'static [u8]>;
    /// The table's name, for messages.
    const NAME: &'static str;
    /// This record's key.
    fn key(&self) -> Self::Key;
    /// This record's value.
    fn encode(&self) -> Vec<u8>;
    /// Rebuilds a record from its key and value.
    fn decode(key: Self::Key, value: &[u8]) -> Result<Self, DecodeError>;
    /// The key in words, for messages.
    fn describe(key: Self::Key) -> String;
    /// The verdict, for records that have one.
    fn pass(&self) -> Option<bool>;
}

impl StoredRecord for TaskRecord {
    type Key = u64;
    const TABLE: TableDefinition<'static, u64, &'static [u8]> = TASKS;
    const NAME: &'static str = "tasks";
    fn key(&self) -> u64 {
        self.task_index
    }
    fn encode(&self) -> Vec<u8> {
        encode_task(self)
    }
    fn decode(key: u64, value: &[u8]) -> Result<Self, DecodeError> {
        decode_task(key, value)
    }
    fn describe(key: u64) -> String {
        key_text(key, None, None)
    }
    fn pass(&self) -> Option<bool> {
        None
    }
}

impl StoredRecord for AttemptRecord {
    type Key = (u64, u32);
    const TABLE: TableDefinition<'static, (u64, u32), &'static [u8]> = ATTEMPTS;
    const NAME: &'static str = "attempts";
    fn key(&self) -> (u64, u32) {
        (self.task_index, self.attempt)
    }
    fn encode(&self) -> Vec<u8> {
        encode_attempt(self)
    }
    fn decode(key: (u64, u32), value: &[u8]) -> Result<Self, DecodeError> {
        decode_attempt(key, value)
    }
    fn describe(key: (u64, u32)) -> String {
        key_text(key.0, Some(key.1), None)
    }
    fn pass(&self) -> Option<bool> {
        Some(self.pass)
    }
}

impl StoredRecord for ReflectionRecord {
    type Key = (u64, u32, u32);
    const TABLE: TableDefinition<'static, (u64, u32, u32), &'static [u8]> = REFLECTIONS;
    const NAME: &'static str = "reflections";
    fn key(&self) -> (u64, u32, u32) {
        (self.task_index, self.attempt, self.reflection)
    }
    fn encode(&self) -> Vec<u8> {
        encode_reflection(self)
    }
    fn decode(key: (u64, u32, u32), value: &[u8]) -> Result<Self, DecodeError> {
        decode_reflection(key, value)
    }
    fn describe(key: (u64, u32, u32)) -> String {
        key_text(key.0, Some(key.1), Some(key.2))
    }
    fn pass(&self) -> Option<bool> {
        None
    }
}

impl StoredRecord for RetryRecord {
    type Key = (u64, u32, u32);
    const TABLE: TableDefinition<'static, (u64, u32, u32), &'static [u8]> = RETRIES;
    const NAME: &'static str = "retries";
    fn key(&self) -> (u64, u32, u32) {
        (self.task_index, self.attempt, self.reflection)
    }
    fn encode(&self) -> Vec<u8> {
        encode_retry(self)
    }
    fn decode(key: (u64, u32, u32), value: &[u8]) -> Result<Self, DecodeError> {
        decode_retry(key, value)
    }
    fn describe(key: (u64, u32, u32)) -> String {
        key_text(key.0, Some(key.1), Some(key.2))
    }
    fn pass(&self) -> Option<bool> {
        Some(self.pass)
    }
}

/// Renders a key for error messages, e.g. `task 3 attempt 1 reflection 0`.
pub fn key_text(task_index: u64, attempt: Option<u32>, reflection: Option<u32>) -> String {
    let mut s = format!("task {task_index}");
    if let Some(a) = attempt {
        s.push_str(&format!(" attempt {a}"));
    }
    if let Some(r) = reflection {
        s.push_str(&format!(" reflection {r}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation(n: u32) -> Generation {
        Generation {
            prompt_ids: (0..n).collect(),
            token_ids: vec![n, u32::MAX, 0],
            logprobs: vec![-0.5, f32::NAN, -0.0],
            text: "héllo\n".repeat(n as usize),
            finish_reason: FinishReason::Length,
            seed: u64::MAX - u64::from(n),
            started_unix_ms: 1_700_000_000_000,
            seconds: 1.25,
        }
    }

    #[test]
    fn task_round_trip() {
        for level in [None, Some("3".to_string()), Some(String::new())] {
            let t = TaskRecord {
                task_index: 9,
                id: "id-9".into(),
                level,
                fields_json: r#"{"a":1}"#.into(),
            };
            assert_eq!(decode_task(9, &encode_task(&t)).unwrap(), t);
        }
    }

    #[test]
    fn generation_round_trips_bit_for_bit() {
        let r = RetryRecord {
            task_index: 1,
            attempt: 2,
            reflection: 3,
            generation: generation(5),
            pass: true,
            reason: "ok".into(),
        };
        let back = decode_retry((1, 2, 3), &encode_retry(&r)).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&back.generation.logprobs),
            bits(&r.generation.logprobs)
        );
        assert_eq!(back.generation.token_ids, r.generation.token_ids);
        assert_eq!(back.generation.text, r.generation.text);
        assert_eq!(back.generation.finish_reason, FinishReason::Length);
        assert_eq!((back.pass, back.reason.as_str()), (true, "ok"));
        assert_eq!(back.generation.seed, r.generation.seed);
    }

    #[test]
    fn attempt_and_reflection_round_trip() {
        let a = AttemptRecord {
            task_index: 4,
            attempt: 0,
            generation: generation(0),
            pass: false,
            reason: "wrong answer".into(),
        };
        let back = decode_attempt((4, 0), &encode_attempt(&a)).unwrap();
        // Log-probs hold a NaN (NaN != NaN); their bits are checked above.
        assert_eq!((back.pass, &back.reason), (a.pass, &a.reason));
        assert_eq!(back.generation.prompt_ids, a.generation.prompt_ids);
        assert_eq!(back.generation.text, a.generation.text);
        let r = ReflectionRecord {
            task_index: 4,
            attempt: 0,
            reflection: 7,
            generation: Generation {
                logprobs: vec![-1.0, -2.0, -3.0],
                ..generation(2)
            },
        };
        assert_eq!(
            decode_reflection((4, 0, 7), &encode_reflection(&r)).unwrap(),
            r
        );
    }

    #[test]
    fn corrupt_values_are_errors_not_panics() {
        let a = AttemptRecord {
            task_index: 0,
            attempt: 0,
            generation: generation(3),
            pass: true,
            reason: "r".into(),
        };
        let bytes = encode_attempt(&a);
        for cut in 0..bytes.len() {
            assert!(decode_attempt((0, 0), &bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            decode_attempt((0, 0), &long).unwrap_err(),
            DecodeError::Trailing(1)
        );
        // A huge element count must not allocate, only fail.
        let mut huge = bytes;
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            decode_attempt((0, 0), &huge).unwrap_err(),
            DecodeError::Truncated("prompt_ids")
        );
    }
}
