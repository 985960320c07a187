//! Plugins end to end from Rust: real shared libraries built from C (test variants and the C
//! example) and by cargo (the Rust example and a misbehaving Rust plugin), loaded with
//! libloading, run in process and in the isolated worker. The bad-plugin matrix checks each
//! failure names the file and leaves the host and the good plugins working.

use std::path::PathBuf;

use imhost_core::registry::{Registry, builtin};
use imhost_core::{AnyVolume, AnyVolumeView, ErrorKind, Geometry, RunControl, Volume};
use imhost_plugin_host::testing::{TEST_VARIANTS, build_plugin, build_test_plugins, cargo_plugin, repo_root};
use imhost_plugin_host::{Discovery, PluginConfig, load_plugins};
use ndarray::Array3;
use serde_json::{Map, json};

fn worker() {
    // SAFETY: every test writes the same value before starting workers; no reader races a
    // change of value.
    unsafe { std::env::set_var("IMHOST_PLUGIN_WORKER", env!("CARGO_BIN_EXE_imhost-plugin-worker")) };
}

fn image(ni: usize, nj: usize, nk: usize, f: impl Fn(usize, usize, usize) -> f32) -> Volume<f32> {
    let g = Geometry { spacing: [0.5, 0.5, 2.0], ..Geometry::identity() };
    Volume::new_3d(Array3::from_shape_fn((ni, nj, nk), |(i, j, k)| f(i, j, k)), g).unwrap()
}

fn opts(v: serde_json::Value) -> Map<String, serde_json::Value> {
    v.as_object().cloned().unwrap()
}

/// A folder with the C example, the Rust example and the given test variants.
fn plugin_dir(stems: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    build_plugin(&repo_root().join("examples/plugins/c-threshold/threshold.c"), dir.path(), "example_c_threshold", &[]);
    build_test_plugins(dir.path(), stems);
    std::fs::copy(cargo_plugin("imhost-example-rust-smooth"), dir.path().join("libexample_rust_smooth.so")).unwrap();
    dir
}

fn registry(paths: Vec<PathBuf>, config: &PluginConfig) -> Registry {
    worker();
    let mut r = Registry::new();
    for m in builtin::core_models(None) {
        r.add(m).unwrap();
    }
    let packages = load_plugins(&mut r, &Discovery::only(paths), config, false);
    assert!(packages.is_empty());
    r
}

fn f32s(v: &AnyVolume) -> &Volume<f32> {
    match v {
        AnyVolume::F32(v) => v,
        other => panic!("expected f32, got {}", other.dtype()),
    }
}

/// Box mean with clipping at the borders, computed here independently of the plugin.
fn box_mean(x: &Volume<f32>, r: isize) -> Array3<f32> {
    let [ni, nj, nk, _] = x.shape();
    Array3::from_shape_fn((ni, nj, nk), |(i, j, k)| {
        let mut values = Vec::new();
        for a in i as isize - r..=i as isize + r {
            for b in j as isize - r..=j as isize + r {
                for c in k as isize - r..=k as isize + r {
                    if (0..ni as isize).contains(&a) && (0..nj as isize).contains(&b) && (0..nk as isize).contains(&c) {
                        values.push(f64::from(x.data()[[a as usize, b as usize, c as usize, 0]]));
                    }
                }
            }
        }
        (values.iter().sum::<f64>() / values.len() as f64) as f32
    })
}

