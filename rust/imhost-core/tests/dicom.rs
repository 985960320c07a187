//! DICOM series: a phantom written as DICOM and read back; real CT series from pydicom's wheel
//! against pydicom as the oracle; a series with a gap refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use ndarray::ShapeBuilder;

use imhost_core::io::dicom::{DicomReadOptions, read_dicom_series, write_dicom_series};
use imhost_core::io::read_volume;
use imhost_core::perfusion::{self, PerfusionOptions};
use imhost_core::phantom::ctp::{self, PhantomKind, PhantomOptions};
use imhost_core::{AnyVolume, ErrorKind, Geometry, RunControl, Volume};

fn pydicom_data() -> PathBuf {
    let dir = common::repo_root().join(".cache/python/pydicom/data/test_files");
    assert!(dir.is_dir(), "pydicom test files missing in {}: run scripts/setup.sh test", dir.display());
    dir
}

fn oracle(folder: &Path) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(common::repo_root().join("tests/oracle/pydicom_oracle.py"))
        .arg(folder)
        .env("PYTHONPATH", common::repo_root().join(".cache/python"))
        .output()
        .expect("python3");
    assert!(out.status.success(), "pydicom oracle: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn phantom_round_trips_through_dicom_and_gives_the_same_perfusion_result() {
    let mut options = PhantomOptions::new(PhantomKind::Anatomical);
    options.shape = Some([48, 40, 3]);
    options.frame_times = Some(ctp::nonuniform_frame_times());
    let phantom = ctp::generate(&options).unwrap();
    // An oblique placement, so that orientation and position are really exercised.
    let (c, s) = (0.3f64.cos(), 0.3f64.sin());
    let g = phantom.ctp.geometry();
    let oblique = Geometry {
        spacing: g.spacing,
        origin: [-40.5, 12.25, 60.0],
        direction: [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]],
    };
    let study = Volume::from_parts(phantom.ctp.data().clone(), oblique, phantom.ctp.frame_times().cloned()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_dicom_series(&study, dir.path(), "1.2.826.0.1.3680043.10.1").unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3 * 51);
    let AnyVolume::I16(back) = read_volume(dir.path()).unwrap() else { panic!("HU with slope 1 reads as int16") };
    assert_eq!(back.data(), study.data(), "pixels");
    let bg = back.geometry();
    for a in 0..3 {
        assert!((bg.spacing[a] - oblique.spacing[a]).abs() < 1e-5 && (bg.origin[a] - oblique.origin[a]).abs() < 1e-5);
        for b in 0..3 {
            assert!((bg.direction[a][b] - oblique.direction[a][b]).abs() < 1e-5, "direction {a},{b}");
        }
    }
    let (t0, t1) = (back.frame_times().unwrap().as_slice(), study.frame_times().unwrap().as_slice());
    assert!(t0.iter().zip(t1).all(|(a, b)| (a - b).abs() < 1e-5), "frame times {t0:?}");
    let run = |v: &Volume<i16>| {
        perfusion::run(&v.view().into(), &PerfusionOptions::default(), None, &RunControl::none()).unwrap()
    };
    let (a, b) = (run(&study), run(&back));
    // Spacing passes through DICOM's decimal strings (6 decimals), so the filter weights differ in
    // the last bits: the maps agree to far below any clinical resolution.
    let worst = a.maps.cbf.data().iter().zip(b.maps.cbf.data()).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-3, "CBF differs by up to {worst}");
    let flips = a.hypoperfusion.data().iter().zip(b.hypoperfusion.data()).filter(|(x, y)| x != y).count();
    assert!(flips <= 2, "{flips} hypoperfusion voxels differ");
}

