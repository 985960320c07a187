//! The registry as hosts open it: built-ins, the perfusion CNN folder and a TorchScript
//! package (made by PyTorch 2.11, tests/fixtures/packages/make_package.py) run with the
//! pre/post-processing its manifest declares; expected values computed here by hand. Every test
//! runs twice: with the models in this process (the command) and in `imhost-model-worker` (every
//! host of libimhost.so, which does not load LibTorch).

use std::path::{Path, PathBuf};

use imhost_core::{AnyVolume, Geometry, RunControl, Volume};
use imhost_registry::{RegistryOptions, open};
use ndarray::Array3;
use serde_json::Map;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Held by every test of this file: one of them points `IMHOST_MODEL_WORKER` elsewhere for a
/// moment, and no other thread may read the environment meanwhile.
static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

thread_local! {
    static IN_PROCESS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn options(paths: Vec<PathBuf>) -> RegistryOptions {
    let in_process =
        IN_PROCESS.get().then_some(imhost_models::packages::open_in_process as imhost_registry::InProcessOpener);
    RegistryOptions { paths, device: Some("cpu".into()), in_process, ..Default::default() }
}

/// `test` with the models in this process and then in their worker.
macro_rules! both {
    ($name:ident, $in_process:ident, $worker:ident) => {
        #[test]
        fn $in_process() {
            let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
            IN_PROCESS.set(true);
            $name();
        }
        #[test]
        fn $worker() {
            let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
            IN_PROCESS.set(false);
            $name();
        }
    };
}

both!(listed, builtins_cnn_folder_and_torchscript_package_are_listed, listed_with_the_worker);
both!(processing, torchscript_package_applies_its_declared_pre_and_post_processing, processing_in_the_worker);
both!(changed_weights, torchscript_package_with_changed_weights_is_refused, changed_weights_refused_by_the_worker);
both!(trust, package_files_writable_by_others_are_refused_each_one, trust_rules_in_the_worker);

fn listed() {
    let r = open(&options(vec![root().join("tests/fixtures/packages/ts-lesion"), root().join("models/perfusion-cnn")]));
    assert!(r.problems().is_empty(), "{:?}", r.problems());
    let ids = r.ids();
    for id in [
        "mip",
        "perfusion-ssvd",
        "perfusion-bsvd",
        "perfusion-osvd",
        "perfusion-tikhonov",
        "perfusion-nlr",
        "perfusion-cnn",
        "test.ts-lesion",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    let cnn = r.get("perfusion-cnn").unwrap().manifest();
    assert!(cnn.output("tmax").unwrap().optional);
    assert_eq!(cnn.extra["network"]["id"], "perfusion-cnn-phantom");
    let listed = r.list_json();
    assert!(listed["models"].as_array().unwrap().iter().all(|m| m["research_use_only"] == true));
}

/// Piecewise-constant test image: 4×4×1 blocks on 1×1×2 mm voxels, values −20…139 HU.
fn block_image() -> Volume<f32> {
    let g = Geometry { spacing: [1.0, 1.0, 2.0], origin: [10.0, -5.0, 3.0], ..Geometry::identity() };
    let data = Array3::from_shape_fn((16, 12, 3), |(i, j, k)| ((i / 4 * 37 + j / 4 * 53 + k * 11) % 160) as f32 - 20.0);
    Volume::new_3d(data, g).unwrap()
}

fn processing() {
    let r = open(&options(vec![root().join("tests/fixtures/packages/ts-lesion")]));
    let source = r.get("test.ts-lesion").unwrap().manifest().source.clone().unwrap();
    assert_eq!(source.isolated, !IN_PROCESS.get(), "where the package runs");
    let x = block_image();
    let out = r.run("test.ts-lesion", &[x.view().into()], &Map::new(), &RunControl::none()).unwrap();
    let AnyVolume::U8(lesion) = out.volume("lesion").unwrap() else { panic!("u8 label map") };
    let AnyVolume::F32(intensity) = out.volume("intensity").unwrap() else { panic!("f32 map") };
    let AnyVolume::F32(probability) = out.volume("probability").unwrap() else { panic!("f32 map") };
    assert_eq!(lesion.shape(), x.shape());
    assert_eq!(lesion.geometry(), x.geometry());
    let mut checked = 0;
    for ((i, j, k), _) in Array3::<u8>::zeros((16, 12, 3)).indexed_iter() {
        // Voxels 1 and 2 of every 4-voxel block are untouched by the 1 → 2 → 1 mm resampling.
        if !(1..=2).contains(&(i % 4)) || !(1..=2).contains(&(j % 4)) {
            continue;
        }
        let hu = f64::from(x.data()[[i, j, k, 0]]);
        let xn = hu.clamp(0.0, 100.0) / 100.0;
        assert!((f64::from(intensity.data()[[i, j, k, 0]]) - xn).abs() < 1e-5, "intensity at {i},{j},{k}");
        let p = 1.0 / (1.0 + (-16.0 * (xn - 0.5)).exp());
        assert!((f64::from(probability.data()[[i, j, k, 0]]) - p).abs() < 1e-5, "probability at {i},{j},{k}");
        if (hu - 50.0).abs() > 1.0 {
            assert_eq!(lesion.data()[[i, j, k, 0]], u8::from(hu > 50.0), "lesion at {i},{j},{k} ({hu} HU)");
        }
        checked += 1;
    }
    assert_eq!(checked, 4 * 3 * 4 * 3);
    let n = lesion.data().iter().filter(|&&v| v == 1).count();
    assert!(n > 0 && n < lesion.data().len());
    assert!((out.score("lesion_ml").unwrap() - n as f64 * 0.002).abs() < 1e-12);
}

fn changed_weights() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("ts-lesion");
    std::fs::create_dir(&pkg).unwrap();
    let src = root().join("tests/fixtures/packages/ts-lesion");
    std::fs::copy(src.join("manifest.json"), pkg.join("manifest.json")).unwrap();
    let mut weights = std::fs::read(src.join("model.pt")).unwrap();
    let last = weights.len() - 1;
    weights[last] ^= 1;
    std::fs::write(pkg.join("model.pt"), weights).unwrap();
    let r = open(&options(vec![pkg]));
    let x = block_image();
    let e = r.run("test.ts-lesion", &[x.view().into()], &Map::new(), &RunControl::none()).unwrap_err();
    assert!(e.message().contains("sha256"), "{e}");
    // A package whose manifest has no runtime section is a load problem, not a crash.
    let bad = dir.path().join("no-runtime");
    std::fs::create_dir(&bad).unwrap();
    let text = std::fs::read_to_string(src.join("manifest.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_object_mut().unwrap().remove("runtime");
    v["id"] = "test.no-runtime".into();
    std::fs::write(bad.join("manifest.json"), v.to_string()).unwrap();
    let r = open(&options(vec![bad]));
    assert!(r.get("test.no-runtime").is_none());
    assert!(r.problems()[0].message.contains("needs a \"runtime\" section"), "{:?}", r.problems());
}

fn trust() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    let src = root().join("tests/fixtures/packages/ts-lesion");
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("ts-lesion");
    std::fs::create_dir(&pkg).unwrap();
    mode(&pkg, 0o755);
    for f in ["manifest.json", "model.pt"] {
        std::fs::copy(src.join(f), pkg.join(f)).unwrap();
        mode(&pkg.join(f), 0o644);
    }
    let x = block_image();
    let run = |r: &imhost_core::registry::Registry| {
        r.run("test.ts-lesion", &[x.view().into()], &Map::new(), &RunControl::none()).map(|_| ())
    };
    assert!(run(&open(&options(vec![pkg.clone()]))).is_ok(), "the package as shipped runs");
    // Weights anyone may replace: the run is refused (the check is on the file read, at load).
    mode(&pkg.join("model.pt"), 0o666);
    let e = run(&open(&options(vec![pkg.clone()]))).unwrap_err();
    assert_eq!(e.kind(), imhost_core::ErrorKind::Untrusted, "{e}");
    assert!(e.message().contains("model.pt") && e.message().contains("writable by every user"), "{e}");
    mode(&pkg.join("model.pt"), 0o644);
    // A group-writable manifest: the package is not listed, with the reason.
    mode(&pkg.join("manifest.json"), 0o664);
    let r = open(&options(vec![pkg.clone()]));
    assert!(r.get("test.ts-lesion").is_none());
    assert!(
        r.problems().iter().any(|p| p.message.contains("manifest.json") && p.message.contains("its group")),
        "{:?}",
        r.problems()
    );
    mode(&pkg.join("manifest.json"), 0o644);
    // Weights that are a link to a writable file elsewhere: refused as well.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    mode(&elsewhere, 0o777);
    std::fs::rename(pkg.join("model.pt"), elsewhere.join("model.pt")).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("model.pt"), pkg.join("model.pt")).unwrap();
    let e = run(&open(&options(vec![pkg.clone()]))).unwrap_err();
    assert_eq!(e.kind(), imhost_core::ErrorKind::Untrusted, "{e}");
    // The perfusion CNN folder follows the same rules.
    let cnn = dir.path().join("cnn");
    std::fs::create_dir(&cnn).unwrap();
    mode(&cnn, 0o755);
    for f in ["manifest.json", "model.safetensors"] {
        std::fs::copy(root().join("models/perfusion-cnn").join(f), cnn.join(f)).unwrap();
        mode(&cnn.join(f), 0o644);
    }
    assert!(imhost_models::Manifest::read(&cnn).is_ok());
    mode(&cnn.join("model.safetensors"), 0o646);
    let opts = imhost_models::LoadOptions::new(Some("cpu".into()), imhost_models::Precision::F32);
    let e = imhost_models::PerfusionModel::load(&cnn, &opts).unwrap_err();
    assert_eq!(e.kind(), imhost_core::ErrorKind::Untrusted, "{e}");
}

/// The model worker runs the weights' code path with the host's rights: a copy of it that other
/// users may change is refused, as a plugin would be; the real one starts, loads and verifies.
#[test]
fn the_model_worker_program_follows_the_trust_rules() {
    use std::os::unix::fs::PermissionsExt;
    let cnn = root().join("models/perfusion-cnn");
    let real = PathBuf::from(env!("CARGO_BIN_EXE_imhost-model-worker"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.path().join("imhost-model-worker");
    std::fs::copy(&real, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o777)).unwrap();
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let run = |program: &Path| {
        // SAFETY: every other test of this binary holds ENV while it runs, so no other thread
        // reads the environment while it changes.
        unsafe { std::env::set_var("IMHOST_MODEL_WORKER", program) };
        let r = imhost_registry::open_in_worker(&cnn, Some("cpu".into()), None, true).map(|_| ());
        // SAFETY: as above.
        unsafe { std::env::remove_var("IMHOST_MODEL_WORKER") };
        r
    };
    let e = run(&copy).unwrap_err();
    assert_eq!(e.kind(), imhost_core::ErrorKind::Untrusted, "{e}");
    assert!(e.message().contains("writable by every user"), "{e}");
    run(&real).unwrap();
}
