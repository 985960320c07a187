//! The `imhost` command as users run it: results checked against a naive maximum, every bad
//! input answered with exit status 1 and exactly one line on stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use imhost_core::io::nifti::{ReadOptions, WriteOptions, read_nifti, write_any};
use imhost_core::{AnyVolume, FrameTimes, Geometry, TimeSource, Volume};
use ndarray::{Array4, ShapeBuilder};

fn imhost(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imhost")).args(args).output().expect("run imhost")
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr).lines().map(str::to_owned).collect()
}

fn must_fail_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/must-fail")
}

fn assert_one_line_error(out: &Output, label: &str) {
    assert_eq!(out.status.code(), Some(1), "{label}: exit status, stderr: {:?}", stderr_lines(out));
    let lines = stderr_lines(out);
    assert_eq!(lines.len(), 1, "{label}: exactly one line on stderr: {lines:?}");
    assert!(lines[0].starts_with("imhost: error: "), "{label}: {}", lines[0]);
}

#[test]
fn mip_of_a_file_equals_the_naive_maximum_and_keeps_geometry() {
    let dir = tempfile::tempdir().unwrap();
    let (ni, nj, nk, nt) = (9, 8, 3, 6);
    let values: Vec<f32> = (0..ni * nj * nk * nt).map(|n| ((n * 7919) % 1000) as f32 - 500.0).collect();
    let data = Array4::from_shape_vec((ni, nj, nk, nt).f(), values).unwrap();
    let geometry = Geometry::axis_aligned([0.7, 0.7, 5.0], [-30.0, 20.0, 10.0]).unwrap();
    let times = FrameTimes::new(vec![0.0, 1.0, 2.0, 3.0, 5.0, 8.0], TimeSource::Caller).unwrap();
    let input = Volume::new_4d(data.clone(), geometry, times).unwrap();
    let in_path = dir.path().join("in.nii.gz");
    write_any(&AnyVolume::from(input), &in_path, &WriteOptions::default()).unwrap();

    let out_path = dir.path().join("out.nii");
    let png = dir.path().join("mip.png");
    let out = imhost(&[
        "mip",
        in_path.to_str().unwrap(),
        "--out",
        out_path.to_str().unwrap(),
        "--preview",
        png.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{:?}", stderr_lines(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("temporal MIP of 6 frames (0.0–8.0 s)"));
    assert!(std::fs::metadata(&png).unwrap().len() > 1000, "a preview PNG was written");

    let (result, _) = read_nifti(&out_path, &ReadOptions::default()).unwrap();
    let AnyVolume::F32(mip) = result else { panic!("f32 in, f32 out") };
    assert!(!mip.is_4d());
    // NIfTI-1 stores spacing as f32 (0.7 → 0.69999999).
    let (a, b) = (mip.geometry().ijk_to_lps(), geometry.ijk_to_lps());
    for r in 0..3 {
        for c in 0..4 {
            assert!((a[r][c] - b[r][c]).abs() < 1e-6, "geometry kept: {a:?} vs {b:?}");
        }
    }
    for i in 0..ni {
        for j in 0..nj {
            for k in 0..nk {
                let naive = (0..nt).map(|t| data[[i, j, k, t]]).fold(f32::MIN, f32::max);
                assert_eq!(mip.data()[[i, j, k, 0]], naive);
            }
        }
    }
}

#[test]
fn every_must_fail_file_gives_one_line_and_status_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.nii");
    let mut count = 0;
    for entry in std::fs::read_dir(must_fail_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.ends_with(".nii") || name.ends_with(".nii.gz")) {
            continue;
        }
        for args in
            [vec!["mip", path.to_str().unwrap(), "--out", out.to_str().unwrap()], vec!["info", path.to_str().unwrap()]]
        {
            let result = imhost(&args);
            assert_one_line_error(&result, &name);
            assert!(stderr_lines(&result)[0].contains(&name), "{name}: the line names the file");
        }
        count += 1;
    }
    assert!(count >= 28, "only {count} must-fail files");
    assert!(!out.exists(), "no output from failed runs");
}

