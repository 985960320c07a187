//! NIfTI reading and writing checked against nibabel, the reference Python implementation:
//! nibabel's own test files are read by both and must agree; files imhost writes must read back
//! identically in imhost and in nibabel.

mod common;

use std::path::Path;

use common::{Lcg, nibabel_data, oracle};
use imhost_core::io::nifti::{self, Endian, NiftiVersion, ReadOptions, WriteOptions};
use imhost_core::{AnyVolume, ErrorKind, FrameTimes, Geometry, TimeSource, Volume, Voxel, with_volume};
use ndarray::{Array4, ShapeBuilder};
use serde_json::Value;

fn value_at(volume: &AnyVolume, index: &[usize]) -> f64 {
    let mut ix = [0usize; 4];
    ix[..index.len()].copy_from_slice(index);
    with_volume!(volume, v => v.data()[ix].to_f64())
}

fn sum(volume: &AnyVolume) -> f64 {
    with_volume!(volume, v => v.data().iter().map(|x| x.to_f64()).filter(|x| !x.is_nan()).sum())
}

/// Compare what imhost read with what nibabel read, value by value.
fn assert_agrees(volume: &AnyVolume, truth: &Value, label: &str) {
    let shape: Vec<usize> = serde_json::from_value(truth["shape"].clone()).unwrap();
    let mut expected_shape = [1usize; 4];
    expected_shape[..shape.len()].copy_from_slice(&shape);
    assert_eq!(volume.shape(), expected_shape, "{label}: shape");
    assert_eq!(volume.is_4d(), shape.len() == 4, "{label}: 4-D");

    if truth["sform_code"].as_i64().unwrap() > 0 || truth["qform_code"].as_i64().unwrap() > 0 {
        let ours = volume.geometry().ijk_to_ras();
        let theirs: Vec<Vec<f64>> = serde_json::from_value(truth["affine"].clone()).unwrap();
        for r in 0..4 {
            for c in 0..4 {
                assert!(
                    (ours[r][c] - theirs[r][c]).abs() < 1e-4,
                    "{label}: affine[{r}][{c}] imhost {} nibabel {}",
                    ours[r][c],
                    theirs[r][c]
                );
            }
        }
    }
    let is_float = volume.dtype().is_float();
    let close = |a: f64, b: f64| if is_float { (a - b).abs() <= 1e-6 * b.abs().max(1.0) } else { a == b };
    for sample in truth["samples"].as_array().unwrap() {
        let index: Vec<usize> = serde_json::from_value(sample["index"].clone()).unwrap();
        let got = value_at(volume, &index);
        match sample["value"].as_f64() {
            Some(expect) => assert!(close(got, expect), "{label}: voxel {index:?} imhost {got} nibabel {expect}"),
            None => assert!(got.is_nan(), "{label}: voxel {index:?} is NaN in nibabel, {got} in imhost"),
        }
    }
    let (ours, theirs) = (sum(volume), truth["sum"].as_f64().unwrap());
    assert!(
        (ours - theirs).abs() <= 1e-9 * theirs.abs().max(1.0) + if is_float { 1e-3 } else { 0.0 },
        "{label}: sum {ours} vs {theirs}"
    );

    if volume.is_4d() {
        let unit = match truth["time_unit"].as_str().unwrap() {
            "msec" => 1e-3,
            "usec" => 1e-6,
            _ => 1.0,
        };
        let step = truth["zooms"][3].as_f64().unwrap() * unit;
        let times = volume.frame_times().unwrap();
        assert_eq!(times.source(), TimeSource::Header, "{label}");
        let got = times.as_slice();
        let offset = truth["toffset"].as_f64().unwrap() * unit;
        for (n, t) in got.iter().enumerate() {
            assert!((t - (offset + step * n as f64)).abs() < 1e-6, "{label}: frame {n} at {t} s");
        }
    }
}