#[test]
fn example_plugins_load_and_compute_the_right_values() {
    let dir = plugin_dir(&["test_good"]);
    let r = registry(vec![dir.path().to_path_buf()], &PluginConfig::default());
    assert!(r.problems().is_empty(), "{:?}", r.problems());
    for id in ["mip", "perfusion-osvd", "example.c-threshold", "example.rust-smooth", "test.echo", "test.copy"] {
        assert!(r.get(id).is_some(), "{id} missing from {:?}", r.ids());
    }
    let source = r.get("example.rust-smooth").unwrap().manifest().source.clone().unwrap();
    assert_eq!(source.kind, "plugin");
    assert!(source.path.unwrap().ends_with("libexample_rust_smooth.so"));

    // C threshold: two blobs (27 and 8 voxels) and one single voxel, on 0.5×0.5×2 mm voxels.
    let x = image(12, 10, 6, |i, j, k| {
        let blob_a = (1..4).contains(&i) && (1..4).contains(&j) && (1..4).contains(&k);
        let blob_b = (7..9).contains(&i) && (6..8).contains(&j) && (2..4).contains(&k);
        let dot = (i, j, k) == (10, 1, 5);
        if blob_a || blob_b || dot { 300.0 } else { 20.0 }
    });
    let out = r
        .run(
            "example.c-threshold",
            &[x.view().into()],
            &opts(json!({"lower": 200, "min_voxels": 2})),
            &RunControl::none(),
        )
        .unwrap();
    let voxel_ml = 0.5 * 0.5 * 2.0 / 1000.0;
    assert_eq!(out.score("components"), Some(2.0));
    assert!((out.score("volume_ml").unwrap() - 35.0 * voxel_ml).abs() < 1e-12);
    let AnyVolume::U8(mask) = out.volume("mask").unwrap() else { panic!("mask not u8") };
    assert_eq!(mask.data()[[2, 2, 2, 0]], 1);
    assert_eq!(mask.data()[[10, 1, 5, 0]], 0, "the single voxel is below min_voxels");
    assert_eq!(mask.data().iter().filter(|&&v| v == 1).count(), 35);
    assert_eq!(mask.geometry(), x.geometry(), "outputs carry the input's geometry");

    // i16 input is read as is (declared dtype), f64 input converted to the first declared (f32).
    let x16 = Volume::new_3d(x.data().index_axis(ndarray::Axis(3), 0).mapv(|v| v as i16), *x.geometry()).unwrap();
    let out16 = r
        .run(
            "example.c-threshold",
            &[x16.view().into()],
            &opts(json!({"lower": 200, "min_voxels": 2})),
            &RunControl::none(),
        )
        .unwrap();
    assert_eq!(out16.score("components"), Some(2.0));

    // Rust smoothing against the box mean computed here.
    let y = image(7, 6, 5, |i, j, k| (i * 7 + j * 3 + k * k) as f32 % 11.0);
    let out =
        r.run("example.rust-smooth", &[y.view().into()], &opts(json!({"radius": 1})), &RunControl::none()).unwrap();
    let want = box_mean(&y, 1);
    let got = f32s(out.volume("smoothed").unwrap());
    for ((i, j, k), w) in want.indexed_iter() {
        assert!((got.data()[[i, j, k, 0]] - w).abs() < 1e-5, "({i},{j},{k})");
    }
    let mean = y.data().iter().map(|&v| f64::from(v)).sum::<f64>() / y.data().len() as f64;
    assert!((out.score("input_mean").unwrap() - mean).abs() < 1e-9);
}

#[test]
fn in_process_plugins_read_the_callers_buffer_without_a_copy() {
    let dir = plugin_dir(&["test_good"]);
    let r = registry(vec![dir.path().to_path_buf()], &PluginConfig::default());
    let x = image(16, 8, 4, |i, j, k| (i + 2 * j + 3 * k) as f32);
    let view: AnyVolumeView<'_> = x.view().into();
    let out = r.run("test.echo", &[view], &Map::new(), &RunControl::none()).unwrap();
    assert_eq!(out.score("input_address").unwrap() as usize, x.data().as_ptr() as usize);
    assert_eq!(out.score("first_voxel"), Some(0.0));
    // A strided (non-contiguous) view is passed as is too: the plugin follows the strides.
    let data = x.data().slice(ndarray::s![..;2, .., .., ..]);
    let strided = imhost_core::VolumeView::new(data, *x.geometry(), None).unwrap();
    let out = r.run("test.copy", &[strided.clone().into()], &Map::new(), &RunControl::none()).unwrap();
    let got = f32s(out.volume("out").unwrap());
    assert_eq!(got.data(), &strided.data().to_owned());
}

