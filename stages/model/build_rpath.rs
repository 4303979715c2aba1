// Link-time set-up shared (via `include!`) by the build scripts of every package that links
// libtorch: bake an rpath to the libtorch directory into binaries and tests so they run without
// LD_LIBRARY_PATH, and force-link libtorch_cuda (the linker's --as-needed would otherwise drop
// it and CUDA would look absent).

fn link_libtorch() {
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
