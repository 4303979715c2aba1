//! GGUF reader: header, metadata, tensor directory, and dequantization of the common tensor types.
//!
//! The whole file is read through a bounds-checked cursor, so a truncated or lying file yields a
//! [`GgufError`] naming the problem rather than a panic or an out-of-bounds read.

use half::{bf16, f16};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Guards against headers that claim absurd counts (and would make us allocate gigabytes).
const MAX_COUNT: u64 = 1 << 24;
const MAX_STRING: u64 = 1 << 26;

/// Errors from reading a GGUF file; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a GGUF file (magic {magic:?})")]
    BadMagic { path: PathBuf, magic: [u8; 4] },
    #[error("{path}: unsupported GGUF version {version} (supported: 2, 3)")]
    Version { path: PathBuf, version: u32 },
    #[error("{path}: truncated: needed {needed} bytes at offset {offset}, file has {len}")]
    Truncated {
        path: PathBuf,
        offset: u64,
        needed: u64,
        len: u64,
    },
    #[error("{path}: malformed header: {what}")]
    Malformed { path: PathBuf, what: String },
    #[error("{path}: tensor `{tensor}` has type {ty}, which this importer cannot dequantize (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)")]
    UnsupportedType {
        path: PathBuf,
        tensor: String,
        ty: String,
    },
    #[error("{path}: tensor `{tensor}` data [{start}, {end}) lies outside the file ({len} bytes)")]
    TensorOutOfBounds {
        path: PathBuf,
        tensor: String,
        start: u64,
        end: u64,
        len: u64,
    },
    #[error("{path}: metadata key `{key}` is missing or has the wrong type")]
    MissingKey { path: PathBuf, key: String },
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// Integer value of any integer type, for fields whose width differs between writers.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// ggml tensor types this reader knows by name (the numeric ids are ggml's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
    BF16,
    /// Known to ggml but not dequantized here; the id is kept for the error message.
    Other(u32),
}

impl GgmlType {
    fn from_id(id: u32) -> Self {
        match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            30 => Self::BF16,
            other => Self::Other(other),
        }
    }

    pub fn name(self) -> String {
        let known = [
            (6, "Q5_0"),
            (7, "Q5_1"),
            (9, "Q8_1"),
            (10, "Q2_K"),
            (11, "Q3_K"),
            (12, "Q4_K"),
            (13, "Q5_K"),
            (14, "Q6_K"),
            (15, "Q8_K"),
            (16, "IQ2_XXS"),
            (17, "IQ2_XS"),
            (18, "IQ3_XXS"),
            (19, "IQ1_S"),
            (20, "IQ4_NL"),
            (21, "IQ3_S"),
            (22, "IQ2_S"),
            (23, "IQ4_XS"),
            (24, "I8"),
            (25, "I16"),
            (26, "I32"),
            (27, "I64"),
            (28, "F64"),
            (29, "IQ1_M"),
        ];
        match self {
            Self::F32 => "F32".into(),
            Self::F16 => "F16".into(),
            Self::Q4_0 => "Q4_0".into(),
            Self::Q4_1 => "Q4_1".into(),
            Self::Q8_0 => "Q8_0".into(),
            Self::BF16 => "BF16".into(),
            Self::Other(id) => match known.iter().find(|(k, _)| *k == id) {
                Some((_, n)) => (*n).into(),
                None => format!("unknown type id {id}"),
            },
        }
    }

    /// (elements per block, bytes per block), for the types we can size.
    fn block(self) -> Option<(u64, u64)> {
        match self {
            Self::F32 => Some((1, 4)),
            Self::F16 | Self::BF16 => Some((1, 2)),
            Self::Q4_0 => Some((32, 18)),
            Self::Q4_1 => Some((32, 20)),
            Self::Q8_0 => Some((32, 34)),
            Self::Other(_) => None,
        }
    }
}

/// One entry of the tensor directory. `dims` is in ggml order (innermost first).
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute byte offset in the file.
    pub offset: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
    /// Shape in row-major (PyTorch / safetensors) order.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A parsed GGUF file held in memory.
pub struct Gguf {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    data: Vec<u8>,
}