#[test]
fn real_ct_series_matches_pydicom() {
    let folder = pydicom_data().join("dicomdirtests/98892001/CT5N");
    let v = read_dicom_series(&folder, &DicomReadOptions::default()).unwrap();
    let truth = oracle(&folder);
    let [ni, nj, nk, nt] = v.shape();
    assert_eq!(
        (ni, nj, nk, nt),
        (truth["columns"].as_u64().unwrap() as usize, truth["rows"].as_u64().unwrap() as usize, 5, 1)
    );
    let g = v.geometry();
    let positions: Vec<Vec<f64>> = serde_json::from_value(truth["positions"].clone()).unwrap();
    let spacing: Vec<f64> = serde_json::from_value(truth["pixel_spacing"].clone()).unwrap();
    let orientation: Vec<f64> = serde_json::from_value(truth["orientation"].clone()).unwrap();
    assert_eq!(positions.len(), nk);
    for (k, expected) in positions.iter().enumerate() {
        let p = g.index_to_lps([0.0, 0.0, k as f64]);
        for a in 0..3 {
            assert!((p[a] - expected[a]).abs() < 1e-3, "slice {k} position {p:?} vs {expected:?}");
        }
    }
    assert!((g.spacing[0] - spacing[1]).abs() < 1e-6 && (g.spacing[1] - spacing[0]).abs() < 1e-6);
    for a in 0..3 {
        assert!(
            (g.direction[a][0] - orientation[a]).abs() < 1e-6 && (g.direction[a][1] - orientation[3 + a]).abs() < 1e-6
        );
    }
    let value = |i: usize, j: usize, k: usize| -> f64 {
        match &v {
            AnyVolume::I16(x) => f64::from(x.data()[[i, j, k, 0]]),
            AnyVolume::F32(x) => f64::from(x.data()[[i, j, k, 0]]),
            _ => panic!("unexpected dtype {:?}", v.dtype()),
        }
    };
    for s in truth["samples"].as_array().unwrap() {
        let (k, r, c) = (
            s["k"].as_u64().unwrap() as usize,
            s["row"].as_u64().unwrap() as usize,
            s["column"].as_u64().unwrap() as usize,
        );
        assert!((value(c, r, k) - s["hu"].as_f64().unwrap()).abs() < 1e-3, "HU at slice {k} row {r} column {c}");
    }
}

#[test]
fn single_ct_file_matches_pydicom() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(pydicom_data().join("CT_small.dcm"), dir.path().join("ct.dcm")).unwrap();
    let v = read_volume(dir.path()).unwrap();
    let truth = oracle(dir.path());
    assert_eq!(v.shape(), [128, 128, 1, 1]);
    let AnyVolume::I16(x) = &v else { panic!("int16 expected, got {:?}", v.dtype()) };
    for s in truth["samples"].as_array().unwrap() {
        let (r, c) = (s["row"].as_u64().unwrap() as usize, s["column"].as_u64().unwrap() as usize);
        assert_eq!(f64::from(x.data()[[c, r, 0, 0]]), s["hu"].as_f64().unwrap());
    }
}

#[test]
fn a_series_with_a_gap_is_refused() {
    let e = read_dicom_series(&pydicom_data().join("dicomdirtests/77654033/CT2"), &DicomReadOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Geometry);
    assert!(e.message().contains("evenly spaced"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("notes.txt"), "not DICOM").unwrap();
    assert_eq!(read_volume(empty.path()).unwrap_err().kind(), ErrorKind::Format);
    let mut small = DicomReadOptions::default();
    small.max_bytes = 100;
    let e = read_dicom_series(&pydicom_data().join("dicomdirtests/98892001/CT5N"), &small).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge);
}

#[test]
fn a_corrupt_file_in_a_series_is_an_error_naming_it_not_a_missing_time_point() {
    let mut options = PhantomOptions::new(PhantomKind::Anatomical);
    options.shape = Some([32, 32, 2]);
    options.frame_times = Some((0..6).map(f64::from).collect());
    let study = ctp::generate(&options).unwrap().ctp;
    let dir = tempfile::tempdir().unwrap();
    write_dicom_series(&study, dir.path(), "1.2.826.0.1.3680043.10.1").unwrap();
    // Files that are not DICOM at all are skipped (and the series still reads).
    std::fs::write(dir.path().join("README.txt"), "exported by the PACS").unwrap();
    assert_eq!(read_volume(dir.path()).unwrap().shape(), [32, 32, 2, 6]);
    // A file with the DICM preamble that is cut short: an error naming it.
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let victim = files.iter().find(|p| p.extension().is_none_or(|e| e != "txt")).unwrap();
    let bytes = std::fs::read(victim).unwrap();
    std::fs::write(victim, &bytes[..400]).unwrap();
    let e = read_volume(dir.path()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Format);
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    assert!(e.message().contains("corrupt DICOM") && e.message().contains(&name), "{e}");
}

