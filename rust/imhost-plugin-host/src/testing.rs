//! Helpers for the tests of this and other crates (not part of the plugin API): build the C
//! test and example plugins with the system C compiler, find the Rust plugins cargo built.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// Compile a C (`.c`) or C++ (`.cpp`) plugin source into `dir/lib<name>.so`, with the given
/// `-D` defines and the repository's `include/` and `cpp/include/`.
pub fn build_plugin(source: &Path, dir: &Path, name: &str, defines: &[&str]) -> PathBuf {
    let root = repo_root();
    let out = dir.join(format!("lib{name}.so"));
    let cpp = source.extension().is_some_and(|e| e == "cpp");
    let mut cmd = Command::new(if cpp { "c++" } else { "cc" });
    cmd.args(if cpp { ["-std=c++17"] } else { ["-std=c99"] })
        .args(["-O2", "-shared", "-fPIC", "-fvisibility=hidden", "-Wall", "-Werror"])
        .arg(format!("-I{}", root.join("include").display()))
        .arg(format!("-I{}", root.join("cpp/include").display()))
        .args(defines.iter().map(|d| format!("-D{d}")))
        .arg(source)
        .arg("-o")
        .arg(&out);
    let status = cmd.status().expect("a C compiler (cc / c++) on PATH");
    assert!(status.success(), "compiling {} failed", source.display());
    out
}

/// The shared library of a workspace plugin crate (`crate_name` with `-`), built by cargo in
/// the profile the test runs in (built now when missing).
pub fn cargo_plugin(crate_name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
    let file = profile_dir.join(format!("lib{}.so", crate_name.replace('-', "_")));
    if !file.is_file() {
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(repo_root()).args(["build", "-q", "-p", crate_name]);
        if release {
            cmd.arg("--release");
        }
        assert!(cmd.status().expect("cargo").success(), "cargo build -p {crate_name} failed");
    }
    assert!(file.is_file(), "{} missing", file.display());
    file
}

/// Every test plugin variant of `tests/plugins/test_plugin.c`: (file stem, define).
pub const TEST_VARIANTS: &[(&str, &str)] = &[
    ("test_good", ""),
    ("test_crash", "TEST_CRASH"),
    ("test_hang", "TEST_HANG"),
    ("test_bad_major", "TEST_BAD_MAJOR"),
    ("test_old_minor", "TEST_OLD_MINOR"),
    ("test_new_minor", "TEST_NEW_MINOR"),
    ("test_no_entry", "TEST_NO_ENTRY"),
    ("test_null_entry", "TEST_NULL_ENTRY"),
    ("test_bad_manifest", "TEST_BAD_MANIFEST"),
    ("test_duplicate", "TEST_DUPLICATE"),
    ("test_host12", "TEST_HOST_1_2"),
];

/// Build the C example plugin and the test variants named in `stems` into `dir`.
pub fn build_test_plugins(dir: &Path, stems: &[&str]) -> Vec<PathBuf> {
    let root = repo_root();
    let mut out = Vec::new();
    for (stem, define) in TEST_VARIANTS.iter().filter(|(s, _)| stems.contains(s)) {
        let defines: Vec<&str> = if define.is_empty() { vec![] } else { vec![define] };
        out.push(build_plugin(&root.join("tests/plugins/test_plugin.c"), dir, stem, &defines));
    }
    out
}
