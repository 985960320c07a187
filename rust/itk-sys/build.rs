//! Build the C++ shim against ITK. A throw-away CMake project (probe/) finds ITK; its generated
//! `flags.make` (includes, definitions) and `link.txt` (the transitive link line) are read back
//! and handed to cxx-build and to rustc. `ITK_DIR` overrides where CMake looks for ITK.

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed (is libinsighttoolkit5-dev installed? scripts/setup.sh installs it):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("probe-build");
    println!("cargo:rerun-if-changed=probe/CMakeLists.txt");
    println!("cargo:rerun-if-changed=src/shim.cpp");
    println!("cargo:rerun-if-changed=src/shim.h");
    println!("cargo:rerun-if-changed=src/lib.rs");
    println!("cargo:rerun-if-changed=../../cpp/include/imhost_itk.hpp");
    println!("cargo:rerun-if-changed=../../include/imhost.h");
    println!("cargo:rerun-if-env-changed=ITK_DIR");
    let mut configure = Command::new("cmake");
    configure.arg("-S").arg(manifest.join("probe")).arg("-B").arg(&out).arg("-DCMAKE_BUILD_TYPE=Release");
    if let Ok(dir) = std::env::var("ITK_DIR") {
        configure.arg(format!("-DITK_DIR={dir}"));
    }
    run(&mut configure, "configuring the ITK probe");
    let dir = out.join("CMakeFiles/probe.dir");
    let flags = std::fs::read_to_string(dir.join("flags.make")).expect("probe flags.make");
    let link = std::fs::read_to_string(dir.join("link.txt")).expect("probe link.txt");
    let mut build = cxx_build::bridge("src/lib.rs");
    build.file("src/shim.cpp").std("c++17").flag_if_supported("-w").opt_level(2);
    for line in flags.lines() {
        if let Some(includes) = line.strip_prefix("CXX_INCLUDES = ") {
            for token in includes.split_whitespace() {
                if let Some(path) = token.strip_prefix("-isystem").or_else(|| token.strip_prefix("-I")) {
                    if !path.is_empty() {
                        build.include(path);
                    }
                } else if !token.starts_with('-') {
                    // The argument after a bare "-isystem".
                    build.include(token);
                }
            }
        } else if let Some(defines) = line.strip_prefix("CXX_DEFINES = ") {
            for token in defines.split_whitespace() {
                if let Some(d) = token.strip_prefix("-D") {
                    match d.split_once('=') {
                        Some((k, v)) => build.define(k, v),
                        None => build.define(d, None),
                    };
                }
            }
        }
    }
    build.include(manifest.join("src"));
    // The registration itself is the header hosts use (cpp/include/imhost_itk.hpp, which
    // includes imhost.h).
    build.include(manifest.join("../../cpp/include"));
    build.include(manifest.join("../../include"));
    build.compile("itk_shim");
    // Libraries from the link line: full paths and -l flags, in order.
    let mut dirs = std::collections::BTreeSet::new();
    for token in link.split_whitespace() {
        let path = Path::new(token);
        if token.ends_with(".so") || token.contains(".so.") {
            if let (Some(parent), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) {
                let stem = name.trim_start_matches("lib");
                let stem = &stem[..stem.find(".so").unwrap_or(stem.len())];
                if dirs.insert(parent.to_path_buf()) {
                    println!("cargo:rustc-link-search=native={}", parent.display());
                }
                println!("cargo:rustc-link-lib=dylib={stem}");
            }
        } else if let Some(lib) = token.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }
}
