//! MultiResUNet on nuclei images as users run it: `imhost phantom nuclei`, `imhost nuclei` on a
//! PNG and on a one-slice NIfTI, the registry model `multiresunet-nuclei` through `imhost run`,
//! the committed default weights against the phantom's truth, `imhost train multiresunet` at toy
//! size, and bad input.

use std::path::Path;
use std::process::{Command, Output};

use imhost_core::io::nifti::{WriteOptions, write_any};
use imhost_core::{AnyVolume, FrameTimes, Geometry, TimeSource, Volume};
use ndarray::{Array4, ShapeBuilder};
use serde_json::Value;

fn imhost(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imhost")).args(args).output().expect("run imhost")
}

fn ok(out: &Output) {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn assert_one_line_error(out: &Output, label: &str, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{label}: exit status, stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{label}: one line on stderr: {lines:?}");
    assert!(lines[0].starts_with("imhost: error: ") && lines[0].contains(needle), "{label}: {}", lines[0]);
}

/// Dice of two 0/non-0 pixel sets, by hand.
fn dice(a: &[bool], b: &[bool]) -> f64 {
    let tp = a.iter().zip(b).filter(|(x, y)| **x && **y).count() as f64;
    let n = a.iter().filter(|x| **x).count() as f64 + b.iter().filter(|x| **x).count() as f64;
    2.0 * tp / n
}

fn png_mask(path: &Path) -> Vec<bool> {
    let (_, _, rgb) = imhost_core::io::png::read_rgb(path).unwrap();
    rgb.chunks(3).map(|p| p[0] > 127).collect()
}

fn nifti_mask(path: &Path) -> Vec<bool> {
    let v = imhost_core::io::read_volume(path).unwrap();
    imhost_core::score::Mask::from_labels(&v.view(), None).unwrap().data().to_vec()
}

/// The committed default model segments held-out phantom images close to their truth, from a
/// PNG (colour) and from a one-slice NIfTI through the registry (grey), with the same pixels.
#[test]
fn the_default_model_finds_the_nuclei_of_phantom_images() {
    let dir = tempfile::tempdir().unwrap();
    let ph = dir.path().join("ph");
    ok(&imhost(&[
        "phantom",
        "nuclei",
        "--out",
        ph.to_str().unwrap(),
        "--count",
        "3",
        "--size",
        "160,128",
        "--seed",
        "71000",
    ]));
    let truth_json: Value = serde_json::from_str(&std::fs::read_to_string(ph.join("truth.json")).unwrap()).unwrap();
    assert_eq!(truth_json["images"].as_array().unwrap().len(), 3);
    for n in 0..3 {
        let name = format!("{n:03}");
        let out = dir.path().join(format!("png-{name}"));
        let run =
            imhost(&["nuclei", ph.join(format!("{name}.png")).to_str().unwrap(), "--out", out.to_str().unwrap(), "-q"]);
        ok(&run);
        let truth = png_mask(&ph.join(format!("{name}_mask.png")));
        let pred = png_mask(&out.join("mask.png"));
        assert_eq!(pred.len(), 160 * 128);
        let d = dice(&pred, &truth);
        assert!(d > 0.75, "image {name}: Dice {d:.3} against the phantom's truth");
        let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
        assert_eq!(report["research_use_only"], true);
        assert!(report["objects"].as_u64().unwrap() > 0);
        assert!(std::fs::read(out.join("preview.png")).unwrap().starts_with(b"\x89PNG"));
        // The registry model on the grey one-slice NIfTI.
        let run_dir = dir.path().join(format!("run-{name}"));
        let run = imhost(&[
            "run",
            "multiresunet-nuclei",
            "--input",
            ph.join(format!("{name}.nii.gz")).to_str().unwrap(),
            "--out",
            run_dir.to_str().unwrap(),
            "-q",
        ]);
        ok(&run);
        let pred = nifti_mask(&run_dir.join("mask.nii.gz"));
        let truth = nifti_mask(&ph.join(format!("{name}_mask.nii.gz")));
        let d = dice(&pred, &truth);
        assert!(d > 0.7, "image {name} through the registry (grey): Dice {d:.3}");
        let result: Value =
            serde_json::from_str(&std::fs::read_to_string(run_dir.join("result.json")).unwrap()).unwrap();
        assert!(result.to_string().contains("foreground_fraction"), "{result}");
    }
    let list = imhost(&["models", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("multiresunet-nuclei"));
}

fn write_f32(path: &Path, shape: (usize, usize, usize, usize), f: impl Fn(usize, usize) -> f32) {
    let mut data = Array4::<f32>::zeros(shape.f());
    for ((i, j, _, _), v) in data.indexed_iter_mut() {
        *v = f(i, j);
    }
    let g = Geometry::identity();
    let times = (shape.3 > 1).then(|| FrameTimes::uniform(shape.3, 0.0, 1.0, TimeSource::Caller).unwrap());
    write_any(&AnyVolume::from(Volume::from_parts(data, g, times).unwrap()), path, &WriteOptions::default()).unwrap();
}

#[test]
fn bad_input_gets_one_line_and_no_mask() {
    let dir = tempfile::tempdir().unwrap();
    let four_d = dir.path().join("4d.nii.gz");
    write_f32(&four_d, (32, 32, 1, 3), |i, j| (i + j) as f32);
    let nan = dir.path().join("nan.nii.gz");
    write_f32(&nan, (32, 32, 1, 1), |i, _| if i == 3 { f32::NAN } else { 1.0 });
    let not_png = dir.path().join("x.png");
    std::fs::write(&not_png, b"\x89PNG\r\n\x1a\nbroken").unwrap();
    for (label, input, needle) in
        [("4-D", &four_d, "4-D series"), ("NaN", &nan, "NaN"), ("broken PNG", &not_png, "PNG")]
    {
        let out = dir.path().join(format!("out-{}", label.replace(' ', "-")));
        let run = imhost(&["nuclei", input.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert_one_line_error(&run, label, needle);
        assert!(!out.join("mask.nii.gz").exists() && !out.join("mask.png").exists(), "{label}: no mask left");
    }
    let good = dir.path().join("good.nii.gz");
    write_f32(&good, (32, 32, 1, 1), |i, _| i as f32);
    let run = imhost(&[
        "nuclei",
        good.to_str().unwrap(),
        "--out",
        dir.path().join("t").to_str().unwrap(),
        "--threshold",
        "1.5",
    ]);
    assert_one_line_error(&run, "threshold", "--threshold");
    let run = imhost(&[
        "run",
        "multiresunet-nuclei",
        "--input",
        four_d.to_str().unwrap(),
        "--out",
        dir.path().join("r").to_str().unwrap(),
    ]);
    assert_one_line_error(&run, "4-D through the registry", "must be 3-D");
}

/// `imhost train multiresunet` end to end at toy size: a folder whose manifest verifies, that
/// `imhost nuclei --model` loads and runs, and whose tampered weights are refused.
#[test]
fn training_writes_a_model_the_command_runs() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let args = ["train", "multiresunet", "--out", model.to_str().unwrap(), "--train", "4", "--validation", "2"];
    ok(&imhost(&[&args[..], &["--size", "32", "--epochs", "1", "--width", "4", "--batch", "2", "-q"]].concat()));
    let m: Value = serde_json::from_str(&std::fs::read_to_string(model.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["task"], "segmentation-2d");
    assert_eq!(m["model_id"], "multiresunet-nuclei");
    assert_eq!(m["architecture"]["config"]["base_width"], 4);
    assert!(m["training"]["data"].as_str().unwrap().starts_with("PHANTOMS ONLY"));
    let ph = dir.path().join("ph");
    ok(&imhost(&["phantom", "nuclei", "--out", ph.to_str().unwrap(), "--size", "40,24"]));
    let out = dir.path().join("out");
    let img = ph.join("000.png");
    ok(&imhost(&[
        "nuclei",
        img.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "-q",
    ]));
    let (w, h, _) = imhost_core::io::png::read_rgb(&out.join("mask.png")).unwrap();
    assert_eq!((w, h), (40, 24), "the mask has the image's size (padding to 16 undone)");
    let weights = model.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&weights, bytes).unwrap();
    let run = imhost(&[
        "nuclei",
        img.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--out",
        dir.path().join("o2").to_str().unwrap(),
    ]);
    assert_one_line_error(&run, "tampered", "sha256");
}