#[test]
fn every_nibabel_test_file_reads_as_nibabel_reads_it() {
    let dir = nibabel_data();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".nii") || p.to_string_lossy().ends_with(".nii.gz"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "expected nibabel's 8 NIfTI files in {}", dir.display());
    let paths: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let truths = oracle(&paths);
    let mut checked = 0;
    for (path, truth) in files.iter().zip(&truths) {
        let label = path.file_name().unwrap().to_string_lossy().into_owned();
        let result = nifti::read_nifti(path, &ReadOptions::default());
        let shape: Vec<usize> = serde_json::from_value(truth["shape"].clone()).unwrap();
        if shape.iter().skip(4).any(|&n| n > 1) {
            // CIFTI-2 and other 5-D+ images: a clear refusal.
            let err = result.expect_err(&label);
            assert_eq!(err.kind(), ErrorKind::Unsupported, "{label}: {err}");
            assert!(err.to_string().contains(&label), "the message names the file: {err}");
            continue;
        }
        let (volume, info) = result.unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(info.endian == Endian::Big, truth["big_endian"].as_bool().unwrap(), "{label}: byte order");
        assert_eq!(info.version == NiftiVersion::Nifti2, truth["version"] == 2, "{label}: version");
        assert_agrees(&volume, truth, &label);
        checked += 1;
    }
    assert_eq!(checked, 7, "seven of the eight files are 3-D/4-D images");
    // functional.nii is stored scaled: imhost must deliver the scaled values, as floats.
    let (functional, info) = nifti::read_nifti(&dir.join("functional.nii"), &ReadOptions::default()).unwrap();
    assert!(info.scaling.is_some());
    assert_eq!(functional.dtype(), imhost_core::DType::F32);
}

/// An oblique geometry (rotated about two axes, non-square voxels, off-centre).
fn oblique() -> Geometry {
    let (s1, c1) = 17f64.to_radians().sin_cos();
    let (s2, c2) = 8f64.to_radians().sin_cos();
    let rz = [[c1, -s1, 0.0], [s1, c1, 0.0], [0.0, 0.0, 1.0]];
    let rx = [[1.0, 0.0, 0.0], [0.0, c2, -s2], [0.0, s2, c2]];
    let direction = std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|k| rz[i][k] * rx[k][j]).sum()));
    Geometry { spacing: [0.45, 0.55, 2.5], origin: [-110.0, 95.5, 30.25], direction }
}

fn random_volume<T: Voxel>(shape: [usize; 4], times: Option<Vec<f64>>, seed: u64) -> Volume<T> {
    let mut rng = Lcg(seed);
    let n = shape.iter().product();
    // Values spread over the type's range (integers) or signed fractions (floats).
    let values: Vec<T> = (0..n)
        .map(|_| {
            let u = rng.next_f64();
            let v = if T::DTYPE.is_float() { (u - 0.5) * 2000.0 } else { u * 60000.0 - 30000.0 };
            T::from_f64_saturating(v)
        })
        .collect();
    let data = Array4::from_shape_vec(shape.f(), values).unwrap();
    let times = times.map(|t| FrameTimes::new(t, TimeSource::Caller).unwrap());
    Volume::from_parts(data, oblique(), times).unwrap()
}

fn write_read_check<T: Voxel>(dir: &Path, truths_to_check: &mut Vec<(std::path::PathBuf, AnyVolume)>)
where
    AnyVolume: From<Volume<T>>,
{
    let cases = [
        ([7, 5, 3, 1], None),
        ([6, 4, 3, 5], Some(vec![0.0, 1.0, 2.0, 4.0, 7.5])),
        ([6, 4, 3, 4], Some(vec![3.0, 4.5, 6.0, 7.5])),
    ];
    for (case, (shape, times)) in cases.into_iter().enumerate() {
        for version in [NiftiVersion::Nifti1, NiftiVersion::Nifti2] {
            for ext in ["nii", "nii.gz"] {
                for endian in [Endian::Little, Endian::Big] {
                    let volume: AnyVolume = random_volume::<T>(shape, times.clone(), case as u64 + 7).into();
                    let name = format!("{}-{case}-{version:?}-{endian:?}.{ext}", T::DTYPE);
                    let path = dir.join(name);
                    let mut options = WriteOptions::default();
                    options.version = Some(version);
                    options.endian = endian;
                    nifti::write_any(&volume, &path, &options).unwrap();
                    let (back, info) = nifti::read_nifti(&path, &ReadOptions::default()).unwrap();
                    assert_eq!(info.version, version);
                    assert_eq!(info.endian, endian);
                    assert_eq!(back.dtype(), T::DTYPE);
                    // Pixels exactly; geometry to f32 precision for NIfTI-1, f64 for NIfTI-2.
                    let tol = if version == NiftiVersion::Nifti1 { 2e-5 } else { 1e-9 };
                    let (a, b) = (back.geometry().ijk_to_lps(), volume.geometry().ijk_to_lps());
                    for r in 0..3 {
                        for c in 0..4 {
                            assert!(
                                (a[r][c] - b[r][c]).abs() < tol * b[r][c].abs().max(1.0),
                                "{}: matrix",
                                path.display()
                            );
                        }
                    }
                    assert_eq!(
                        back.frame_times().map(|f| f.as_slice().to_vec()),
                        volume.frame_times().map(|f| f.as_slice().to_vec())
                    );
                    if let Some(t) = back.frame_times() {
                        let uniform = t.uniform_interval().is_some();
                        assert_eq!(t.source(), if uniform { TimeSource::Header } else { TimeSource::Sidecar });
                    }
                    truths_to_check.push((path, volume));
                }
            }
        }
    }
}

