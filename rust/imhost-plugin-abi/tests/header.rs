//! The committed header `include/imhost_plugin.h` is exactly what cbindgen generates from this
//! crate, and its ABI version macros are the crate's constants.
//!
//! To regenerate after changing the ABI: `scripts/gen-header.sh` (sets IMHOST_BLESS=1).

use std::path::PathBuf;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn header_path() -> PathBuf {
    crate_dir().join("../../include/imhost_plugin.h")
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
            "include/imhost_plugin.h is out of date (first difference near line {line}); regenerate it with scripts/gen-header.sh and commit it"
        );
    }
}

#[test]
fn abi_version_macros_match_the_crate() {
    let header = std::fs::read_to_string(header_path()).unwrap();
    for (name, value) in
        [("IMHP_ABI_MAJOR", imhost_plugin_abi::IMHP_ABI_MAJOR), ("IMHP_ABI_MINOR", imhost_plugin_abi::IMHP_ABI_MINOR)]
    {
        let line = format!("#define {name} {value}");
        assert!(header.lines().any(|l| l.trim() == line), "header lacks '{line}'");
    }
    assert!(header.contains("#define IMHP_ENTRY_SYMBOL \"imhost_plugin_entry\""));
}
