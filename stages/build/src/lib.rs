//! Link-time set-up for the build scripts of every package whose binaries or tests link libtorch
//! (cargo applies `rustc-link-arg` only to the package that prints it, so each such package has a
//! two-line build script calling [`link_libtorch`]).

/// Bakes an rpath to the libtorch directory into binaries and tests so they run without
/// `LD_LIBRARY_PATH`, and force-links `libtorch_cuda` (the linker's `--as-needed` would otherwise
/// drop it and CUDA would look absent).
pub fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Ok(libtorch) = std::env::var("LIBTORCH") else {
        return;
    };
    let root = std::path::PathBuf::from(&libtorch);
    // Resolve the `.venv/torch` link so the rpath survives re-creating the link.
    let lib = root.canonicalize().unwrap_or(root).join("lib");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