#[test]
fn bad_plugin_matrix_leaves_the_host_and_the_good_plugins_working() {
    let stems: Vec<&str> = TEST_VARIANTS.iter().map(|(s, _)| *s).filter(|s| *s != "test_crash").collect();
    let dir = plugin_dir(&stems);
    std::fs::copy(cargo_plugin("imhost-test-rust-misbehaving"), dir.path().join("libtest_rust_misbehaving.so"))
        .unwrap();
    let r = registry(vec![dir.path().to_path_buf()], &PluginConfig::default());
    let problem = |stem: &str| {
        r.problems()
            .iter()
            .find(|p| p.path.ends_with(&format!("lib{stem}.so")))
            .map(|p| p.message.clone())
            .unwrap_or_else(|| panic!("no problem recorded for {stem}: {:?}", r.problems()))
    };
    // Refused at load, each naming the file and the reason.
    assert!(problem("test_bad_major").contains("built for plugin ABI 2.0"), "{}", problem("test_bad_major"));
    assert!(problem("test_no_entry").contains("exports no 'imhost_plugin_entry'"));
    assert!(problem("test_null_entry").contains("returned NULL: licence file /opt/test/licence.key not found"));
    assert!(problem("test_bad_manifest").contains("invalid manifest JSON"));
    assert!(problem("test_duplicate").contains("duplicate model id 'example.c-threshold'"));
    for p in r.problems() {
        assert!(p.message.contains(&p.path), "message names the file: {p:?}");
    }
    assert_eq!(r.problems().len(), 5, "{:?}", r.problems());
    // Older minor (1.0, shorter descriptor with garbage where `unload` would be) and newer
    // minor (1.9, longer structs) both load.
    assert!(r.get("test.old-minor").is_some());
    assert!(r.get("test.new-minor-a").is_some() && r.get("test.new-minor-b").is_some());
    let x = image(5, 4, 3, |i, _, _| i as f32);
    let none = Map::new();
    let ctl = RunControl::none();
    for id in ["test.old-minor", "test.new-minor-b"] {
        let out = r.run(id, &[x.view().into()], &none, &ctl).unwrap();
        assert_eq!(f32s(out.volume("out").unwrap()).data(), x.data());
    }
    // Runs that fail: an error status with the plugin's message; the host goes on.
    let e = r.run("test.fail", &[x.view().into()], &none, &ctl).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Model);
    assert!(e.message().contains("no lesion model for this scanner"), "{e}");
    let e = r.run("test.wrong-shape", &[x.view().into()], &none, &ctl).unwrap_err();
    assert!(e.message().contains("did not produce its output 'out'"), "{e}");
    let e = r.run("test.rust-panic", &[x.view().into()], &none, &ctl).unwrap_err();
    assert!(e.message().contains("the plugin panicked: index out of range on purpose"), "{e}");
    let e = r.run("test.rust-error", &[x.view().into()], &none, &ctl).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.message().contains("refuses every input"), "{e}");
    // …and the good plugins still work after all of it.
    let out = r.run("example.rust-smooth", &[x.view().into()], &opts(json!({"radius": 0})), &ctl).unwrap();
    assert_eq!(f32s(out.volume("smoothed").unwrap()).data(), x.data());
    // Inputs and options are checked against the manifest before the plugin sees them.
    let e = r.run("example.rust-smooth", &[x.view().into()], &opts(json!({"radius": 9})), &ctl).unwrap_err();
    assert!(e.message().contains("outside [0, 5]"), "{e}");
    let e = r.run("example.rust-smooth", &[], &none, &ctl).unwrap_err();
    assert!(e.message().contains("takes 1 input"), "{e}");
}

