//! ONNX Runtime for flywheel, shared by the sampling engine and the export parity check: the
//! shared library loaded once per process ([`session`]), the decoder's input and output names
//! ([`names`]) and the one place a decoder run's token inputs are assembled ([`token_inputs`]).
//! No libtorch here.

pub mod names;
mod session;

pub use session::{cpu_session, cuda_available, environment, session, Provider, RuntimeError};

use ort::session::SessionInputValue;
use ort::value::Tensor;

/// The token inputs of one decoder run over `b` rows: `input_ids` and (when the graph takes them)
/// `position_ids`, both `[b, s]` row-major, and `attention_mask` `[b, past + s]`. The caller adds
/// the past key/values, whose binding differs (owned copies, views, or shared buffers).
pub fn token_inputs(
    b: usize,
    ids: Vec<i64>,
    positions: Option<Vec<i64>>,
    mask: Vec<i64>,
) -> Result<Vec<(String, SessionInputValue<'static>)>, ort::Error> {
    let b = b.max(1);
    let s = (ids.len() / b) as i64;
    let total = (mask.len() / b) as i64;
    let mut inputs: Vec<(String, SessionInputValue<'static>)> = Vec::with_capacity(3);
    inputs.push((
        names::INPUT_IDS.into(),
        Tensor::from_array((vec![b as i64, s], ids))?.into(),
    ));
    inputs.push((
        names::ATTENTION_MASK.into(),
        Tensor::from_array((vec![b as i64, total], mask))?.into(),
    ));
    if let Some(positions) = positions {
        inputs.push((
            names::POSITION_IDS.into(),
            Tensor::from_array((vec![b as i64, s], positions))?.into(),
        ));
    }
    Ok(inputs)
}