struct Cursor<'a> {
    path: &'a Path,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], GgufError> {
        let end = (self.pos as u64)
            .checked_add(n)
            .filter(|&e| e <= self.buf.len() as u64);
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end as usize];
                self.pos = end as usize;
                Ok(s)
            }
            None => Err(GgufError::Truncated {
                path: self.path.to_owned(),
                offset: self.pos as u64,
                needed: n,
                len: self.buf.len() as u64,
            }),
        }
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64)?);
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn malformed(&self, what: impl Into<String>) -> GgufError {
        GgufError::Malformed {
            path: self.path.to_owned(),
            what: what.into(),
        }
    }
    fn count(&mut self, what: &str) -> Result<u64, GgufError> {
        let n = self.u64()?;
        if n > MAX_COUNT {
            return Err(self.malformed(format!("{what} count {n} is implausible")));
        }
        Ok(n)
    }
    fn string(&mut self) -> Result<String, GgufError> {
        let n = self.u64()?;
        if n > MAX_STRING {
            return Err(self.malformed(format!(
                "string length {n} at offset {} is implausible",
                self.pos
            )));
        }
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| self.malformed(format!("string at offset {} is not UTF-8", self.pos)))
    }
    fn value(&mut self, ty: u32, depth: u32) -> Result<Value, GgufError> {
        Ok(match ty {
            0 => Value::U8(self.arr::<1>()?[0]),
            1 => Value::I8(self.arr::<1>()?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.arr()?)),
            3 => Value::I16(i16::from_le_bytes(self.arr()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.arr()?)),
            6 => Value::F32(f32::from_le_bytes(self.arr()?)),
            7 => Value::Bool(self.arr::<1>()?[0] != 0),
            8 => Value::String(self.string()?),
            9 => {
                if depth > 4 {
                    return Err(self.malformed("arrays nested too deeply"));
                }
                let elem = self.u32()?;
                let n = self.count("array element")?;
                let mut v = Vec::with_capacity(n.min(1 << 16) as usize);
                for _ in 0..n {
                    v.push(self.value(elem, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.arr()?)),
            12 => Value::F64(f64::from_le_bytes(self.arr()?)),
            other => return Err(self.malformed(format!("unknown metadata value type {other}"))),
        })
    }
}

impl Gguf {
    /// Reads and parses a GGUF file. Tensor data stays in memory, undecoded.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let data = std::fs::read(path).map_err(|source| GgufError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, data)
    }

    pub fn parse(path: &Path, data: Vec<u8>) -> Result<Self, GgufError> {
        let mut c = Cursor {
            path,
            buf: &data,
            pos: 0,
        };
        let magic: [u8; 4] = c.arr()?;
        if &magic != MAGIC {
            return Err(GgufError::BadMagic {
                path: path.to_owned(),
                magic,
            });
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::Version {
                path: path.to_owned(),
                version,
            });
        }
        let n_tensors = c.count("tensor")?;
        let n_kv = c.count("metadata")?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string()?;
            let ty = c.u32()?;
            let v = c.value(ty, 0)?;
            metadata.insert(key, v);
        }
        // Capacity from the header only up to a bound: a 24-byte file may claim 2^24 tensors.
        let mut infos = Vec::with_capacity((n_tensors as usize).min(4096));
        for _ in 0..n_tensors {
            let name = c.string()?;
            let n_dims = c.u32()?;
            if n_dims == 0 || n_dims > 4 {
                return Err(c.malformed(format!("tensor `{name}` has {n_dims} dimensions")));
            }
            let dims = (0..n_dims)
                .map(|_| c.u64())
                .collect::<Result<Vec<_>, _>>()?;
            if dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                // Empty tensors too: no weight of a model is empty, and shape checks downstream
                // assume every dimension is at least 1.
                .is_none_or(|n| n == 0 || n > 1 << 40)
            {
                return Err(c.malformed(format!(
                    "tensor `{name}` has implausible dimensions {dims:?}"
                )));
            }
            let ty = GgmlType::from_id(c.u32()?);
            let offset = c.u64()?;
            infos.push((name, dims, ty, offset));
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => v
                .as_u64()
                .filter(|a| a.is_power_of_two())
                .ok_or_else(|| c.malformed("general.alignment is not a power of two"))?,
        };
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let len = data.len() as u64;
        let mut tensors = Vec::with_capacity(infos.len());
        for (name, dims, ty, rel) in infos {
            let offset = data_start
                .checked_add(rel)
                .ok_or_else(|| c.malformed(format!("tensor `{name}` offset overflows")))?;
            let info = TensorInfo {
                name,
                dims,
                ty,
                offset,
            };
            // Types we cannot size are reported when someone asks for their data, so that a file
            // with one exotic tensor still shows its metadata.
            if let Some(nbytes) = info.byte_len() {
                let end = offset.saturating_add(nbytes);
                if end > len {
                    return Err(GgufError::TensorOutOfBounds {
                        path: path.to_owned(),
                        tensor: info.name,
                        start: offset,
                        end,
                        len,
                    });
                }
            }
            tensors.push(info);
        }
        Ok(Self {
            path: path.to_owned(),
            version,
            metadata,
            tensors,
            data,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    fn missing(&self, key: &str) -> GgufError {
        GgufError::MissingKey {
            path: self.path.clone(),
            key: key.to_owned(),
        }
    }
    pub fn u64(&self, key: &str) -> Result<u64, GgufError> {
        self.get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| self.missing(key))
    }
    pub fn f64(&self, key: &str) -> Result<f64, GgufError> {
        self.get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| self.missing(key))
    }
    pub fn str(&self, key: &str) -> Result<&str, GgufError> {
        self.get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| self.missing(key))
    }
    pub fn strings(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        let arr = self
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| self.missing(key))?;
        arr.iter()
            .map(|v| v.as_str().ok_or_else(|| self.missing(key)))
            .collect()
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Dequantizes one tensor to f32 (row-major, shape [`TensorInfo::shape`]).
    pub fn dequantize(&self, info: &TensorInfo) -> Result<Vec<f32>, GgufError> {
        let unsupported = || GgufError::UnsupportedType {
            path: self.path.clone(),
            tensor: info.name.clone(),
            ty: info.ty.name(),
        };
        let nbytes = info.byte_len().ok_or_else(unsupported)?;
        let start = info.offset as usize;
        let raw = &self.data[start..start + nbytes as usize];
        let n = info.n_elements() as usize;
        let mut out = Vec::with_capacity(n);
        match info.ty {
            GgmlType::F32 => out.extend(
                raw.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
            GgmlType::F16 => out.extend(
                raw.chunks_exact(2)
                    .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()),
            ),
            GgmlType::BF16 => out.extend(
                raw.chunks_exact(2)
                    .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            ),
            GgmlType::Q8_0 => {
                for blk in raw.chunks_exact(34) {
                    let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
                    out.extend(blk[2..].iter().map(|&q| f32::from(q as i8) * d));
                }
            }
            GgmlType::Q4_0 => {
                for blk in raw.chunks_exact(18) {
                    let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
                    let qs = &blk[2..];
                    // ggml layout: the low nibbles hold elements 0..16, the high nibbles 16..32.
                    out.extend(qs.iter().map(|&q| (f32::from(q & 0x0f) - 8.0) * d));
                    out.extend(qs.iter().map(|&q| (f32::from(q >> 4) - 8.0) * d));
                }
            }
            GgmlType::Q4_1 => {
                for blk in raw.chunks_exact(20) {
                    let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
                    let m = f16::from_le_bytes([blk[2], blk[3]]).to_f32();
                    let qs = &blk[4..];
                    out.extend(qs.iter().map(|&q| f32::from(q & 0x0f) * d + m));
                    out.extend(qs.iter().map(|&q| f32::from(q >> 4) * d + m));
                }
            }
            GgmlType::Other(_) => return Err(unsupported()),
        }
        Ok(out)
    }
}

