//! Bakes the libtorch rpath into this package's tests (see `flywheel-build`).

fn main() {
    flywheel_build::link_libtorch();
}
