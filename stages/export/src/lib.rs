//! The export room of flywheel: writes a Llama-family model directory back out as an ONNX
//! decoder (our own graph writer over `onnx.proto`) and checks it against the tch model in ONNX
//! Runtime.

pub mod decoder;
pub mod export;
pub mod graph;
pub mod parity;
pub mod proto;

pub use decoder::Ops;
pub use export::{export, ExportDtype, ExportError, ExportOptions, ExportReport};
