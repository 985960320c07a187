//! The committed header `include/imhost.h` is exactly what cbindgen generates from this crate,
//! and its version macros match Cargo.toml.
//!
//! To regenerate after changing the ABI: `scripts/gen-header.sh` (sets IMHOST_BLESS=1).

use std::path::{Path, PathBuf};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn header_path() -> PathBuf {
    crate_dir().join("../../include/imhost.h")
}

fn generate() -> String {
    let dir = crate_dir();
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("UTF-8 header")
}

#[test]
fn committed_header_matches_the_rust_source() {
    let fresh = generate();
    let path = header_path();
    if std::env::var_os("IMHOST_BLESS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != fresh {
        let line = committed.lines().zip(fresh.lines()).position(|(a, b)| a != b).map_or(0, |n| n + 1);
        panic!(
            "{} is out of date (first difference near line {line}); regenerate it with scripts/gen-header.sh and commit it",
            Path::new("include/imhost.h").display()
        );
    }
}

#[test]
fn version_macros_match_cargo_toml() {
    let header = std::fs::read_to_string(header_path()).unwrap();
    for (name, value) in [
        ("IMH_VERSION_MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("IMH_VERSION_MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("IMH_VERSION_PATCH", env!("CARGO_PKG_VERSION_PATCH")),
    ] {
        let line = format!("#define {name} {value}");
        assert!(header.lines().any(|l| l.trim() == line), "header lacks '{line}'");
    }
    assert_eq!(imhost::IMH_VERSION_MAJOR.to_string(), env!("CARGO_PKG_VERSION_MAJOR"));
    assert_eq!(imhost::IMH_VERSION_MINOR.to_string(), env!("CARGO_PKG_VERSION_MINOR"));
    assert_eq!(imhost::IMH_VERSION_PATCH.to_string(), env!("CARGO_PKG_VERSION_PATCH"));
    // SAFETY: imh_version returns a static NUL-terminated string.
    let runtime = unsafe { std::ffi::CStr::from_ptr(imhost::imh_version()) };
    assert_eq!(runtime.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}
