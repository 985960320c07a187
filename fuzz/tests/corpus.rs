//! Every committed fuzz input (fuzz/corpus/<target>/, the findings in fuzz/findings/<target>/,
//! and for NIfTI tests/data/must-fail/) goes through its harness again: an input that once
//! crashed, hung or over-allocated stays fixed.
//! `IMHOST_FUZZ_REPLAY=DIR` replays one more folder (a finding) through the target named by
//! `IMHOST_FUZZ_TARGET`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Replay `dir` through `harness`; each input within `budget` (a hang shows as a failure).
fn replay(dir: &Path, harness: fn(&[u8]), budget: Duration) -> usize {
    let files = inputs(dir);
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        let started = Instant::now();
        harness(&bytes);
        let took = started.elapsed();
        assert!(took < budget, "{} took {took:?} (over {budget:?})", file.display());
    }
    files.len()
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

// Generous per-input budgets for debug builds on a loaded 2-core machine; libFuzzer's own limit
// is 10 s per input in release.
const BUDGET: Duration = Duration::from_secs(20);

#[test]
fn nifti_corpus_and_must_fail_inputs() {
    assert!(replay(&root().join("corpus/nifti"), imhost_fuzz::nifti, BUDGET) > 0);
    assert!(replay(&root().join("../tests/data/must-fail"), imhost_fuzz::nifti, BUDGET) > 0);
}

#[test]
fn dicom_corpus_and_findings() {
    assert!(replay(&root().join("corpus/dicom"), imhost_fuzz::dicom, BUDGET) > 0);
    // Found by the fuzzer: 2.4 KB of DICOM whose corrupted elements claimed up to 1.7 GB made
    // dicom-rs zero-fill that much before failing (1.7 GB resident, 2 s). Refused now before
    // parsing, at the size of the file.
    assert!(replay(&root().join("findings/dicom"), imhost_fuzz::dicom, Duration::from_secs(2)) > 0);
}

#[test]
fn manifest_corpus() {
    assert!(replay(&root().join("corpus/manifest"), imhost_fuzz::manifest, BUDGET) > 0);
}

#[test]
fn plugin_descriptor_corpus() {
    assert!(replay(&root().join("corpus/plugin_descriptor"), imhost_fuzz::plugin_descriptor, BUDGET) > 0);
}

#[test]
fn one_more_folder() {
    let (Some(dir), Some(target)) = (std::env::var_os("IMHOST_FUZZ_REPLAY"), std::env::var("IMHOST_FUZZ_TARGET").ok())
    else {
        return;
    };
    let harness: fn(&[u8]) = match target.as_str() {
        "nifti" => imhost_fuzz::nifti,
        "dicom" => imhost_fuzz::dicom,
        "manifest" => imhost_fuzz::manifest,
        "plugin_descriptor" => imhost_fuzz::plugin_descriptor,
        other => panic!("unknown target {other}"),
    };
    for file in inputs(Path::new(&dir)) {
        let started = Instant::now();
        harness(&std::fs::read(&file).unwrap());
        println!("{}: {:?}", file.display(), started.elapsed());
    }
}
