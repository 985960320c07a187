//! `imhost models list|info` and `imhost run` with real plugins found through
//! IMHOST_PLUGIN_PATH (the C example built with cc, the Rust example built by cargo), in process
//! and isolated, values checked against a hand count.

use std::path::Path;
use std::process::Command;

use imhost_core::io::{read_volume, write_volume};
use imhost_core::{AnyVolume, Geometry, Volume};
use imhost_plugin_host::testing::{build_plugin, cargo_plugin, repo_root};
use ndarray::Array3;

fn imhost(plugins: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imhost"));
    cmd.env("IMHOST_PLUGIN_PATH", plugins)
        .env("HOME", plugins)
        .env_remove("XDG_DATA_HOME")
        .env_remove("XDG_CONFIG_HOME");
    cmd
}

fn setup() -> (tempfile::TempDir, tempfile::TempDir) {
    let plugins = tempfile::tempdir().unwrap();
    build_plugin(
        &repo_root().join("examples/plugins/c-threshold/threshold.c"),
        plugins.path(),
        "example_c_threshold",
        &[],
    );
    std::fs::copy(cargo_plugin("imhost-example-rust-smooth"), plugins.path().join("libexample_rust_smooth.so"))
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    // Two blobs of 8 and 27 voxels at 300 HU on 1×1×1 mm.
    let data = Array3::from_shape_fn((10, 10, 6), |(i, j, k)| {
        let a = (1..3).contains(&i) && (1..3).contains(&j) && (1..3).contains(&k);
        let b = (5..8).contains(&i) && (5..8).contains(&j) && (2..5).contains(&k);
        if a || b { 300.0f32 } else { 0.0 }
    });
    let v = Volume::new_3d(data, Geometry::identity()).unwrap();
    write_volume(&AnyVolume::F32(v), &work.path().join("ct.nii.gz")).unwrap();
    (plugins, work)
}

#[test]
fn list_info_and_run_plugins_from_the_command_line() {
    let (plugins, work) = setup();
    let out = imhost(plugins.path()).args(["models", "list", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = listed["models"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    for id in ["mip", "perfusion-osvd", "example.c-threshold", "example.rust-smooth"] {
        assert!(ids.contains(&id), "{id} not in {ids:?}");
    }
    let info = imhost(plugins.path()).args(["models", "info", "example.c-threshold"]).output().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(manifest["options"]["min_voxels"]["default"], 1);

    for isolate in [false, true] {
        let dir = work.path().join(format!("run-{isolate}"));
        let mut cmd = imhost(plugins.path());
        cmd.args(["-q", "run", "example.c-threshold", "--input"]).arg(work.path().join("ct.nii.gz"));
        cmd.arg("--out").arg(&dir).args(["--option", "lower=200", "--option", "min_voxels=10"]);
        if isolate {
            cmd.arg("--isolate");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let result: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("result.json")).unwrap()).unwrap();
        assert_eq!(result["research_use_only"], true);
        assert_eq!(result["scores"]["components"], 1.0, "the 8-voxel blob is below min_voxels");
        assert!((result["scores"]["volume_ml"].as_f64().unwrap() - 0.027).abs() < 1e-12);
        assert_eq!(result["outputs"][0]["labels"][0]["name"], "in range");
        assert_eq!(result["model"]["source"]["isolated"], isolate);
        let AnyVolume::U8(mask) = read_volume(&dir.join("mask.nii.gz")).unwrap() else { panic!("u8 mask") };
        assert_eq!(mask.data().iter().filter(|&&v| v == 1).count(), 27);
        assert_eq!(mask.data()[[6, 6, 3, 0]], 1);
    }
}

#[test]
fn bad_runs_fail_with_one_line() {
    let (plugins, work) = setup();
    let input = work.path().join("ct.nii.gz");
    for (args, needle) in [
        (vec!["run", "nope", "--out", "x"], "no model 'nope'"),
        (vec!["run", "example.c-threshold", "--out", "x", "--option", "lowr=3"], "has no option 'lowr'"),
        (vec!["run", "example.c-threshold", "--out", "x", "--option", "min_voxels=0"], "outside [1, inf]"),
        (vec!["run", "mip", "--out", "x"], "must be 4-D"),
    ] {
        let out = imhost(plugins.path()).args(&args).arg("--input").arg(&input).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("imhost: error: ") && last.contains(needle), "{args:?}: {stderr}");
    }
}