#[test]
fn usage_mistakes_are_caught_before_work() {
    let dir = tempfile::tempdir().unwrap();
    let missing = imhost(&["mip", "/no/such/file.nii.gz", "--out", dir.path().join("a.nii").to_str().unwrap()]);
    assert_one_line_error(&missing, "missing input");
    assert!(stderr_lines(&missing)[0].contains("cannot open file"));
    assert_eq!(stderr_lines(&missing)[0].matches("/no/such/file.nii.gz").count(), 1, "the path said once");
    let wrong_ext = imhost(&["mip", "/no/such/file.nii.gz", "--out", "mip.png"]);
    assert_one_line_error(&wrong_ext, "bad output name");
    assert!(stderr_lines(&wrong_ext)[0].contains("must end in .nii or .nii.gz"));

    let three_d = dir.path().join("3d.nii");
    let v = Volume::<u8>::filled([4, 4, 4, 1], 1, Geometry::identity(), None).unwrap();
    write_any(&AnyVolume::from(v), &three_d, &WriteOptions::default()).unwrap();
    let result = imhost(&["mip", three_d.to_str().unwrap(), "--out", dir.path().join("o.nii").to_str().unwrap()]);
    assert_one_line_error(&result, "3-D input");
    assert!(stderr_lines(&result)[0].contains("needs a 4-D image"));

    let usage = imhost(&["mip"]);
    assert_eq!(usage.status.code(), Some(2), "usage errors exit with 2");
}

#[test]
fn a_lying_header_is_refused_without_allocating_what_it_claims() {
    // 746 MB claimed over 100 bytes of gzip data, read under a 700 MB address-space limit: the
    // binary's libraries (LibTorch) take ≈ 400 MB of it at start, so an up-front allocation of
    // the claimed size would abort the process. The memory budget reads RLIMIT_AS and refuses
    // before reading a byte of voxels.
    let file = must_fail_dir().join("claims-more-than-file.nii.gz");
    let script = format!("ulimit -v 700000 && exec '{}' info '{}'", env!("CARGO_BIN_EXE_imhost"), file.display());
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    assert_one_line_error(&out, "claims-more-than-file.nii.gz under ulimit");
    let line = &stderr_lines(&out)[0];
    assert!(line.contains("needs 712 MiB") && line.contains("this process may allocate"), "{line}");
}

#[test]
fn the_demo_checks_itself_and_writes_its_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let out = imhost(&["demo", "--quiet", "--out", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{:?}", stderr_lines(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("every voxel equals the closed-form truth"), "{stdout}");
    assert!(stdout.contains("research use only"));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["all_voxels_match_truth"], true);
    assert_eq!(summary["input"]["frame_times_from"], "sidecar");
    for name in ["ctp.nii.gz", "ctp.json", "mip.nii.gz", "preview.png"] {
        assert!(dir.path().join(name).is_file(), "{name}");
    }
    let info = imhost(&["info", "--json", dir.path().join("mip.nii.gz").to_str().unwrap()]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["shape"], serde_json::json!([128, 128, 16, 1]));
    assert_eq!(info["value_range"], serde_json::json!([-1000.0, 1000.0]));
}

