//! The element type of the KV cache, taken from the graph's past inputs: f32, or f16 for a
//! `--dtype f16` export. Cache rows are copied and kept as bytes (the copies do not care what
//! they move); only where a tensor is handed to ONNX Runtime is the type needed again.

use half::f16;
use ort::value::{DynValue, Tensor, TensorElementType};

/// A KV cache element type the engine supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvType {
    /// 32-bit float.
    F32,
    /// 16-bit float (IEEE half).
    F16,
}

impl KvType {
    /// The engine's type for an ONNX element type, if it has one.
    pub fn from_element(t: TensorElementType) -> Option<KvType> {
        match t {
            TensorElementType::Float32 => Some(KvType::F32),
            TensorElementType::Float16 => Some(KvType::F16),
            _ => None,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            KvType::F32 => 4,
            KvType::F16 => 2,
        }
    }

    /// A zero-filled buffer of `n` elements.
    pub(crate) fn zeroed(self, n: usize) -> KvBuf {
        match self {
            KvType::F32 => KvBuf::F32(vec![0.0; n]),
            KvType::F16 => KvBuf::F16(vec![f16::ZERO; n]),
        }
    }

    /// A tensor of `shape` holding `bytes` (`shape`'s element count times [`KvType::size`]).
    pub(crate) fn tensor(self, shape: Vec<i64>, bytes: &[u8]) -> Result<DynValue, ort::Error> {
        let mut buf = self.zeroed(bytes.len() / self.size());
        buf.bytes_mut().copy_from_slice(bytes);
        buf.into_tensor(shape)
    }

    /// The bytes of a cache tensor of this type. Only between runs: ONNX Runtime is not
    /// writing the buffer while the slice lives.
    pub(crate) fn bytes(self, v: &DynValue) -> Result<&[u8], ort::Error> {
        Ok(match self {
            KvType::F32 => as_bytes(v.try_extract_tensor::<f32>()?.1),
            KvType::F16 => as_bytes(v.try_extract_tensor::<f16>()?.1),
        })
    }
}

/// Reinterprets a slice of plain floats as its bytes.
fn as_bytes<T: Copy>(data: &[T]) -> &[u8] {
    // SAFETY: f32 and f16 have no padding and every byte of them is initialized; u8 has
    // alignment 1; the length covers exactly the same memory.
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) }
}

/// A typed cache buffer, filled through its bytes.
pub(crate) enum KvBuf {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl KvBuf {
    /// The buffer's bytes, for copying rows in.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        fn cast<T: Copy>(data: &mut [T]) -> &mut [u8] {
            let len = std::mem::size_of_val(data);
            // SAFETY: as in `as_bytes`; any byte pattern is a valid f32 or f16.
            unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr().cast::<u8>(), len) }
        }
        match self {
            KvBuf::F32(v) => cast(v),
            KvBuf::F16(v) => cast(v),
        }
    }

    /// The buffer as a tensor of `shape`.
    pub(crate) fn into_tensor(self, shape: Vec<i64>) -> Result<DynValue, ort::Error> {
        Ok(match self {
            KvBuf::F32(v) => Tensor::from_array((shape, v))?.into_dyn(),
            KvBuf::F16(v) => Tensor::from_array((shape, v))?.into_dyn(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_for_both_types() {
        let mut b = KvType::F16.zeroed(3);
        b.bytes_mut()[2..4].copy_from_slice(&f16::from_f32(1.5).to_le_bytes());
        match &b {
            KvBuf::F16(v) => assert_eq!(v[1], f16::from_f32(1.5)),
            KvBuf::F32(_) => unreachable!(),
        }
        let mut b = KvType::F32.zeroed(2);
        b.bytes_mut()[4..].copy_from_slice(&2.5f32.to_le_bytes());
        match b {
            KvBuf::F32(v) => assert_eq!(v, vec![0.0, 2.5]),
            KvBuf::F16(_) => unreachable!(),
        }
        assert_eq!(
            KvType::from_element(TensorElementType::Float16),
            Some(KvType::F16)
        );
        assert_eq!(KvType::from_element(TensorElementType::Int64), None);
    }
}
