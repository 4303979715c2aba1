//! Links libtorch like every package whose tests reach the tch model.

include!("../model/build_rpath.rs");

fn main() {
    link_libtorch();
}