/// Our DICOM writer checked by an independent reader (pydicom), not by our own: positions,
/// orientation, spacing, HU and acquisition times of every slice of an oblique 4-D study against
/// the volume that was written.
#[test]
fn the_dicom_writer_is_read_by_pydicom_as_written() {
    let (ni, nj, nk, nt) = (7usize, 5usize, 3usize, 4usize);
    let data = ndarray::Array4::from_shape_fn((ni, nj, nk, nt), |(i, j, k, t)| {
        (i as i16) * 10 - (j as i16) * 7 + (k as i16) * 100 + (t as i16) * 1000 - 500
    });
    let (c, s) = (0.4f64.cos(), 0.4f64.sin());
    let geometry = Geometry {
        spacing: [0.8, 0.9, 2.5],
        origin: [-20.0, 31.5, 7.25],
        direction: [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]],
    };
    let times = imhost_core::FrameTimes::new(vec![0.0, 1.5, 3.0, 7.25], imhost_core::TimeSource::Header).unwrap();
    let study = Volume::from_parts(data.clone(), geometry, Some(times.clone())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_dicom_series(&study, dir.path(), "1.2.826.0.1.3680043.10.1").unwrap();
    let truth = oracle(dir.path());
    assert_eq!((truth["columns"].as_u64(), truth["rows"].as_u64()), (Some(ni as u64), Some(nj as u64)));
    let positions: Vec<Vec<f64>> = serde_json::from_value(truth["positions"].clone()).unwrap();
    let temporal: Vec<usize> = serde_json::from_value(truth["temporal_positions"].clone()).unwrap();
    let seconds: Vec<f64> = serde_json::from_value(truth["times_s"].clone()).unwrap();
    assert_eq!(positions.len(), nk * nt);
    for (n, p) in positions.iter().enumerate() {
        let (t, k) = (n / nk, n % nk);
        assert_eq!(temporal[n], t + 1, "slice {n}");
        let expected = geometry.index_to_lps([0.0, 0.0, k as f64]);
        for a in 0..3 {
            assert!((p[a] - expected[a]).abs() < 1e-5, "slice {n}: position {p:?} vs {expected:?}");
        }
        // Times relative to the first frame.
        assert!(((seconds[n] - seconds[0]) - times.as_slice()[t]).abs() < 1e-5, "slice {n} time");
    }
    let spacing: Vec<f64> = serde_json::from_value(truth["pixel_spacing"].clone()).unwrap();
    assert_eq!(spacing, [0.9, 0.8], "row spacing (j), then column spacing (i)");
    let orientation: Vec<f64> = serde_json::from_value(truth["orientation"].clone()).unwrap();
    for a in 0..3 {
        assert!((orientation[a] - geometry.direction[a][0]).abs() < 1e-6);
        assert!((orientation[3 + a] - geometry.direction[a][1]).abs() < 1e-6);
    }
    for sample in truth["samples"].as_array().unwrap() {
        let n = sample["k"].as_u64().unwrap() as usize;
        let (k, t) = (n % nk, n / nk);
        let (r, col) = (sample["row"].as_u64().unwrap() as usize, sample["column"].as_u64().unwrap() as usize);
        assert_eq!(sample["hu"].as_f64().unwrap(), f64::from(data[[col, r, k, t]]), "HU at slice {n} ({r}, {col})");
    }
}

