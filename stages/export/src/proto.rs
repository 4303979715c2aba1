//! ONNX protobuf types, generated at build time from the vendored `proto/onnx.proto`.
#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
