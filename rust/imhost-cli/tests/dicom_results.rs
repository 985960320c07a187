//! `--dicom-out`: every result of a run as DICOM, read back by independent readers — highdicom
//! (values, masks, segment references of the measurements), pydicom (geometry against the
//! source series) and dciodvfy (the IODs: no error, only allow-listed warnings) — and
//! deterministic for fixed UIDs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn imhost(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imhost")).args(args).output().expect("run imhost")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A small CT perfusion phantom exported as a DICOM series (4 slices × 61 frames).
fn phantom(dir: &Path) -> PathBuf {
    let out = dir.join("phantom");
    ok(&imhost(&["phantom", "ctp", "--out", s(&out), "--dicom", "--size", "64,56,4", "-q"]), "phantom");
    out.join("dicom")
}

fn dicom_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    files.sort();
    files
}

/// dciodvfy on every file: no error, and each warning in tests/oracle/dciodvfy-allowed.txt.
fn validate(dir: &Path) -> usize {
    let allowed_text = std::fs::read_to_string(repo().join("tests/oracle/dciodvfy-allowed.txt")).unwrap();
    let allowed: Vec<&str> = allowed_text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(" | ").next().unwrap().trim())
        .collect();
    let mut warnings = 0;
    for file in dicom_files(dir) {
        let out = Command::new("dciodvfy")
            .arg(&file)
            .output()
            .expect("dciodvfy (scripts/setup.sh test installs dicom3tools)");
        let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
        for line in text.lines().filter(|l| l.starts_with("Error") || l.starts_with("Warning")) {
            assert!(!line.starts_with("Error"), "{}: {line}", file.display());
            assert!(allowed.iter().any(|a| line.contains(a)), "{}: warning not allow-listed: {line}", file.display());
            warnings += 1;
        }
    }
    warnings
}

fn oracle(dicom_out: &Path, source: &Path, run: &Path) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(repo().join("tests/oracle/dicom_results_oracle.py"))
        .args([dicom_out, source, run])
        .env("PYTHONPATH", repo().join(".cache/python"))
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "highdicom oracle:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn perfusion_results_read_back_by_highdicom_and_valid_for_dciodvfy() {
    let dir = tempfile::tempdir().unwrap();
    let source = phantom(dir.path());
    let (run, dicom) = (dir.path().join("run"), dir.path().join("dicom-out"));
    let out = imhost(&[
        "run",
        "perfusion-osvd",
        "--input",
        s(&source),
        "--out",
        s(&run),
        "--dicom-out",
        s(&dicom),
        "--dicom-uid-seed",
        "t",
    ]);
    ok(&out, "run --dicom-out");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("10 DICOM instances"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // 6 maps, 3 label maps, the report.
    assert_eq!(dicom_files(&dicom).len(), 10, "{:?}", dicom_files(&dicom));
    let checked = oracle(&dicom, &source, &run);
    assert_eq!(checked["parametric_maps"], 6, "{checked}");
    assert_eq!(checked["segmentations"], 3, "{checked}");
    assert_eq!(checked["segments"], 4, "{checked}");
    // core, hypoperfusion (on their segments), mismatch and its ratio.
    assert_eq!(checked["measurements"], 4, "{checked}");
    // 4 slices in each map and in each segment.
    assert_eq!(checked["frames"], (6 + 4) * 4, "{checked}");
    validate(&dicom);
}

#[test]
fn perfusion_command_writes_the_preview_too_and_the_same_bytes_for_the_same_uids() {
    let dir = tempfile::tempdir().unwrap();
    let source = phantom(dir.path());
    let write = |name: &str| {
        let (out_dir, dicom) = (dir.path().join(format!("{name}-maps")), dir.path().join(name));
        let out = imhost(&[
            "perfusion",
            s(&source),
            "--out",
            s(&out_dir),
            "--dicom-out",
            s(&dicom),
            "--dicom-uid-seed",
            "same",
            "-q",
        ]);
        ok(&out, "perfusion --dicom-out");
        (out_dir, dicom)
    };
    let (maps, a) = write("a");
    let (_, b) = write("b");
    let files = dicom_files(&a);
    assert_eq!(files.len(), 11, "maps, label maps, report and preview: {files:?}");
    for f in &files {
        let other = b.join(f.file_name().unwrap());
        assert!(
            std::fs::read(f).unwrap() == std::fs::read(&other).unwrap(),
            "{} differs between two runs",
            f.display()
        );
    }
    validate(&a);
    // The Secondary Capture holds the preview's pixels (pydicom and Pillow as the readers).
    let check = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, numpy as np, pydicom; from PIL import Image\n\
             d = pydicom.dcmread(sys.argv[1]); p = np.asarray(Image.open(sys.argv[2]).convert('RGB'))\n\
             assert d.SOPClassUID == '1.2.840.10008.5.1.4.1.1.7', d.SOPClassUID\n\
             assert d.pixel_array.shape == p.shape and (d.pixel_array == p).all(), 'pixels differ'\n\
             assert 'RESEARCH USE ONLY' in d.SeriesDescription",
        )
        .args([a.join("sc_preview.dcm"), maps.join("preview.png")])
        .env("PYTHONPATH", repo().join(".cache/python"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    // A different seed gives different UIDs.
    let other = dir.path().join("c");
    ok(
        &imhost(&[
            "perfusion",
            s(&source),
            "--out",
            s(&dir.path().join("c-maps")),
            "--dicom-out",
            s(&other),
            "--dicom-uid-seed",
            "other",
            "-q",
        ]),
        "perfusion, other seed",
    );
    assert!(std::fs::read(a.join("sr_report.dcm")).unwrap() != std::fs::read(other.join("sr_report.dcm")).unwrap());
}

#[test]
fn a_nifti_input_starts_a_new_study_and_bad_uid_roots_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let source = phantom(dir.path());
    let nifti = source.parent().unwrap().join("ctp.nii.gz");
    let dicom = dir.path().join("from-nifti");
    let out =
        imhost(&["run", "mip", "--input", s(&nifti), "--out", s(&dir.path().join("mip")), "--dicom-out", s(&dicom)]);
    ok(&out, "mip from NIfTI");
    assert!(String::from_utf8_lossy(&out.stderr).contains("new study"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(dicom_files(&dicom).len(), 2, "the MIP as a Parametric Map and the report");
    validate(&dicom);
    for root in ["abc", "1.02.3", "1..2", "1.2.3.4.5.6.7.8.9.10.11.12.13"] {
        let out = imhost(&[
            "run",
            "mip",
            "--input",
            s(&nifti),
            "--out",
            s(&dir.path().join("x")),
            "--dicom-out",
            s(&dir.path().join("y")),
            "--uid-root",
            root,
        ]);
        assert_eq!(out.status.code(), Some(1), "--uid-root {root}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("--uid-root"), "{err}");
        assert!(!dir.path().join("x").exists() && !dir.path().join("y").exists(), "refused before any work");
    }
}