#[test]
fn phantom_then_perfusion_writes_every_output_in_the_input_geometry() {
    let dir = tempfile::tempdir().unwrap();
    let ph = dir.path().join("phantom");
    let out = imhost(&[
        "phantom",
        "ctp",
        "--kind",
        "anatomical",
        "--size",
        "64,64,4",
        "--out",
        ph.to_str().unwrap(),
        "--seed",
        "3",
    ]);
    assert!(out.status.success(), "{:?}", stderr_lines(&out));
    for f in [
        "ctp.nii.gz",
        "truth/cbf.nii.gz",
        "truth/tmax.nii.gz",
        "truth/core.nii.gz",
        "truth/hypoperfusion.nii.gz",
        "truth/dwi.nii.gz",
        "truth/lesion.nii.gz",
        "truth/phantom.json",
    ] {
        assert!(ph.join(f).exists(), "{f}");
    }
    let res = dir.path().join("result");
    let out = imhost(&[
        "perfusion",
        ph.join("ctp.nii.gz").to_str().unwrap(),
        "--out",
        res.to_str().unwrap(),
        "--age",
        "72",
        "--nihss",
        "14",
        "--truth",
        ph.join("truth").to_str().unwrap(),
        "-q",
    ]);
    assert!(out.status.success(), "{:?}", stderr_lines(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("research use only") && stdout.contains("core Dice"), "{stdout}");
    let (input, _) = read_nifti(&ph.join("ctp.nii.gz"), &ReadOptions::default()).unwrap();
    for f in ["cbf", "cbv", "mtt", "ttp", "tmax"] {
        let (map, _) = read_nifti(&res.join(format!("{f}.nii.gz")), &ReadOptions::default()).unwrap();
        assert!(matches!(map, AnyVolume::F32(_)), "{f} is float32");
        assert_eq!(map.shape()[..3], input.shape()[..3]);
        assert_eq!(map.geometry(), input.geometry(), "{f} keeps the input geometry");
    }
    for f in ["core", "hypoperfusion"] {
        let (mask, _) = read_nifti(&res.join(format!("{f}.nii.gz")), &ReadOptions::default()).unwrap();
        let AnyVolume::U8(m) = mask else { panic!("{f} is not uint8") };
        assert!(m.data().iter().all(|&v| v <= 1));
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(res.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["research_use_only"], true);
    assert_eq!(report["method"], "osvd");
    assert!(report["readout"]["criteria"]["dawn"]["evaluated"].as_bool().unwrap());
    assert!(report["aif"]["curve_hu"].as_array().unwrap().len() > 10);
    assert!(report["timings"].as_array().unwrap().len() >= 5);
    let png = std::fs::read(res.join("preview.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let cmp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(res.join("truth_comparison.json")).unwrap()).unwrap();
    assert!(cmp["hypoperfusion_dice"].as_f64().unwrap() > 0.8, "{cmp}");
}

#[test]
fn the_filter_widens_on_a_noisy_study_unless_it_is_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let ph = dir.path().join("ph");
    let phantom = ["phantom", "ctp", "--size", "64,64,4", "--noise", "12", "--out", ph.to_str().unwrap(), "-q"];
    assert!(imhost(&phantom).status.success());
    let input = ph.join("ctp.nii.gz");
    let sigma = |extra: &[&str]| -> (f64, f64) {
        let out = dir.path().join(format!("out{}", extra.len()));
        let mut args = vec!["perfusion", input.to_str().unwrap(), "--out", out.to_str().unwrap(), "-q"];
        args.extend_from_slice(extra);
        let run = imhost(&args);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
        let pre = &report["preprocessing"];
        (pre["baseline_noise_hu"].as_f64().unwrap(), pre["bilateral"]["sigma_spatial_mm"].as_f64().unwrap())
    };
    // 12 HU at 1 s: σ 2 mm·√(12/5).
    let (noise, widened) = sigma(&["--filter-sigma-mm", "2"]);
    assert!((noise / 12.0 - 1.0).abs() < 0.05, "measured {noise} HU");
    assert!((widened - 2.0 * (noise / 5.0).sqrt()).abs() < 1e-9, "σ {widened}");
    let (_, fixed) = sigma(&["--filter-sigma-mm", "2", "--fixed-filter"]);
    assert_eq!(fixed, 2.0);
}

#[test]
fn perfusion_bad_input_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let three_d = dir.path().join("3d.nii");
    let v = Volume::new_3d(ndarray::Array3::<i16>::zeros((4, 4, 4).f()), Geometry::default()).unwrap();
    write_any(&AnyVolume::from(v), &three_d, &WriteOptions::default()).unwrap();
    let o = dir.path().join("o");
    assert_one_line_error(
        &imhost(&["perfusion", three_d.to_str().unwrap(), "--out", o.to_str().unwrap()]),
        "3-D input",
    );
    let ph = dir.path().join("p");
    assert!(imhost(&["phantom", "ctp", "--size", "40,40,2", "--out", ph.to_str().unwrap(), "-q"]).status.success());
    let ctp = ph.join("ctp.nii.gz");
    assert_one_line_error(
        &imhost(&["perfusion", ctp.to_str().unwrap(), "--out", o.to_str().unwrap(), "--method", "magic"]),
        "method",
    );
    assert_one_line_error(
        &imhost(&["perfusion", ctp.to_str().unwrap(), "--out", o.to_str().unwrap(), "--aif", "400,1,1"]),
        "aif outside",
    );
    assert_one_line_error(
        &imhost(&["perfusion", ctp.to_str().unwrap(), "--out", o.to_str().unwrap(), "--aif", "1,2"]),
        "aif syntax",
    );
    assert_one_line_error(
        &imhost(&["perfusion", ctp.to_str().unwrap(), "--out", o.to_str().unwrap(), "--age=-3"]),
        "age",
    );
    assert_one_line_error(
        &imhost(&["phantom", "ctp", "--kind", "kudo", "--motion", "--out", o.to_str().unwrap()]),
        "kudo motion",
    );
    assert_one_line_error(&imhost(&["phantom", "ctp", "--noise=-1", "--out", o.to_str().unwrap()]), "noise");
}

#[test]
fn motion_is_corrected_through_itk() {
    let dir = tempfile::tempdir().unwrap();
    let ph = dir.path().join("p");
    let ok = imhost(&["phantom", "ctp", "--motion", "--size", "80,80,8", "--out", ph.to_str().unwrap(), "-q"]);
    assert!(ok.status.success(), "{:?}", stderr_lines(&ok));
    let run = |name: &str, extra: &[&str]| -> serde_json::Value {
        let res = dir.path().join(name);
        let (ctp, truth) = (ph.join("ctp.nii.gz"), ph.join("truth"));
        let mut args = vec![
            "perfusion",
            ctp.to_str().unwrap(),
            "--out",
            res.to_str().unwrap(),
            "--truth",
            truth.to_str().unwrap(),
            "-q",
        ];
        args.extend_from_slice(extra);
        let out = imhost(&args);
        assert!(out.status.success(), "{:?}", stderr_lines(&out));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(res.join("report.json")).unwrap()).unwrap();
        let cmp: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(res.join("truth_comparison.json")).unwrap()).unwrap();
        serde_json::json!({"report": report, "cmp": cmp})
    };
    let corrected = run("corrected", &[]);
    let motion = &corrected["report"]["motion"];
    assert_eq!(motion["corrected"], true, "{motion}");
    assert!(motion["backend"].as_str().unwrap().contains("ITK"));
    assert!(corrected["report"]["qc_flags"].as_array().unwrap().is_empty(), "{}", corrected["report"]["qc_flags"]);
    assert!(corrected["cmp"]["hypoperfusion_dice"].as_f64().unwrap() > 0.85, "{}", corrected["cmp"]);
    let uncorrected = run("uncorrected", &["--no-motion-correction"]);
    let flags = uncorrected["report"]["qc_flags"].as_array().unwrap();
    assert!(flags.iter().any(|f| f["flag"] == "too_much_motion"), "{flags:?}");
}