/// All files of `dir`, sorted by path, as bytes.
fn file_bytes(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// The series in memory (what an Orthanc plugin holds) is read by the same reader as the folder:
/// the same volume, the identifiers of every instance and where it went, the same checks.
#[test]
fn a_series_in_memory_reads_as_the_same_folder_does_with_its_identifiers() {
    use imhost_core::io::dicom::{read_dicom_buffers, read_dicom_folder};
    // A real CT series (pydicom's) and our 4-D phantom export, in reverse order in memory.
    let export = tempfile::tempdir().unwrap();
    let mut options = PhantomOptions::new(PhantomKind::Anatomical);
    options.shape = Some([32, 36, 2]);
    options.frame_times = Some(vec![0.0, 1.5, 3.0]);
    write_dicom_series(&ctp::generate(&options).unwrap().ctp, export.path(), "1.2.826.0.1.3680043.10.1").unwrap();
    for folder in [pydicom_data().join("dicomdirtests/98892001/CT5N"), export.path().to_path_buf()] {
        let from_files = read_dicom_folder(&folder, &DicomReadOptions::default()).unwrap();
        let mut bytes = file_bytes(&folder);
        bytes.reverse();
        let views: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        let from_memory = read_dicom_buffers(&views, &DicomReadOptions::default()).unwrap();
        assert_eq!(from_memory.volume.shape(), from_files.volume.shape());
        assert_eq!(from_memory.volume.geometry(), from_files.volume.geometry());
        assert_eq!(from_memory.volume.frame_times(), from_files.volume.frame_times());
        match (&from_memory.volume, &from_files.volume) {
            (AnyVolume::I16(a), AnyVolume::I16(b)) => assert_eq!(a.data(), b.data()),
            (AnyVolume::F32(a), AnyVolume::F32(b)) => assert_eq!(a.data(), b.data()),
            _ => panic!("different pixel types"),
        }
        // Every instance is listed once, with its identifiers and the slot it filled.
        let [_, _, nk, nt] = from_memory.volume.shape();
        assert_eq!(from_memory.instances.len(), nk * nt);
        assert_eq!(from_memory.series_instance_uid, from_files.series_instance_uid);
        let mut slots: Vec<(usize, usize)> = from_memory.instances.iter().map(|i| (i.frame, i.slice)).collect();
        slots.dedup();
        assert_eq!(slots.len(), nk * nt, "one instance per slot");
        let study = from_memory.study().unwrap();
        assert!(!study.study_instance_uid.is_empty() && !study.frame_of_reference_uid.is_empty(), "{study:?}");
        for i in &from_memory.instances {
            assert!(!i.ids.sop_instance_uid.is_empty());
            // The buffer it came from is the file it came from (reversed order).
            let file_index = bytes.len() - 1 - i.source;
            let same = from_files.instances.iter().find(|f| f.ids.sop_instance_uid == i.ids.sop_instance_uid).unwrap();
            assert_eq!((same.source, same.slice, same.frame), (file_index, i.slice, i.frame));
        }
    }
    // The same checks: a truncated buffer is an error naming it; nothing DICOM at all is refused.
    let bytes = file_bytes(&pydicom_data().join("dicomdirtests/98892001/CT5N"));
    let mut views: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    views[2] = &bytes[2][..300];
    let e = read_dicom_buffers(&views, &DicomReadOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Format);
    assert!(e.message().contains("DICOM buffer 2"), "{e}");
    let e = read_dicom_buffers(&[b"not DICOM".as_slice()], &DicomReadOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Format);
    let mut small = DicomReadOptions::default();
    small.max_bytes = 100;
    let views: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    assert_eq!(read_dicom_buffers(&views, &small).unwrap_err().kind(), ErrorKind::TooLarge);
}

/// The files of a small CT series written by us (2 frames of 3 slices), as bytes by name.
fn series_bytes(uid_root: &str) -> Vec<Vec<u8>> {
    let data =
        ndarray::Array4::from_shape_fn((6, 5, 3, 2).f(), |(i, j, k, t)| (i * 7 + j * 3 + k * 11 + t * 5) as i16 - 20);
    let times = imhost_core::FrameTimes::new(vec![0.0, 1.5], imhost_core::TimeSource::Caller).unwrap();
    let volume =
        Volume::from_parts(data, Geometry::axis_aligned([0.8, 0.8, 4.0], [1.0, 2.0, 3.0]).unwrap(), Some(times))
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_dicom_series(&volume, dir.path(), uid_root).unwrap();
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    names.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Change a Part 10 file with dicom-rs and write it back.
fn edit(bytes: &[u8], change: impl FnOnce(&mut dicom_object::DefaultDicomObject)) -> Vec<u8> {
    let mut obj = dicom_object::OpenFileOptions::new().from_reader(&bytes[128..]).unwrap();
    change(&mut obj);
    let mut out = Vec::new();
    obj.write_all(&mut out).unwrap();
    out
}

#[test]
fn instances_in_memory_that_cannot_form_one_series_are_refused_clearly() {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let read = |buffers: &[Vec<u8>]| {
        let slices: Vec<&[u8]> = buffers.iter().map(Vec::as_slice).collect();
        imhost_core::io::dicom::read_dicom_buffers(&slices, &DicomReadOptions::default())
    };
    let good = series_bytes("1.2.826.0.1.3680043.10.1");
    assert_eq!(read(&good).unwrap().volume.shape(), [6, 5, 3, 2]);
    // Two series mixed: refused from memory, naming both (a folder takes the largest).
    let mut mixed = good.clone();
    mixed.extend(series_bytes("1.2.826.0.1.3680043.10.2").into_iter().take(3));
    let e = read(&mixed).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.message().contains("2 series"), "{e}");
    // A slice without a position.
    let mut missing = good.clone();
    missing[2] = edit(&good[2], |o| {
        o.remove_element(tags::IMAGE_POSITION_PATIENT);
    });
    let e = read(&missing).unwrap_err();
    assert!(e.to_string().contains("DICOM buffer 2") && e.to_string().contains("ImagePositionPatient"), "{e}");
    // A slice with another pixel spacing.
    let mut spacing = good.clone();
    spacing[4] = edit(&good[4], |o| {
        o.put(DataElement::new(tags::PIXEL_SPACING, VR::DS, PrimitiveValue::from("0.9\\0.8")));
    });
    assert!(read(&spacing).unwrap_err().to_string().contains("pixel spacing differs"));
    // A truncated buffer.
    let mut truncated = good.clone();
    truncated[1].truncate(good[1].len() - 7);
    assert_eq!(read(&truncated).unwrap_err().kind(), ErrorKind::Format);
    // A compressed transfer syntax (RLE Lossless, same UID length as explicit VR little endian)
    // over pixel data that is not RLE: refused naming the syntax.
    let mut compressed = good.clone();
    let at = good[0].windows(20).position(|w| w == b"1.2.840.10008.1.2.1\0").unwrap();
    compressed[0][at..at + 20].copy_from_slice(b"1.2.840.10008.1.2.5\0");
    let e = read(&compressed).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Unsupported | ErrorKind::Format), "{e}");
    assert!(e.to_string().contains("1.2.840.10008.1.2.5") && e.to_string().contains("RLE"), "{e}");
    // A header that claims 10⁹ frames: refused from the header, nothing allocated for them.
    let lie = edit(&good[0], |o| {
        o.put(DataElement::new(tags::NUMBER_OF_FRAMES, VR::IS, PrimitiveValue::from("1000000000")));
        o.put(DataElement::new(
            tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
            VR::SQ,
            dicom_core::value::DataSetSequence::from(vec![dicom_object::InMemDicomObject::new_empty()]),
        ));
    });
    let e = imhost_core::memory::with_limit(Some(64 << 20), || read(&[lie])).unwrap_err();
    assert!(e.message().contains("NumberOfFrames is 1000000000"), "{e}");
}

