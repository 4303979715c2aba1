//! This package's tests link libtorch: bake its rpath into them (see `flywheel-build`).

fn main() {
    flywheel_build::link_libtorch();
}