macro_rules! pixels_equal {
    ($a:expr, $b:expr) => {
        match ($a, $b) {
            (AnyVolume::U8(x), AnyVolume::U8(y)) => x.data() == y.data(),
            (AnyVolume::I16(x), AnyVolume::I16(y)) => x.data() == y.data(),
            (AnyVolume::U16(x), AnyVolume::U16(y)) => x.data() == y.data(),
            (AnyVolume::I32(x), AnyVolume::I32(y)) => x.data() == y.data(),
            (AnyVolume::F32(x), AnyVolume::F32(y)) => x.data() == y.data(),
            (AnyVolume::F64(x), AnyVolume::F64(y)) => x.data() == y.data(),
            _ => false,
        }
    };
}

#[test]
fn files_imhost_writes_read_back_exactly_in_imhost_and_in_nibabel() {
    let dir = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    write_read_check::<u8>(dir.path(), &mut written);
    write_read_check::<i16>(dir.path(), &mut written);
    write_read_check::<u16>(dir.path(), &mut written);
    write_read_check::<i32>(dir.path(), &mut written);
    write_read_check::<f32>(dir.path(), &mut written);
    write_read_check::<f64>(dir.path(), &mut written);
    assert_eq!(written.len(), 6 * 3 * 2 * 2 * 2);
    for (path, volume) in &written {
        let (back, _) = nifti::read_nifti(path, &ReadOptions::default()).unwrap();
        assert!(pixels_equal!(&back, volume), "{}: pixels differ after the round trip", path.display());
    }
    let paths: Vec<&Path> = written.iter().map(|(p, _)| p.as_path()).collect();
    for ((path, volume), truth) in written.iter().zip(oracle(&paths)) {
        assert!(truth.get("error").is_none(), "nibabel cannot read {}: {}", path.display(), truth["error"]);
        // nibabel sees the sform; compare our in-memory geometry with its affine directly.
        let label = path.file_name().unwrap().to_string_lossy().into_owned();
        let theirs: Vec<Vec<f64>> = serde_json::from_value(truth["affine"].clone()).unwrap();
        let ours = volume.geometry().ijk_to_ras();
        for r in 0..3 {
            for c in 0..4 {
                assert!((ours[r][c] - theirs[r][c]).abs() < 2e-5 * ours[r][c].abs().max(1.0), "{label}: affine");
            }
        }
        for sample in truth["samples"].as_array().unwrap() {
            let index: Vec<usize> = serde_json::from_value(sample["index"].clone()).unwrap();
            assert_eq!(value_at(volume, &index), sample["value"].as_f64().unwrap(), "{label}: voxel {index:?}");
        }
    }
}

#[test]
fn scaled_values_match_nibabel() {
    let dir = tempfile::tempdir().unwrap();
    let volume: AnyVolume = random_volume::<i16>([9, 7, 4, 1], None, 3).into();
    let (slope, inter) = (0.25f64, -1024.0f64);
    let mut paths = Vec::new();
    for version in [NiftiVersion::Nifti1, NiftiVersion::Nifti2] {
        let path = dir.path().join(format!("scaled-{version:?}.nii"));
        let mut options = WriteOptions::default();
        options.version = Some(version);
        options.endian = Endian::Little;
        nifti::write_any(&volume, &path, &options).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        // scl_slope / scl_inter: f32 at 112/116 in NIfTI-1, f64 at 176/184 in NIfTI-2.
        match version {
            NiftiVersion::Nifti1 => {
                bytes[112..116].copy_from_slice(&(slope as f32).to_le_bytes());
                bytes[116..120].copy_from_slice(&(inter as f32).to_le_bytes());
            }
            NiftiVersion::Nifti2 => {
                bytes[176..184].copy_from_slice(&slope.to_le_bytes());
                bytes[184..192].copy_from_slice(&inter.to_le_bytes());
            }
        }
        std::fs::write(&path, bytes).unwrap();
        paths.push(path);
    }
    let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    for (path, truth) in paths.iter().zip(oracle(&refs)) {
        let (read, info) = nifti::read_nifti(path, &ReadOptions::default()).unwrap();
        assert_eq!(info.scaling, Some((slope, inter)), "{}", path.display());
        assert_eq!(read.dtype(), imhost_core::DType::F32, "scaled int16 is delivered as f32");
        assert_eq!(truth["slope"].as_f64(), Some(slope));
        assert_agrees(&read, &truth, &path.display().to_string());
        // And by hand: stored value × slope + intercept.
        let stored = value_at(&volume, &[2, 3, 1]);
        assert_eq!(value_at(&read, &[2, 3, 1]), stored * slope + inter);
    }
}

