//! LibTorch's library folder on the `imhost` binary's rpath when it links LibTorch (feature
//! `learned`; see `rust/imhost-models/rpath.rs`).
include!("../imhost-models/rpath.rs");

fn main() {
    if std::env::var_os("CARGO_FEATURE_LEARNED").is_some() {
        libtorch_rpath();
    }
}