/// A series compressed three ways — JPEG lossless (dcmtk's dcmcjpeg), RLE (dcmcrle), JPEG 2000
/// lossless (Pillow's OpenJPEG, encapsulated by pydicom) — decodes to the same HU volume as the
/// uncompressed series; a codestream claiming a larger image than the header is refused before
/// it is decoded; JPEG-LS (dcmcjpls), which this build does not decode, is refused naming it.
#[test]
fn compressed_series_decode_to_the_uncompressed_volume() {
    let data = ndarray::Array4::from_shape_fn((20, 18, 2, 2).f(), |(i, j, k, t)| {
        ((i * 37 + j * 11 + k * 101 + t * 7) % 400) as i16 - 150
    });
    let times = imhost_core::FrameTimes::new(vec![0.0, 2.0], imhost_core::TimeSource::Caller).unwrap();
    let volume =
        Volume::from_parts(data, Geometry::axis_aligned([0.7, 0.7, 5.0], [0.0, 0.0, 0.0]).unwrap(), Some(times))
            .unwrap();
    let root = tempfile::tempdir().unwrap();
    let raw = root.path().join("raw");
    write_dicom_series(&volume, &raw, "1.2.826.0.1.3680043.10.1").unwrap();
    let want = read_volume(&raw).unwrap();
    for (name, tool, args) in
        [("jpeg-lossless", "dcmcjpeg", &["+e1"][..]), ("jpeg-ls", "dcmcjpls", &[][..]), ("rle", "dcmcrle", &[][..])]
    {
        let dir = root.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        for entry in std::fs::read_dir(&raw).unwrap() {
            let from = entry.unwrap().path();
            let out = Command::new(tool)
                .args(args)
                .arg(&from)
                .arg(dir.join(from.file_name().unwrap()))
                .output()
                .unwrap_or_else(|e| panic!("{tool} (dcmtk; scripts/setup.sh test installs it): {e}"));
            assert!(out.status.success(), "{tool}: {}", String::from_utf8_lossy(&out.stderr));
        }
        if name == "jpeg-ls" {
            let e = read_volume(&dir).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
            assert!(e.message().contains("1.2.840.10008.1.2.4.80") && e.message().contains("JPEG-LS"), "{e}");
            continue;
        }
        let got = read_volume(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got.shape(), want.shape(), "{name}");
        let (AnyVolume::I16(a), AnyVolume::I16(b)) = (&got, &want) else { panic!("{name}: int16") };
        assert_eq!(a.data(), b.data(), "{name}: pixels");
    }
    let j2k = root.path().join("jpeg2000");
    let script = "import os, io, sys, pydicom, numpy as np\n\
        from PIL import Image\n\
        from pydicom.encaps import encapsulate\n\
        src, dst = sys.argv[1:3]\n\
        os.makedirs(dst)\n\
        for n in sorted(os.listdir(src)):\n\
        \x20   d = pydicom.dcmread(os.path.join(src, n))\n\
        \x20   a = (d.pixel_array.astype(np.int32) + 2048).astype(np.uint16)\n\
        \x20   buf = io.BytesIO(); Image.fromarray(a).save(buf, format='JPEG2000', irreversible=False, no_jp2=True)\n\
        \x20   d.PixelRepresentation = 0; d.RescaleIntercept = -2048\n\
        \x20   d.PixelData = encapsulate([buf.getvalue()]); d['PixelData'].VR = 'OB'\n\
        \x20   d.file_meta.TransferSyntaxUID = pydicom.uid.JPEG2000Lossless\n\
        \x20   d.save_as(os.path.join(dst, n), enforce_file_format=True)\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .args([&raw, &j2k])
        .env("PYTHONPATH", common::repo_root().join(".cache/python"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let AnyVolume::I16(got) = read_volume(&j2k).unwrap() else { panic!("JPEG 2000 with intercept -2048: int16") };
    let AnyVolume::I16(w) = &want else { unreachable!() };
    assert_eq!(got.data(), w.data(), "JPEG 2000 pixels");
    // A JPEG lossless frame whose start of frame claims 4096 rows: refused, naming both sizes.
    let first = std::fs::read_dir(root.path().join("jpeg-lossless")).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&first).unwrap();
    let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC3]).unwrap();
    bytes[sof + 5..sof + 7].copy_from_slice(&4096u16.to_be_bytes());
    let e = imhost_core::io::dicom::read_dicom_buffers(&[&bytes], &DicomReadOptions::default()).unwrap_err();
    assert!(e.message().contains("20×4096 pixels where the header says 20×18"), "{e}");
}

/// Unsigned pixels above 32767 do not fit int16: the series is read as float32 with the exact
/// values (the reader falls back from its int16 fast path).
#[test]
fn unsigned_pixels_beyond_int16_read_as_float32() {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let good = series_bytes("1.2.826.0.1.3680043.10.1");
    let unsigned: Vec<Vec<u8>> = good
        .iter()
        .map(|b| {
            edit(b, |o| {
                o.put(DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(0u16)));
            })
        })
        .collect();
    let slices: Vec<&[u8]> = unsigned.iter().map(Vec::as_slice).collect();
    let signed: Vec<&[u8]> = good.iter().map(Vec::as_slice).collect();
    let a = imhost_core::io::dicom::read_dicom_buffers(&slices, &DicomReadOptions::default()).unwrap().volume;
    let b = imhost_core::io::dicom::read_dicom_buffers(&signed, &DicomReadOptions::default()).unwrap().volume;
    let (AnyVolume::F32(a), AnyVolume::I16(b)) = (a, b) else { panic!("float32 and int16 expected") };
    assert!(b.data().iter().any(|&v| v < 0), "the test needs negative values");
    assert!(a.data().iter().zip(b.data()).all(|(&x, &y)| x == f32::from(y as u16)));
}