#[test]
fn sidecar_frame_times_override_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctp.nii.gz");
    let volume: AnyVolume = random_volume::<i16>([4, 4, 2, 3], Some(vec![0.0, 1.0, 2.0]), 1).into();
    nifti::write_any(&volume, &path, &WriteOptions::default()).unwrap();
    assert!(!dir.path().join("ctp.json").exists(), "uniform times need no sidecar");
    std::fs::write(dir.path().join("ctp.json"), r#"{"FrameTimes": [0.5, 1.25, 3.0], "Modality": "CT"}"#).unwrap();
    let (read, _) = nifti::read_nifti(&path, &ReadOptions::default()).unwrap();
    let times = read.frame_times().unwrap();
    assert_eq!(times.as_slice(), &[0.5, 1.25, 3.0]);
    assert_eq!(times.source(), TimeSource::Sidecar);
    let mut no_sidecar = ReadOptions::default();
    no_sidecar.use_sidecar = false;
    let (read, _) = nifti::read_nifti(&path, &no_sidecar).unwrap();
    assert_eq!(read.frame_times().unwrap().as_slice(), &[0.0, 1.0, 2.0]);
}

#[test]
fn a_failed_write_leaves_the_previous_file_and_no_debris() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keep.nii");
    let small: AnyVolume = random_volume::<u8>([3, 3, 3, 1], None, 5).into();
    nifti::write_any(&small, &path, &WriteOptions::default()).unwrap();
    let before = std::fs::read(&path).unwrap();
    // A wrong extension and an axis too long for a forced NIfTI-1 both fail before writing.
    let err = nifti::write_any(&small, &dir.path().join("x.img"), &WriteOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let long: AnyVolume = Volume::<u8>::filled([40000, 1, 1, 1], 1, Geometry::identity(), None).unwrap().into();
    let mut nifti1 = WriteOptions::default();
    nifti1.version = Some(NiftiVersion::Nifti1);
    assert!(nifti::write_any(&long, &path, &nifti1).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // Automatic choice: NIfTI-2 for the long axis, and it reads back.
    nifti::write_any(&long, &dir.path().join("long.nii.gz"), &WriteOptions::default()).unwrap();
    let (back, info) = nifti::read_nifti(&dir.path().join("long.nii.gz"), &ReadOptions::default()).unwrap();
    assert_eq!(info.version, NiftiVersion::Nifti2);
    assert_eq!(back.shape(), [40000, 1, 1, 1]);
    // A missing folder is an I/O error; nothing is left behind anywhere.
    let err = nifti::write_any(&small, &dir.path().join("no/such/dir/a.nii"), &WriteOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.contains("partial")), "{names:?}");
}

#[test]
fn large_uncompressed_studies_read_back_exactly_through_the_parallel_path() {
    // 512×512×16×9 int16 = 75 MB: above the size where the reader splits the read over threads.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("large.nii");
    let shape = [512, 512, 16, 9];
    let data = Array4::from_shape_fn(shape.f(), |(i, j, k, t)| ((i * 31 + j * 17 + k * 7 + t * 1009) % 65521) as i16);
    let times = FrameTimes::uniform(9, 0.0, 1.0, TimeSource::Caller).unwrap();
    let volume = Volume::new_4d(data, Geometry::identity(), times).unwrap();
    let mut options = WriteOptions::default();
    options.endian = Endian::Big; // and byte-swapped after the parallel read
    nifti::write_any(&AnyVolume::from(volume.clone()), &path, &options).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() > 64 << 20);
    let (back, _) = nifti::read_nifti(&path, &ReadOptions::default()).unwrap();
    let AnyVolume::I16(back) = back else { panic!("int16") };
    assert!(back.data() == volume.data(), "every voxel read back");
}
