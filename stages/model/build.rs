//! Build script of the packages that link libtorch but need nothing else at build time.

include!("build_rpath.rs");

fn main() {
    link_libtorch();
}
