//! LibTorch's library folder on the `imhost` binary's rpath (see `rust/imhost-models/rpath.rs`).
include!("../imhost-models/rpath.rs");

fn main() {
    libtorch_rpath();
}
