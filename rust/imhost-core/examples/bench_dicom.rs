//! DICOM benchmark (BENCHMARKS.md "DICOM results"): read a 512×512×16×89 CT perfusion series of
//! 1424 instances from memory, and write every result of a perfusion run at that size — five
//! Parametric Maps (CBF, CBV, MTT, TTP, Tmax), the lesion, hypoperfusion and brain SEGs, the TID
//! 1500 report and a preview — against the NIfTI writer on the same maps.
//!
//!   cargo run --release -p imhost-core --example bench_dicom -- OUT_DIR [RUNS]
//!
//! OUT_DIR receives the written results and, for `benches/highdicom_pm.py`, the first frame's 16
//! source slices (`source/`) and the CBF map (`cbf.f32`, float32 in (k, j, i) order). Prints one
//! JSON object of timings (best of RUNS, default 3).

use std::path::PathBuf;
use std::time::Instant;

use imhost_core::io::dicom::results::{ResultOptions, ResultSource, model_results};
use imhost_core::io::dicom::{DicomReadOptions, read_dicom_buffers, write_dicom_series};
use imhost_core::registry::ModelOutput;
use imhost_core::registry::builtin::core_models;
use imhost_core::{AnyVolume, FrameTimes, Geometry, TimeSource, Volume};
use ndarray::{Array4, ShapeBuilder};

fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let out = f();
        best = best.min(t.elapsed().as_secs_f64());
        last = Some(out);
    }
    (best, last.expect("at least one run"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().expect("usage: bench_dicom OUT_DIR [RUNS]"));
    let runs: usize = args.next().map_or(3, |r| r.parse().expect("RUNS"));
    let (ni, nj, nk, nt) = (512, 512, 16, 89);
    std::fs::create_dir_all(&out).unwrap();
    // The source: a smooth head-sized pattern in HU, written as 1424 files, read into memory.
    let data = Array4::from_shape_fn((ni, nj, nk, nt).f(), |(i, j, k, t)| {
        let (x, y) = (i as f64 - 256.0, j as f64 - 256.0);
        let inside = x * x + y * y < 200.0 * 200.0;
        if inside { (35.0 + 20.0 * ((t as f64 - 30.0) / 8.0).cos().max(0.0) + (k as f64)) as i16 } else { -1000 }
    });
    let geometry = Geometry::axis_aligned([0.45, 0.45, 5.0], [-115.0, -115.0, 0.0]).unwrap();
    let times = FrameTimes::new((0..nt).map(|t| t as f64).collect(), TimeSource::Caller).unwrap();
    let study = Volume::from_parts(data, geometry, Some(times)).unwrap();
    let series_dir = out.join("series");
    if !series_dir.join("f088_s015.dcm").exists() {
        write_dicom_series(&study, &series_dir, "1.2.826.0.1.3680043.10.1").unwrap();
    }
    drop(study);
    let mut names: Vec<PathBuf> = std::fs::read_dir(&series_dir).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    let files: Vec<Vec<u8>> = names.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let buffers: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    let pixel_bytes = (ni * nj * nk * nt * 2) as f64;
    let file_bytes: usize = files.iter().map(Vec::len).sum();
    let (read_s, series) = best(runs, || read_dicom_buffers(&buffers, &DicomReadOptions::default()).unwrap());
    assert_eq!(series.volume.shape(), [ni, nj, nk, nt]);
    // The source slices of the first frame, for highdicom.
    let source_dir = out.join("source");
    std::fs::create_dir_all(&source_dir).unwrap();
    for k in 0..nk {
        let name = format!("f000_s{k:03}.dcm");
        std::fs::copy(series_dir.join(&name), source_dir.join(&name)).unwrap();
    }
    let source = ResultSource::from_series(&series).unwrap();
    drop(series);
    let instances = buffers.len();
    drop(buffers);
    drop(files);
    // A perfusion run's outputs at this size (values shaped like maps; the writer does not care).
    let map = |scale: f32| {
        let d =
            Array4::from_shape_fn((ni, nj, nk, 1).f(), |(i, j, k, _)| scale * ((i * 7 + j * 3 + k) % 97) as f32 / 97.0);
        Volume::from_parts(d, geometry, None).unwrap()
    };
    let labels = |modulo: usize| {
        let d = Array4::from_shape_fn((ni, nj, nk, 1).f(), |(i, j, _, _)| u8::from((i / 16 + j / 16) % modulo == 0));
        Volume::from_parts(d, geometry, None).unwrap()
    };
    let maps = [("cbf", map(80.0)), ("cbv", map(6.0)), ("mtt", map(12.0)), ("ttp", map(30.0)), ("tmax", map(15.0))];
    let mut lesions = labels(5);
    lesions.data_mut().zip_mut_with(labels(3).data(), |a, &b| *a = if *a == 1 { 1 } else { 2 * b });
    let mut volumes: Vec<(String, AnyVolume)> =
        maps.iter().map(|(n, v)| (n.to_string(), AnyVolume::F32(v.clone()))).collect();
    volumes.push(("lesions".into(), AnyVolume::U8(lesions)));
    volumes.push(("hypoperfusion".into(), AnyVolume::U8(labels(3))));
    volumes.push(("brain".into(), AnyVolume::U8(labels(1))));
    let output = ModelOutput {
        volumes,
        scores: vec![
            ("core_ml".into(), 21.5),
            ("hypoperfusion_ml".into(), 80.25),
            ("mismatch_ml".into(), 58.75),
            ("mismatch_ratio".into(), 3.73),
        ],
        report: serde_json::json!({"qc_flags": [], "readout": {"criteria": {"defuse3": {"met": true, "detail": "bench"}}}}),
        preview_png: None,
    };
    let models = core_models(None);
    let manifest = models.iter().find(|m| m.manifest().id == "perfusion-osvd").unwrap().manifest().clone();
    // A preview of the CLI's size.
    let mut canvas = imhost_core::preview::Canvas::new(1600, 900, [18, 18, 24]);
    canvas.put(10, 10, [255, 0, 0]);
    let png_path = out.join("preview.png");
    canvas.save_png(&png_path).unwrap();
    let png = std::fs::read(&png_path).unwrap();
    let mut options = ResultOptions::default();
    options.uid_seed = Some("bench".into());
    let (encode_s, results) = best(runs, || model_results(&output, &manifest, &source, Some(&png), &options).unwrap());
    let dicom_dir = out.join("dicom");
    let (write_s, ()) = best(runs, || results.write_to(&dicom_dir).unwrap());
    let dicom_bytes: usize = results.instances.iter().map(|r| r.bytes.len()).sum();
    let nifti_dir = out.join("nifti");
    std::fs::create_dir_all(&nifti_dir).unwrap();
    let (nifti_gz_s, ()) = best(runs, || {
        for (name, v) in &output.volumes {
            imhost_core::io::write_volume(v, &nifti_dir.join(format!("{name}.nii.gz"))).unwrap();
        }
    });
    let (nifti_s, ()) = best(runs, || {
        for (name, v) in &output.volumes {
            imhost_core::io::write_volume(v, &nifti_dir.join(format!("{name}.nii"))).unwrap();
        }
    });
    let (pm_s, _) = best(runs, || {
        let one = ModelOutput { volumes: vec![output.volumes[0].clone()], ..ModelOutput::default() };
        model_results(&one, &manifest, &source, None, &options).unwrap()
    });
    // The CBF map for highdicom, (k, j, i) order.
    let cbf = &maps[0].1;
    let mut raw = Vec::with_capacity(ni * nj * nk * 4);
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                raw.extend_from_slice(&cbf.data()[[i, j, k, 0]].to_le_bytes());
            }
        }
    }
    std::fs::write(out.join("cbf.f32"), raw).unwrap();
    println!(
        "{}",
        serde_json::json!({
            "runs": runs,
            "read_series_from_memory_s": read_s,
            "read_series_pixel_gb_per_s": pixel_bytes / read_s / 1e9,
            "series_instances": instances,
            "series_file_bytes": file_bytes,
            "write_all_results_encode_s": encode_s,
            "write_all_results_files_s": write_s,
            "dicom_instances": results.instances.len(),
            "dicom_bytes": dicom_bytes,
            "one_parametric_map_s": pm_s,
            "nifti_gz_all_volumes_s": nifti_gz_s,
            "nifti_all_volumes_s": nifti_s,
        })
    );
}
