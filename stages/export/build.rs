//! Compiles the vendored `proto/onnx.proto` (ONNX, Apache-2.0) with protox — pure Rust, so no
//! system `protoc` — into prost types, and sets up libtorch linking like every tch package.

fn main() {
    flywheel_build::link_libtorch();
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = match protox::compile(["proto/onnx.proto"], ["proto"]) {
        Ok(fds) => fds,
        Err(e) => panic!("cannot parse proto/onnx.proto: {e}"),
    };
    if let Err(e) = prost_build::Config::new().compile_fds(fds) {
        panic!("cannot generate ONNX protobuf code: {e}");
    }
}
