//! Helpers shared by the core's integration tests: where the test data and the nibabel oracle
//! live (both installed by `scripts/setup.sh`, which the README's test command runs).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// nibabel's NIfTI test files, extracted from its PyPI wheel by `scripts/setup.sh`.
pub fn nibabel_data() -> PathBuf {
    let dir = std::env::var_os("IMHOST_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache/testdata"))
        .join("nibabel");
    assert!(
        dir.join("functional.nii").is_file(),
        "nibabel test data missing in {}: run scripts/setup.sh (the README's test command does)",
        dir.display()
    );
    dir
}

/// The must-fail inputs committed under `tests/data/must-fail`.
pub fn must_fail_dir() -> PathBuf {
    repo_root().join("tests/data/must-fail")
}

/// Run the nibabel oracle on files and return its description of each.
pub fn oracle(paths: &[&Path]) -> Vec<Value> {
    let python = std::env::var("IMHOST_PYTHON").unwrap_or_else(|_| "python3".into());
    let pythonpath =
        std::env::var_os("IMHOST_PYTHONPATH").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".cache/python"));
    let out = Command::new(&python)
        .arg(repo_root().join("tests/oracle/nibabel_oracle.py"))
        .args(paths)
        .env("PYTHONPATH", &pythonpath)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "nibabel oracle failed (PYTHONPATH={}; run scripts/setup.sh): {}",
        pythonpath.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("oracle prints JSON")
}

/// A deterministic pseudo-random sequence (64-bit LCG), for test data.
pub struct Lcg(pub u64);

impl Lcg {
    /// Next value in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}
