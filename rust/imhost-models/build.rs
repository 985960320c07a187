//! Put LibTorch's library folder on the rpath of every binary this package links (tests,
//! examples), and hand it to dependants (`DEP_IMHOST_MODELS_RPATH_LIBTORCH_LIB`) so that the C
//! library and the CLI do the same. torch-sys only sets it for its own static library.
include!("rpath.rs");

fn main() {
    let dirs = libtorch_rpath();
    if let Some(first) = dirs.first() {
        println!("cargo:libtorch_lib={first}");
    }
}
