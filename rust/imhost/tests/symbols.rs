//! What `libimhost.so` shows a host that loads it: only `imh_*` symbols, and no LibTorch (nor its
//! C++ runtime, OpenMP or CUDA) among the libraries it needs — so it cannot clash with the
//! PyTorch inside a Slicer or the symbols of another plugin of Orthanc. Checked on the library
//! cargo built for this test run (the same profile), with binutils' `nm` and `readelf`.

use std::path::PathBuf;
use std::process::Command;

/// The `libimhost.so` of this build: tests run from `target/<profile>/deps/`.
fn library() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let lib = profile_dir.join("libimhost.so");
    assert!(lib.is_file(), "{} was not built", lib.display());
    lib
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn only_imh_symbols_are_exported() {
    let lib = library();
    let table = run("nm", &["-D", "--defined-only", lib.to_str().unwrap()]);
    let names: Vec<&str> = table.lines().filter_map(|l| l.split_whitespace().nth(2)).collect();
    assert!(names.len() > 30, "the dynamic symbol table lists the ABI: {names:?}");
    let foreign: Vec<&&str> = names.iter().filter(|n| !n.starts_with("imh_")).collect();
    assert!(foreign.is_empty(), "libimhost.so exports symbols outside imh_*: {foreign:?}");
    // And the header's functions are all there.
    let header =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../include/imhost.h")).unwrap();
    let mut declared = 0;
    for line in header.lines().filter(|l| !l.trim_start().starts_with(['*', '/'])) {
        for piece in line.split("imh_").skip(1) {
            let ident: String = piece.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if piece[ident.len()..].starts_with('(') {
                let name = format!("imh_{ident}");
                assert!(names.contains(&name.as_str()), "{name} is declared in imhost.h but not exported");
                declared += 1;
            }
        }
    }
    assert_eq!(declared, names.len(), "every exported function is declared in imhost.h");
}

#[test]
fn the_library_needs_no_libtorch() {
    let lib = library();
    let dynamic = run("readelf", &["-d", lib.to_str().unwrap()]);
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1).and_then(|r| r.split(']').next()))
        .collect();
    assert!(needed.contains(&"libc.so.6"), "{needed:?}");
    for forbidden in ["torch", "c10", "gomp", "cuda", "stdc++", "itk", "ITK"] {
        assert!(!needed.iter().any(|n| n.contains(forbidden)), "libimhost.so needs {forbidden}: {needed:?}");
    }
    assert!(!dynamic.contains("RPATH") && !dynamic.contains("RUNPATH"), "no rpath to LibTorch:\n{dynamic}");
}

#[test]
fn building_the_library_needs_no_libtorch() {
    // The dependency graph of the C ABI crate, normal and build dependencies: no tch/torch-sys.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let tree = run(
        &cargo,
        &[
            "tree",
            "--offline",
            "-q",
            "--manifest-path",
            manifest.to_str().unwrap(),
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ],
    );
    assert!(tree.contains("imhost-core") && tree.contains("imhost-registry"), "{tree}");
    for forbidden in ["torch-sys v", "tch v", "imhost-models v", "itk-sys v"] {
        assert!(!tree.lines().any(|l| l.starts_with(forbidden)), "imhost depends on {forbidden}:\n{tree}");
    }
}