impl TensorInfo {
    /// Bytes of data, or `None` for types we cannot size (or a quantized row not whole blocks).
    pub fn byte_len(&self) -> Option<u64> {
        let (per_block, bytes) = self.ty.block()?;
        let n = self.n_elements();
        self.dims[0]
            .is_multiple_of(per_block)
            .then(|| n / per_block * bytes)
    }
}

/// Minimal GGUF writer, used by tests and fixtures to build small or deliberately broken files.
pub mod write {
    use super::Value;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    fn value(out: &mut Vec<u8>, v: &Value) {
        match v {
            Value::U8(x) => out.push(*x),
            Value::I8(x) => out.push(*x as u8),
            Value::U16(x) => out.extend(x.to_le_bytes()),
            Value::I16(x) => out.extend(x.to_le_bytes()),
            Value::U32(x) => out.extend(x.to_le_bytes()),
            Value::I32(x) => out.extend(x.to_le_bytes()),
            Value::F32(x) => out.extend(x.to_le_bytes()),
            Value::Bool(x) => out.push(u8::from(*x)),
            Value::String(s) => string(out, s),
            Value::Array(a) => {
                out.extend(a.first().map_or(4, type_id).to_le_bytes());
                out.extend((a.len() as u64).to_le_bytes());
                a.iter().for_each(|x| value(out, x));
            }
            Value::U64(x) => out.extend(x.to_le_bytes()),
            Value::I64(x) => out.extend(x.to_le_bytes()),
            Value::F64(x) => out.extend(x.to_le_bytes()),
        }
    }

