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
        String::from_utf8_lossy(&out.stdout).contains("15 DICOM instances"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // 6 maps, 3 label maps, the report, the preview and the CTP average's 4 slices.
    assert_eq!(dicom_files(&dicom).len(), 15, "{:?}", dicom_files(&dicom));
    assert!(run.join("preview.png").is_file(), "run writes the model's preview");
    let checked = oracle(&dicom, &source, &run);
    assert_eq!(checked["parametric_maps"], 6, "{checked}");
    assert_eq!(checked["segmentations"], 3, "{checked}");
    assert_eq!(checked["segments"], 4, "{checked}");
    // core, hypoperfusion (on their segments), mismatch and its ratio.
    assert_eq!(checked["measurements"], 4, "{checked}");
    // 4 slices in each map and in each segment.
    assert_eq!(checked["frames"], (6 + 4) * 4, "{checked}");
    assert_eq!(checked["average_slices"], 4, "{checked}");
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
    assert_eq!(files.len(), 15, "maps, label maps, report, preview and the average's 4 slices: {files:?}");
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

/// Any model's outputs on a real CT series (pydicom's CT5N): a float map and a two-label map
/// written by the core's writer, read back by highdicom (values, masks, the measurement's
/// segment), valid for dciodvfy, and the Parametric Map read back by our own reader bit-exact.
#[test]
fn any_model_on_a_real_ct_series_round_trips() {
    use imhost_core::io::dicom::results::{ResultOptions, ResultSource, model_results};
    use imhost_core::io::dicom::{DicomReadOptions, read_dicom_buffers, read_dicom_folder};
    use imhost_core::registry::{Manifest, ModelOutput};
    use imhost_core::{AnyVolume, Volume};

    let source_dir = repo().join(".cache/python/pydicom/data/test_files/dicomdirtests/98892001/CT5N");
    assert!(source_dir.is_dir(), "pydicom's test files: run scripts/setup.sh test");
    let series = read_dicom_folder(&source_dir, &DicomReadOptions::default()).unwrap();
    let hu: Volume<f32> = match &series.volume {
        AnyVolume::I16(v) => Volume::from_parts(v.data().mapv(f32::from), *v.geometry(), None).unwrap(),
        AnyVolume::F32(v) => v.clone(),
        other => panic!("{:?}", other.dtype()),
    };
    let mut labels =
        Volume::from_parts(hu.data().mapv(|v| u8::from(v > -500.0) + u8::from(v > 300.0)), *hu.geometry(), None)
            .unwrap();
    // A voxel at the very border, so that frame edges are exercised.
    labels.data_mut()[[0, 0, 0, 0]] = 2;
    let voxel_ml = hu.geometry().spacing.iter().product::<f64>() / 1000.0;
    let body_ml = labels.data().iter().filter(|&&v| v == 1).count() as f64 * voxel_ml;
    let manifest = Manifest::from_json(
        &serde_json::json!({
            "format": "imhost-manifest/1", "id": "test-body", "name": "Body and dense tissue", "version": "1.0",
            "research_use_only": true, "reference": "test",
            "inputs": [{"name": "ct", "modality": "CT", "dims": 3}],
            "outputs": [
                {"name": "density", "kind": "map", "unit": "HU", "unit_ucum": "[hnsf'U]", "description": "CT number"},
                {"name": "body", "kind": "labelmap", "labels": [
                    {"value": 1, "name": "body", "color": [200, 160, 120]},
                    {"value": 2, "name": "dense", "color": [255, 255, 255],
                     "category": {"scheme": "SCT", "value": "85756007", "meaning": "Tissue"},
                     "property": {"scheme": "SCT", "value": "272673000", "meaning": "Bone"}}]},
                {"name": "body_ml", "kind": "score", "unit": "ml", "unit_ucum": "mL", "measured_on": {"output": "body", "label": 1}},
                {"name": "dense_fraction", "kind": "score", "unit": "1", "unit_ucum": "1"}
            ]
        })
        .to_string(),
    )
    .unwrap();
    manifest.validate().unwrap();
    let output = ModelOutput {
        volumes: vec![("density".into(), AnyVolume::F32(hu.clone())), ("body".into(), AnyVolume::U8(labels.clone()))],
        scores: vec![("body_ml".into(), body_ml), ("dense_fraction".into(), 0.125)],
        report: serde_json::json!({"qc_flags": [{"flag": "test", "message": "a flag the report must carry"}]}),
        preview_png: None,
    };
    let mut options = ResultOptions::default();
    options.uid_seed = Some("ct5n".into());
    options.content_date_time = Some(("20260101".into(), "120000".into()));
    let source = ResultSource::from_series(&series).unwrap();
    let results = model_results(&output, &manifest, &source, None, &options).unwrap();
    assert!(results.skipped.is_empty(), "{:?}", results.skipped);
    let dir = tempfile::tempdir().unwrap();
    let (dicom, run) = (dir.path().join("dicom"), dir.path().join("run"));
    results.write_to(&dicom).unwrap();
    std::fs::create_dir_all(&run).unwrap();
    let index = serde_json::json!({"instances": results.instances});
    std::fs::write(dicom.join("dicom-results.json"), index.to_string()).unwrap();
    for (name, volume) in &output.volumes {
        imhost_core::io::write_volume(volume, &run.join(format!("{name}.nii.gz"))).unwrap();
    }
    std::fs::write(run.join("result.json"), output.summary_json(&manifest).to_string()).unwrap();
    let checked = oracle(&dicom, &source_dir, &run);
    assert_eq!((checked["parametric_maps"].as_i64(), checked["segments"].as_i64()), (Some(1), Some(2)), "{checked}");
    assert_eq!(checked["measurements"], 2, "{checked}");
    validate(&dicom);
    // Our reader, from memory: the map bit for bit, on the source's grid.
    let pm = &results.instances.iter().find(|r| r.output == "density").unwrap().bytes;
    let back = read_dicom_buffers(&[pm], &DicomReadOptions::default()).unwrap();
    let AnyVolume::F32(back) = back.volume else { panic!("a Parametric Map reads as float32") };
    assert_eq!(back.shape(), hu.shape());
    assert!(back.data().iter().zip(hu.data()).all(|(a, b)| a.to_bits() == b.to_bits()), "values differ");
    let (g, h) = (back.geometry(), hu.geometry());
    for a in 0..3 {
        assert!((g.origin[a] - h.origin[a]).abs() < 1e-4 && (g.spacing[a] - h.spacing[a]).abs() < 1e-4, "{g:?} {h:?}");
    }
}

/// The perfusion maps written with `--dicom-out`, read back by our own reader from memory,
/// equal the NIfTI maps bit for bit.
#[test]
fn our_reader_reads_our_parametric_maps_back() {
    use imhost_core::io::dicom::{DicomReadOptions, read_dicom_buffers};
    use imhost_core::io::nifti::{ReadOptions, read_nifti};
    let dir = tempfile::tempdir().unwrap();
    let source = phantom(dir.path());
    let (run, dicom) = (dir.path().join("run"), dir.path().join("dicom-out"));
    ok(&imhost(&["perfusion", s(&source), "--out", s(&run), "--dicom-out", s(&dicom), "-q"]), "perfusion");
    for map in ["cbf", "cbv", "mtt", "ttp", "tmax", "delay"] {
        let bytes = std::fs::read(dicom.join(format!("pm_{map}.dcm"))).unwrap();
        let back = read_dicom_buffers(&[&bytes], &DicomReadOptions::default()).unwrap();
        let (nifti, _) = read_nifti(&run.join(format!("{map}.nii.gz")), &ReadOptions::default()).unwrap();
        let (imhost_core::AnyVolume::F32(a), imhost_core::AnyVolume::F32(b)) = (&back.volume, &nifti) else {
            panic!("{map}: float32 expected")
        };
        assert_eq!(a.shape(), b.shape(), "{map}");
        assert!(a.data().iter().zip(b.data()).all(|(x, y)| x.to_bits() == y.to_bits()), "{map} differs");
    }
}

/// A multi-frame (legacy converted enhanced) CT made by highdicom from one time point of the
/// phantom's series reads as the same volume as those single-frame slices.
#[test]
fn an_enhanced_multi_frame_ct_reads_like_its_slices() {
    use imhost_core::io::dicom::{DicomReadOptions, read_dicom_buffers};
    let dir = tempfile::tempdir().unwrap();
    let source = phantom(dir.path());
    let (enhanced, first) = (dir.path().join("enhanced.dcm"), dir.path().join("first-frame"));
    std::fs::create_dir(&first).unwrap();
    let script = "import sys, os, pydicom, highdicom as hd\n\
        from pydicom.uid import generate_uid\n\
        src, out, copy = sys.argv[1:4]\n\
        ds = [pydicom.dcmread(os.path.join(src, f)) for f in sorted(os.listdir(src))]\n\
        ds = [d for d in ds if int(d.TemporalPositionIdentifier) == 1]\n\
        [d.save_as(os.path.join(copy, d.SOPInstanceUID + '.dcm')) for d in ds]\n\
        e = hd.legacy.LegacyConvertedEnhancedCTImage(legacy_datasets=ds, series_instance_uid=generate_uid(),\n\
            series_number=7, sop_instance_uid=generate_uid(), instance_number=1)\n\
        e.save_as(out)\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .args([source.as_path(), enhanced.as_path(), first.as_path()])
        .env("PYTHONPATH", repo().join(".cache/python"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&enhanced).unwrap();
    let multi = read_dicom_buffers(&[&bytes], &DicomReadOptions::default()).unwrap();
    let single = imhost_core::io::dicom::read_dicom_folder(&first, &DicomReadOptions::default()).unwrap();
    assert_eq!(multi.volume.shape(), [64, 56, 4, 1]);
    assert_eq!(multi.volume.shape(), single.volume.shape());
    let (imhost_core::AnyVolume::I16(a), imhost_core::AnyVolume::I16(b)) = (&multi.volume, &single.volume) else {
        panic!("both int16 HU: {:?} {:?}", multi.volume.dtype(), single.volume.dtype())
    };
    assert_eq!(a.data(), b.data());
    assert_eq!(a.geometry(), b.geometry());
    // Each frame keeps its instance and frame number for the references of results.
    assert!(multi.instances.iter().all(|i| i.instance_frame.is_some()));
    assert_eq!(
        multi.instances.iter().map(|i| i.instance_frame.unwrap()).collect::<std::collections::BTreeSet<_>>().len(),
        4
    );
}
