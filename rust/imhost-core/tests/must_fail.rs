//! Bad input gets a clear error and never a panic: every file in `tests/data/must-fail` must fail
//! with the kind and message listed in its `expected.json`, and mangled copies of a good file must
//! never panic.

mod common;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use common::must_fail_dir;
use imhost_core::io::nifti::{self, ReadOptions, WriteOptions};
use imhost_core::{AnyVolume, FrameTimes, Geometry, TimeSource, Volume};
use serde::Deserialize;

#[derive(Deserialize)]
struct Expected {
    kind: String,
    contains: String,
}

#[test]
fn every_must_fail_file_fails_with_its_expected_error() {
    let dir = must_fail_dir();
    let expected: BTreeMap<String, Expected> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    // Every image in the folder is listed (a new file cannot be forgotten).
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".nii") || n.ends_with(".nii.gz"))
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, expected.keys().cloned().collect::<Vec<_>>());

    for (name, want) in &expected {
        let path = dir.join(name);
        let result = catch_unwind(|| nifti::read_nifti(&path, &ReadOptions::default()));
        let err = match result {
            Err(_) => panic!("{name}: the reader panicked"),
            Ok(Ok(_)) => panic!("{name}: read succeeded but must fail"),
            Ok(Err(err)) => err,
        };
        let message = err.to_string();
        assert_eq!(err.kind().as_str(), want.kind, "{name}: {message}");
        assert!(message.contains(&want.contains), "{name}: '{message}' lacks '{}'", want.contains);
        assert!(message.contains(name), "{name}: the message names the file: {message}");
        assert!(!message.contains('\n'), "{name}: one line: {message}");
    }
}

#[test]
fn a_claimed_size_beyond_the_limit_is_refused_before_reading() {
    // The 746 MB claim of a CTP header over 100 bytes, with a 100 MB limit: refused on size.
    let mut options = ReadOptions::default();
    options.max_bytes = 100 << 20;
    let err = nifti::read_nifti(&must_fail_dir().join("claims-more-than-file.nii.gz"), &options).unwrap_err();
    assert_eq!(err.kind(), imhost_core::ErrorKind::TooLarge, "{err}");
}

#[test]
fn mangled_headers_and_truncations_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let times = FrameTimes::uniform(3, 0.0, 2.0, TimeSource::Caller).unwrap();
    let volume: AnyVolume = Volume::<i16>::filled([6, 5, 4, 3], 100, Geometry::identity(), Some(times)).unwrap().into();
    for name in ["good.nii", "good2.nii"] {
        let path = dir.path().join(name);
        let mut options = WriteOptions::default();
        if name == "good2.nii" {
            options.version = Some(nifti::NiftiVersion::Nifti2);
        }
        nifti::write_any(&volume, &path, &options).unwrap();
        let good = std::fs::read(&path).unwrap();
        let header_len = if name == "good.nii" { 352 } else { 544 };
        let mangled = dir.path().join("mangled.nii");
        let mut outcomes = [0usize; 2];
        // Every header byte set to four telling values, and truncation at many lengths.
        let mut variants: Vec<Vec<u8>> = Vec::new();
        for at in 0..header_len {
            for value in [0x00u8, 0xff, 0x7f, 0x80] {
                let mut bytes = good.clone();
                bytes[at] = value;
                variants.push(bytes);
            }
        }
        for len in (0..good.len()).step_by(7) {
            variants.push(good[..len].to_vec());
        }
        for bytes in variants {
            std::fs::write(&mangled, &bytes).unwrap();
            let result = catch_unwind(AssertUnwindSafe(|| nifti::read_nifti(&mangled, &ReadOptions::default())));
            match result {
                Err(_) => panic!("panic on a mangled {name}"),
                Ok(r) => outcomes[r.is_ok() as usize] += 1,
            }
        }
        assert!(outcomes[0] > 100 && outcomes[1] > 100, "both outcomes occur: {outcomes:?}");
    }
}