    fn type_id(v: &Value) -> u32 {
        match v {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    /// A tensor to write: name, ggml dims (innermost first), ggml type id, raw bytes.
    pub struct RawTensor {
        pub name: String,
        pub dims: Vec<u64>,
        pub ty: u32,
        pub data: Vec<u8>,
    }

    /// Serializes a GGUF v3 file with 32-byte alignment.
    pub fn gguf(metadata: &[(&str, Value)], tensors: &[RawTensor]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(b"GGUF");
        out.extend(3u32.to_le_bytes());
        out.extend((tensors.len() as u64).to_le_bytes());
        out.extend((metadata.len() as u64).to_le_bytes());
        for (k, v) in metadata {
            string(&mut out, k);
            out.extend(type_id(v).to_le_bytes());
            value(&mut out, v);
        }
        let mut offset = 0u64;
        for t in tensors {
            string(&mut out, &t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            t.dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
            out.extend(t.ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset += (t.data.len() as u64).div_ceil(32) * 32;
        }
        out.resize(out.len().div_ceil(32) * 32, 0);
        for t in tensors {
            out.extend(&t.data);
            out.resize(out.len().div_ceil(32) * 32, 0);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::write::{gguf, RawTensor};
    use super::*;

    fn parse(tensors: Vec<RawTensor>) -> Gguf {
        let bytes = gguf(
            &[("general.architecture", Value::String("llama".into()))],
            &tensors,
        );
        Gguf::parse(Path::new("test.gguf"), bytes).expect("parse")
    }

    fn f16b(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn dequantizes_every_supported_type_by_hand() {
        // Q4_0: d = 0.5; low nibble of byte j is element j, high nibble is element 16 + j.
        let mut q40 = f16b(0.5).to_vec();
        q40.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        // Q4_1: d = 0.25, m = -1; every byte 0x21 → low nibble 1, high nibble 2.
        let mut q41 = f16b(0.25).to_vec();
        q41.extend(f16b(-1.0));
        q41.extend([0x21u8; 16]);
        // Q8_0: d = 0.125, signed bytes.
        let mut q80 = f16b(0.125).to_vec();
        q80.extend([0x80u8, 0xff, 0, 1, 127]);
        q80.extend([0u8; 27]);
        let mut f16s = f16b(1.5).to_vec();
        f16s.extend(f16b(-2.0));
        let bf16s = bf16::from_f32(3.0).to_le_bytes().to_vec();
        let f32s: Vec<u8> = [0.25f32, -7.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let t = |name: &str, dims: Vec<u64>, ty: u32, data: Vec<u8>| RawTensor {
            name: name.into(),
            dims,
            ty,
            data,
        };
        let g = parse(vec![
            t("q40", vec![32], 2, q40),
            t("q41", vec![32], 3, q41),
            t("q80", vec![32], 8, q80),
            t("f16", vec![2], 1, f16s),
            t("bf16", vec![1], 30, bf16s),
            t("f32", vec![2], 0, f32s),
        ]);
        let get = |n: &str| {
            g.dequantize(g.tensor(n).expect("tensor"))
                .expect("dequantize")
        };
        let q40 = get("q40");
        assert_eq!(
            (q40[0], q40[1], q40[15], q40[16], q40[31]),
            (-4.0, -3.5, 3.5, 3.5, -4.0)
        );
        let q41 = get("q41");
        assert_eq!(
            (q41[0], q41[15], q41[16], q41[31]),
            (-0.75, -0.75, -0.5, -0.5)
        );
        let q80 = get("q80");
        assert_eq!(&q80[..5], &[-16.0, -0.125, 0.0, 0.125, 15.875]);
        assert_eq!(get("f16"), vec![1.5, -2.0]);
        assert_eq!(get("bf16"), vec![3.0]);
        assert_eq!(get("f32"), vec![0.25, -7.0]);
    }

    #[test]
    fn shapes_are_reversed_ggml_dims() {
        let g = parse(vec![RawTensor {
            name: "w".into(),
            dims: vec![3, 2],
            ty: 0,
            data: vec![0; 24],
        }]);
        assert_eq!(g.tensor("w").expect("w").shape(), vec![2, 3]);
    }

    #[test]
    fn lying_headers_are_errors_not_panics() {
        let mut bytes = gguf(
            &[],
            &[RawTensor {
                name: "w".into(),
                dims: vec![4],
                ty: 0,
                data: vec![0; 16],
            }],
        );
        // Tensor count claims 2^40 tensors.
        bytes[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(
            Gguf::parse(Path::new("x.gguf"), bytes),
            Err(GgufError::Malformed { .. })
        ));
        // A quantized row that is not whole blocks cannot be sized, so its data is refused.
        let g = parse(vec![RawTensor {
            name: "odd".into(),
            dims: vec![5],
            ty: 2,
            data: vec![0; 18],
        }]);
        assert!(matches!(
            g.dequantize(g.tensor("odd").expect("odd")),
            Err(GgufError::UnsupportedType { .. })
        ));
    }
}