#[test]
fn info_reads_a_dicom_folder_as_the_other_commands_do() {
    let dir = tempfile::tempdir().unwrap();
    let ph = dir.path().join("phantom");
    let out = imhost(&["phantom", "ctp", "--out", ph.to_str().unwrap(), "--dicom", "--size", "32,32,3", "-q"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json = |path: &Path| -> serde_json::Value {
        let out = imhost(&["info", "--json", path.to_str().unwrap()]);
        assert!(out.status.success(), "info {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let (dicom, nifti) = (json(&ph.join("dicom")), json(&ph.join("ctp.nii.gz")));
    assert_eq!(dicom["format"], "DICOM");
    let frames = nifti["shape"][3].as_u64().unwrap();
    assert_eq!(dicom["instances"].as_u64(), Some(3 * frames), "{dicom}");
    // The same study either way: size, grid and values (the NIfTI copy is what DICOM holds).
    for key in ["shape", "value_range"] {
        assert_eq!(dicom[key], nifti[key], "{key}");
    }
    for key in ["spacing_mm", "origin_lps_mm"] {
        let (a, b) = (dicom[key].as_array().unwrap(), nifti[key].as_array().unwrap());
        assert!(
            a.iter().zip(b).all(|(x, y)| (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-4),
            "{key}: {a:?} vs {b:?}"
        );
    }
    // A folder without DICOM files: one line, status 1.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_one_line_error(&imhost(&["info", empty.to_str().unwrap()]), "an empty folder");
}

#[test]
fn perfusion_curves_from_csv_and_json_against_analytic_curves() {
    let dir = tempfile::tempdir().unwrap();
    // A gamma-variate input and two tissue curves by quadrature: CBF 60 ml/100 ml/min, box MTT 4 s
    // (CBV 4 ml/100 ml), the second delayed by 3 s.
    let aif = |t: f64| {
        let s = t - 10.0;
        if s <= 0.0 { 0.0 } else { 400.0 * (s / 8.0).powi(3) * (3.0 * (1.0 - s / 8.0)).exp() }
    };
    let times: Vec<f64> = (0..70).map(f64::from).collect();
    let tissue = |delay: f64| -> Vec<f64> {
        let h = 0.01;
        times
            .iter()
            .map(|&t| {
                let steps = ((t - delay).max(0.0) / h) as usize;
                (0..steps).filter(|&m| t - delay - m as f64 * h < 4.0).map(|m| aif(m as f64 * h)).sum::<f64>()
                    * h
                    * 0.01
            })
            .collect()
    };
    let (a, c1, c2) = (times.iter().map(|&t| aif(t)).collect::<Vec<_>>(), tissue(0.0), tissue(3.0));
    let aif_csv = dir.path().join("aif.csv");
    std::fs::write(&aif_csv, format!("aif\n{}\n", a.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("\n")))
        .unwrap();
    let tissue_csv = dir.path().join("tissue.csv");
    let rows: Vec<String> = c1.iter().zip(&c2).map(|(x, y)| format!("{x},{y}")).collect();
    std::fs::write(&tissue_csv, format!("# two curves\ngrey,delayed\n{}\n", rows.join("\n"))).unwrap();
    let tissue_json = dir.path().join("tissue.json");
    std::fs::write(&tissue_json, serde_json::json!({"grey": c1, "delayed": c2}).to_string()).unwrap();
    let run = |tissue: &Path, extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "perfusion-curves",
            "--aif",
            aif_csv.to_str().unwrap(),
            "--tissue",
            tissue.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = imhost(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let csv = run(&tissue_csv, &["--interval", "1", "--no-constants"]);
    assert_eq!(csv["schema"], "imhost-perfusion-curves/1");
    let curve = |r: &serde_json::Value, name: &str, key: &str| -> f64 {
        r["curves"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap()[key].as_f64().unwrap()
    };
    // |Δ| ≤ atol + rtol·ref: CBV 4 within 0.05 + 3 %; oSVD's CBF 60 within 30 % (the SVD family
    // underestimates a box); the 3 s delay within 0.3 s.
    for name in ["grey", "delayed"] {
        assert!((curve(&csv, name, "cbv") - 4.0).abs() <= 0.05 + 0.03 * 4.0, "{csv}");
        assert!((curve(&csv, name, "cbf") - 60.0).abs() <= 0.3 * 60.0, "{csv}");
    }
    assert!((curve(&csv, "delayed", "delay") - curve(&csv, "grey", "delay") - 3.0).abs() <= 0.3, "{csv}");
    // JSON input, explicit times: the same numbers; the constants scale CBF by k_H/ρ.
    let times_json = dir.path().join("times.json");
    std::fs::write(&times_json, serde_json::json!(times).to_string()).unwrap();
    let json = run(&tissue_json, &["--times", times_json.to_str().unwrap(), "--no-constants"]);
    assert_eq!(curve(&json, "grey", "cbf"), curve(&csv, "grey", "cbf"));
    let with = run(&tissue_json, &["--interval", "1"]);
    let ratio = curve(&with, "grey", "cbf") / curve(&csv, "grey", "cbf");
    assert!((ratio - (0.55 / 0.75) / 1.05).abs() < 1e-6, "k_H/ρ: {ratio}");
    // Bad input: one line, status 1, no numbers printed.
    let short = dir.path().join("short.csv");
    std::fs::write(&short, "1\n2\n3\n4\n5\n").unwrap();
    let flat = dir.path().join("flat.csv");
    std::fs::write(&flat, "5\n".repeat(70)).unwrap();
    let nan = dir.path().join("nan.csv");
    std::fs::write(&nan, format!("{}\nNaN\n", rows[..69].join("\n"))).unwrap();
    let backwards = dir.path().join("backwards.json");
    std::fs::write(
        &backwards,
        serde_json::json!((0..70).map(|m| if m == 9 { 3.0 } else { f64::from(m) }).collect::<Vec<_>>()).to_string(),
    )
    .unwrap();
    let base = ["perfusion-curves", "--aif", aif_csv.to_str().unwrap()];
    for (label, args) in [
        ("curves of another length", vec!["--tissue", short.to_str().unwrap(), "--interval", "1"]),
        ("a sample that is not a number", vec!["--tissue", nan.to_str().unwrap(), "--interval", "1"]),
        ("times that go back", vec!["--tissue", tissue_csv.to_str().unwrap(), "--times", backwards.to_str().unwrap()]),
        ("an unknown method", vec!["--tissue", tissue_csv.to_str().unwrap(), "--interval", "1", "--method", "magic"]),
    ] {
        let mut all = base.to_vec();
        all.extend(args);
        let out = imhost(&all);
        assert_one_line_error(&out, label);
        assert!(out.stdout.is_empty(), "{label}: printed {}", String::from_utf8_lossy(&out.stdout));
    }
    let out = imhost(&[
        "perfusion-curves",
        "--aif",
        flat.to_str().unwrap(),
        "--tissue",
        tissue_csv.to_str().unwrap(),
        "--interval",
        "1",
    ]);
    assert_one_line_error(&out, "an input without a bolus");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no bolus"));
}

/// `imhost phantom ctp --isles`: an ISLES-like study drawn from the seed, with its DWI and
/// lesion truth; the protocol flags it draws itself are usage errors beside it.
#[test]
fn an_isles_like_study_with_its_dwi() {
    let dir = tempfile::tempdir().unwrap();
    let ph = dir.path().join("isles");
    let out = imhost(&["phantom", "ctp", "--isles", "--seed", "11", "--out", ph.to_str().unwrap()]);
    assert!(out.status.success(), "{:?}", stderr_lines(&out));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ph.join("truth/phantom.json")).unwrap()).unwrap();
    let shape: Vec<u64> = meta["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(&shape[..2], &[256, 256]);
    assert!((2..=22).contains(&shape[2]) && (43..=64).contains(&shape[3]), "{shape:?}");
    let dz = meta["spacing_mm"][2].as_f64().unwrap();
    assert!((4.0 - 1e-9..=12.0 + 1e-9).contains(&dz), "{dz}");
    assert_eq!(meta["isles_protocol"], true);
    for f in ["dwi.nii.gz", "lesion.nii.gz", "core.nii.gz"] {
        assert!(ph.join("truth").join(f).exists(), "{f}");
    }
    let bad =
        imhost(&["phantom", "ctp", "--isles", "--size", "64,64,4", "--out", dir.path().join("b").to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2), "{:?}", stderr_lines(&bad));
}
