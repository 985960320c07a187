//! The runtime against PyTorch 2.11 (the oracle): fixtures written by
//! `tests/fixtures/models/make_fixtures.py` — our U-Net with weights saved from PyTorch under
//! its state_dict names, and a TorchScript module — must give PyTorch's numbers. Plus the
//! integrity and round-trip guarantees of model folders.

use std::path::{Path, PathBuf};

use imhost_core::{ErrorKind, RunControl};
use imhost_models::manifest::{self, Manifest};
use imhost_models::unet::{Config, PerfusionUNet};
use imhost_models::{LoadOptions, PerfusionModel};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(name)
}

const SHAPE: [usize; 4] = [2, 4, 20, 28];

fn formula_input() -> Vec<f32> {
    let [n, t, h, w] = SHAPE;
    let mut x = Vec::with_capacity(n * t * h * w);
    for a in 0..n {
        for b in 0..t {
            for c in 0..h {
                for d in 0..w {
                    x.push((0.3 * c as f64 + 0.7 * d as f64 + b as f64 + a as f64).sin() as f32);
                }
            }
        }
    }
    x
}

fn expected(dir: &Path) -> Vec<f32> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    assert_eq!(v["output_shape"], serde_json::json!([2, 3, 20, 28]));
    v["output"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn cpu() -> LoadOptions {
    LoadOptions::new(Some("cpu".into()), imhost_models::Precision::F32)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn our_unet_with_pytorch_weights_gives_pytorchs_output() {
    let dir = fixture("unet-tiny");
    let model = PerfusionModel::load(&dir, &cpu()).unwrap();
    let y = model.predict_slices(&formula_input(), SHAPE, &RunControl::none()).unwrap();
    let want = expected(&dir);
    let scale = want.iter().map(|v| v.abs()).fold(0.0, f32::max);
    let err = max_abs_diff(&y, &want);
    assert!(err < 1e-4 * scale.max(1.0), "max |ours − PyTorch| = {err} (outputs up to {scale})");
}

#[test]
fn torchscript_module_gives_pytorchs_output() {
    let dir = fixture("torchscript-tiny");
    let model = PerfusionModel::load(&dir, &cpu()).unwrap();
    let y = model.predict_slices(&formula_input(), SHAPE, &RunControl::none()).unwrap();
    let err = max_abs_diff(&y, &expected(&dir));
    assert!(err < 1e-5, "max |ours − PyTorch| = {err}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_changed_weights_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("unet-tiny"), tmp.path());
    let weights = tmp.path().join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&weights, bytes).unwrap();
    let e = PerfusionModel::load(tmp.path(), &cpu()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Format);
    assert!(e.message().contains("sha256") && e.message().contains("does not match"), "{e}");
}

#[test]
fn bad_manifests_are_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("unet-tiny"), tmp.path());
    let good = Manifest::read(tmp.path()).unwrap();
    type Change = Box<dyn Fn(&mut Manifest)>;
    let cases: Vec<(Change, &str)> = vec![
        (Box::new(|m| m.architecture.name = "transformer".into()), "not known"),
        (Box::new(|m| m.weights.file = "../model.safetensors".into()), "plain file name"),
        (Box::new(|m| m.weights.sha256 = "xyz".into()), "64 hex digits"),
        (Box::new(|m| m.outputs.swap(0, 1)), "[cbv, cbf, ttp]"),
        (Box::new(|m| m.format = "imhost-model/9".into()), "reads"),
        (Box::new(|m| m.inputs.spec.time_points = 5), "contradicts"),
    ];
    for (change, expect) in cases {
        let mut m = good.clone();
        change(&mut m);
        m.write(tmp.path()).unwrap();
        let e = PerfusionModel::load(tmp.path(), &cpu()).unwrap_err();
        assert!(e.message().contains(expect), "expected {expect:?} in: {e}");
    }
    std::fs::write(tmp.path().join(manifest::FILE_NAME), "{ not json").unwrap();
    let e = PerfusionModel::load(tmp.path(), &cpu()).unwrap_err();
    assert!(e.message().contains("not a valid model manifest"), "{e}");
    let e = PerfusionModel::load(&tmp.path().join("missing"), &cpu()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
}

#[test]
fn weights_round_trip_bit_exact_and_wrong_input_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let cfg = Config { time_points: 4, base_width: 4, outputs: 3, batch_norm: true };
    let _net = PerfusionUNet::new(&vs.root(), &cfg).unwrap();
    let mut m = Manifest::read(&fixture("unet-tiny")).unwrap();
    imhost_models::package::save_unet(tmp.path(), &vs, &mut m).unwrap();
    assert_eq!(m.weights.sha256, manifest::sha256_file(&tmp.path().join("model.safetensors")).unwrap());
    let mut back = tch::nn::VarStore::new(tch::Device::Cpu);
    let _net2 = PerfusionUNet::new(&back.root(), &cfg).unwrap();
    back.load(tmp.path().join("model.safetensors")).unwrap();
    let (a, b) = (vs.variables(), back.variables());
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        let (x, y) =
            (Vec::<f32>::try_from(t.flatten(0, -1)).unwrap(), Vec::<f32>::try_from(b[name].flatten(0, -1)).unwrap());
        assert!(x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()), "{name} differs after the round trip");
    }
    // The saved folder loads, and a study with the wrong number of time points is refused.
    let model = PerfusionModel::load(tmp.path(), &cpu()).unwrap();
    let e = model.predict_slices(&vec![0.0; 5 * 32 * 32], [1, 5, 32, 32], &RunControl::none()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
    assert!(e.message().contains("takes 4 time points"), "{e}");
}

#[test]
fn batches_follow_the_memory_budget() {
    let mut options = cpu();
    options.batch_budget_bytes = Some(4 * 512 * 512 * (4 + 16 * 4) * 3);
    let model = PerfusionModel::load(&fixture("unet-tiny"), &options).unwrap();
    assert_eq!(model.batch_slices(512, 512, 16), 3);
    assert_eq!(model.batch_slices(500, 500, 16), 3, "padded to 512");
    assert_eq!(model.batch_slices(64, 64, 2), 2, "never more than the slices");
}
