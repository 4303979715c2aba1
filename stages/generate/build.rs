//! The engine's tests reach the tch model: bake the libtorch rpath into them.

fn main() {
    flywheel_build::link_libtorch();
}
