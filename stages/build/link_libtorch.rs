//! Build script of the `flywheel` binary package: its binary and tests link libtorch, so bake the
//! libtorch rpath into them (see `flywheel-build`). Kept here so the top level holds only the
//! layout the project fixed.

fn main() {
    flywheel_build::link_libtorch();
}