#[test]
fn a_crashing_plugin_under_isolation_fails_the_job_not_the_host() {
    let dir = plugin_dir(&["test_crash", "test_good"]);
    let mut config: PluginConfig =
        serde_json::from_value(json!({"plugins": {"libtest_crash.so": {"isolate": true}}})).unwrap();
    let r = registry(vec![dir.path().to_path_buf()], &config);
    assert!(r.problems().is_empty(), "{:?}", r.problems());
    assert!(r.get("test.crash").unwrap().manifest().source.as_ref().unwrap().isolated);
    assert!(!r.get("test.copy").unwrap().manifest().source.as_ref().unwrap().isolated);
    let x = image(6, 5, 4, |i, j, k| (i * 100 + j * 10 + k) as f32);
    let ctl = RunControl::none();
    let e = r.run("test.crash", &[x.view().into()], &Map::new(), &ctl).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Model);
    assert!(e.message().contains("signal 11 (SIGSEGV"), "{e}");
    assert!(e.message().contains("libtest_crash.so"), "{e}");
    assert!(e.message().contains("about to dereference NULL"), "the worker's stderr is quoted: {e}");
    // The worker restarts: the plugin's other model works, values intact through shared memory.
    for _ in 0..2 {
        let out = r.run("test.crash-ok", &[x.view().into()], &Map::new(), &ctl).unwrap();
        assert_eq!(f32s(out.volume("out").unwrap()).data(), x.data());
    }
    // Isolation of every plugin (the example's values are the same as in process).
    config.plugins.clear();
    worker();
    let mut iso = Registry::new();
    load_plugins(&mut iso, &Discovery::only(vec![dir.path().join("libexample_rust_smooth.so")]), &config, true);
    let y = image(5, 5, 3, |i, j, k| ((i * 3 + j * 5 + k) % 7) as f32);
    let a = iso.run("example.rust-smooth", &[y.view().into()], &opts(json!({"radius": 1})), &ctl).unwrap();
    let b = r.run("example.rust-smooth", &[y.view().into()], &opts(json!({"radius": 1})), &ctl).unwrap();
    assert_eq!(f32s(a.volume("smoothed").unwrap()).data(), f32s(b.volume("smoothed").unwrap()).data());
    assert_eq!(a.score("input_mean"), b.score("input_mean"));
    assert_eq!(f32s(a.volume("smoothed").unwrap()).geometry(), y.geometry());
}

#[test]
fn plugins_writable_by_others_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = plugin_dir(&["test_good"]);
    let file = dir.path().join("libtest_good.so");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o757)).unwrap();
    let r = registry(vec![dir.path().to_path_buf()], &PluginConfig::default());
    let p = r.problems().iter().find(|p| p.path.ends_with("libtest_good.so")).expect("refused");
    assert!(p.message.contains("writable by every user") && p.message.contains("chmod go-w"), "{}", p.message);
    assert!(r.get("example.c-threshold").is_some(), "the other plugins still load");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A group-writable folder makes every plugin in it untrusted.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o775)).unwrap();
    let r = registry(vec![dir.path().to_path_buf()], &PluginConfig::default());
    assert!(r.get("example.c-threshold").is_none());
    assert!(
        r.problems().iter().all(|p| p.message.contains("folder") && p.message.contains("its group")),
        "{:?}",
        r.problems()
    );
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn discovery_scans_folders_once_per_file_and_reports_missing_paths() {
    let dir = plugin_dir(&["test_good"]);
    let (found, problems) = Discovery::only(vec![dir.path().to_path_buf(), PathBuf::from("/no/such/plugin.so")]).find();
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(problems.len(), 1);
    assert!(problems[0].1.contains("no such file"));
    // The same file reached twice is loaded once.
    let twice = Discovery::only(vec![dir.path().to_path_buf(), dir.path().join("libtest_good.so")]).find().0;
    assert_eq!(twice.len(), 3);
}
