//! Give the shared library a SONAME, so that programs linking it by path record `libimhost.so`
//! (found through their rpath or LD_LIBRARY_PATH) rather than the absolute build path. The
//! library does not link LibTorch (learned models run in `imhost-model-worker`), so it needs no
//! rpath of its own.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libimhost.so");
    }
}
