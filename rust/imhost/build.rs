//! Put LibTorch on the library's rpath, and give the shared library a SONAME, so that programs linking it by path record `libimhost.so`
//! (found through their rpath or LD_LIBRARY_PATH) rather than the absolute build path.

include!("../imhost-models/rpath.rs");

fn main() {
    // LibTorch's folder on the library's rpath (see rust/imhost-models/rpath.rs).
    libtorch_rpath();
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libimhost.so");
    }
}
