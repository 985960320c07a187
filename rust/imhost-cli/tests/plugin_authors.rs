//! What a plugin author meets, through the real command and real plugins built from
//! `tests/plugins/test_plugin.c`: the ABI 1.2 option accessors and plugin folder, a plugin's
//! exit() reported (in process and isolated), plugin folders and what discovery says about
//! libraries it does not scan, manifest warnings said once and plainly, `imhost plugin check`
//! failing a crashing model, and the manifest JSON Schema agreeing with the registry's checks
//! (validated by the jsonschema library where scripts/setup.sh installed it).

use std::path::{Path, PathBuf};
use std::process::Command;

use imhost_core::io::write_volume;
use imhost_core::{AnyVolume, Geometry, Volume};
use imhost_plugin_host::testing::{build_plugin, build_test_plugins, cargo_plugin, repo_root};
use ndarray::Array3;
use serde_json::Value;

/// The command with no plugins but those named (no environment, no per-user folder).
fn imhost(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imhost"));
    cmd.env("HOME", home)
        .env_remove("IMHOST_PLUGIN_PATH")
        .env_remove("IMHOST_LOG")
        .env_remove("XDG_DATA_HOME")
        .env_remove("XDG_CONFIG_HOME");
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A 3-D CT input of 8×8×4 voxels.
fn ct(dir: &Path) -> PathBuf {
    let path = dir.join("ct.nii.gz");
    let v =
        Volume::new_3d(Array3::from_shape_fn((8, 8, 4), |(i, _, _)| i as f32 * 10.0), Geometry::identity()).unwrap();
    write_volume(&AnyVolume::F32(v), &path).unwrap();
    path
}

/// `plugins/test_host12/` with the plugin, a library it depends on (a copy of test_good: not a
/// plugin of its own) and the data file the plugin reads from its folder.
fn plugin_folder(root: &Path) -> PathBuf {
    let plugins = root.join("plugins");
    let folder = plugins.join("test_host12");
    std::fs::create_dir_all(&folder).unwrap();
    build_test_plugins(&folder, &["test_host12", "test_good"]);
    std::fs::rename(folder.join("libtest_good.so"), folder.join("libdependency.so")).unwrap();
    std::fs::write(folder.join("test-folder-data.txt"), "42.5\n").unwrap();
    plugins
}

fn scores(dir: &Path) -> serde_json::Map<String, Value> {
    let result: Value = serde_json::from_slice(&std::fs::read(dir.join("result.json")).unwrap()).unwrap();
    result["scores"].as_object().unwrap().clone()
}

#[test]
fn options_through_the_accessors_and_files_from_the_plugin_folder() {
    let work = tempfile::tempdir().unwrap();
    let plugins = plugin_folder(work.path());
    let input = ct(work.path());
    let list = imhost(work.path()).args(["models", "list", "--json", "--plugin"]).arg(&plugins).output().unwrap();
    assert!(list.status.success(), "{}", text(&list.stderr));
    let listed: Value = serde_json::from_slice(&list.stdout).unwrap();
    let ids: Vec<&str> = listed["models"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    assert!(ids.contains(&"test.folder") && ids.contains(&"test.exit"), "{ids:?}");
    assert!(!ids.contains(&"test.good"), "a plugin folder's other library is a dependency, not a plugin: {ids:?}");

    for isolate in [false, true] {
        // Defaults: level 2.5, flag true, mode "abc"; then every option given.
        for (name, given, want) in [
            ("defaults", vec![], [2.5, 1.0, 3.0, f64::from(b'a')]),
            (
                "given",
                vec!["--option", "level=7", "--option", "flag=false", "--option", "mode=xyzzy"],
                [7.0, 0.0, 5.0, f64::from(b'x')],
            ),
        ] {
            let out_dir = work.path().join(format!("{name}-{isolate}"));
            let mut cmd = imhost(work.path());
            cmd.args(["run", "test.folder", "-q", "--plugin"]).arg(&plugins).arg("--input").arg(&input);
            cmd.arg("--out").arg(&out_dir).args(&given);
            if isolate {
                cmd.arg("--isolate");
            }
            let out = cmd.output().unwrap();
            assert!(out.status.success(), "{name} isolate={isolate}: {}", text(&out.stderr));
            let s = scores(&out_dir);
            let got = [&s["level"], &s["flag"], &s["mode_length"], &s["mode_first"]].map(|v| v.as_f64().unwrap());
            assert_eq!(got, want, "{name} isolate={isolate}");
            // Too small a buffer said the length needed; the data file was found in the folder.
            assert_eq!(s["mode_needed"].as_f64(), Some(want[2]), "{name} isolate={isolate}");
            assert_eq!(s["data"].as_f64(), Some(42.5), "{name} isolate={isolate}: plugin_dir");
        }
    }
}

#[test]
fn a_plugin_calling_exit_is_reported_and_the_command_fails() {
    let work = tempfile::tempdir().unwrap();
    let plugins = plugin_folder(work.path());
    let input = ct(work.path());
    for isolate in [false, true] {
        let out_dir = work.path().join(format!("exit-{isolate}"));
        let mut cmd = imhost(work.path());
        cmd.args(["run", "test.exit", "-q", "--plugin"]).arg(&plugins).arg("--input").arg(&input).arg("--out");
        cmd.arg(&out_dir);
        if isolate {
            cmd.arg("--isolate");
        }
        let out = cmd.output().unwrap();
        let stderr = text(&out.stderr);
        // exit(0) from the plugin must not read as success.
        assert_eq!(out.status.code(), Some(1), "isolate={isolate}: {stderr}");
        assert!(
            stderr.contains("model 'test.exit'") && stderr.contains("called exit()"),
            "isolate={isolate}: {stderr}"
        );
        assert!(!out_dir.join("result.json").exists(), "isolate={isolate}: a result of a run that did not finish");
    }
}

#[test]
fn discovery_says_what_it_does_not_scan() {
    let work = tempfile::tempdir().unwrap();
    let deep = work.path().join("plugins/acme/lib");
    std::fs::create_dir_all(&deep).unwrap();
    build_test_plugins(&deep, &["test_good"]);
    // Several libraries, none named for the folder: which is the plugin is unclear.
    let several = work.path().join("plugins/several");
    std::fs::create_dir_all(&several).unwrap();
    build_test_plugins(&several, &["test_good", "test_crash"]);
    let out =
        imhost(work.path()).args(["models", "list", "--plugin"]).arg(work.path().join("plugins")).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "one line per problem, each said once: {stderr}");
    assert!(lines.iter().any(|l| l.contains("libtest_good.so lies two folders below a plugin folder")), "{stderr}");
    assert!(lines.iter().any(|l| l.contains("several") && l.contains("libseveral.so")), "{stderr}");
    assert!(!text(&out.stdout).contains("test.good"), "nothing of the unclear folders loaded");
}

/// A copy of the TorchScript package fixture with `edit` applied to its manifest.
fn package(root: &Path, name: &str, edit: impl Fn(&mut Value)) -> PathBuf {
    let from = repo_root().join("tests/fixtures/packages/ts-lesion");
    let to = root.join(name);
    std::fs::create_dir_all(&to).unwrap();
    for file in ["manifest.json", "model.pt"] {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(to.join("manifest.json")).unwrap()).unwrap();
    edit(&mut manifest);
    std::fs::write(to.join("manifest.json"), serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    to
}

#[test]
fn a_misspelt_manifest_key_is_one_plain_warning_and_plugin_check_names_it() {
    let work = tempfile::tempdir().unwrap();
    let pkg = package(work.path(), "typo", |m| m["outputs"][1]["units"] = "HU".into());
    let list = imhost(work.path()).args(["models", "list", "--plugin"]).arg(&pkg).output().unwrap();
    assert!(list.status.success(), "{}", text(&list.stderr));
    let stderr = text(&list.stderr);
    assert_eq!(stderr.matches("did you mean \"unit\"").count(), 1, "said once: {stderr}");
    assert!(stderr.contains("outputs[1].units"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "no colour codes when stderr is not a terminal: {stderr:?}");

    let check = imhost(work.path()).args(["plugin", "check"]).arg(&pkg).output().unwrap();
    let stdout = text(&check.stdout);
    assert!(check.status.success(), "a warning does not fail the check: {stdout}{}", text(&check.stderr));
    assert_eq!(stdout.matches("did you mean").count(), 1, "{stdout}");
    assert!(stdout.lines().any(|l| l.trim_start().starts_with("warn") && l.contains("outputs[1].units")), "{stdout}");
    assert!(!text(&check.stderr).contains("did you mean"), "not said again in the log: {}", text(&check.stderr));
}

#[test]
fn plugin_check_fails_a_crashing_model_and_passes_its_sibling() {
    let work = tempfile::tempdir().unwrap();
    let plugins = build_test_plugins(work.path(), &["test_crash"]);
    let out = imhost(work.path()).args(["plugin", "check"]).arg(&plugins[0]).output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let section = |id: &str| -> Vec<String> {
        let start = stdout.find(&format!("model {id} ")).unwrap_or_else(|| panic!("no section for {id}: {stdout}"));
        let rest = &stdout[start..];
        let end = rest[1..].find("\nmodel ").map_or(rest.len(), |e| e + 1);
        rest[..end].lines().skip(1).filter(|l| l.starts_with("  ")).map(str::to_string).collect()
    };
    let crash = section("test.crash");
    assert!(crash.iter().any(|l| l.contains("FAIL") && l.contains("SIGSEGV")), "{crash:?}");
    // It crashed isolated, so it is not run in process (that would take the command down).
    assert!(!crash.iter().any(|l| l.contains("in process")), "{crash:?}");
    let ok = section("test.crash-ok");
    assert!(ok.iter().all(|l| l.trim_start().starts_with("ok")), "{ok:?}");
    assert_eq!(ok.len(), 4, "manifest, isolated, in process, same outputs: {ok:?}");
    assert!(stdout.contains("6 passed, 1 failed"), "{stdout}");
}

#[test]
fn plugin_new_refuses_a_bad_name_and_an_existing_folder() {
    let work = tempfile::tempdir().unwrap();
    for bad in ["Acme", "acme bright", "../acme", "a", ""] {
        let out = imhost(work.path()).current_dir(work.path()).args(["plugin", "new", bad]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{bad:?}: {}", text(&out.stdout));
        assert_eq!(text(&out.stderr).lines().count(), 1, "{bad:?}: {}", text(&out.stderr));
    }
    let first = imhost(work.path()).current_dir(work.path()).args(["plugin", "new", "acme"]).output().unwrap();
    assert!(first.status.success(), "{}", text(&first.stderr));
    std::fs::write(work.path().join("acme/acme.c"), "/* my work */").unwrap();
    let again = imhost(work.path()).current_dir(work.path()).args(["plugin", "new", "acme"]).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(work.path().join("acme/acme.c")).unwrap(), "/* my work */", "nothing lost");
}

/// The manifests of `models list --json` and edited copies against the JSON Schema, with the
/// jsonschema library (`scripts/setup.sh` installs it into .cache/python): the schema accepts
/// what the registry loads and refuses what the registry refuses or warns about.
#[test]
fn the_schema_agrees_with_the_registry() {
    let python = repo_root().join(".cache/python");
    let has_jsonschema = Command::new("python3")
        .env("PYTHONPATH", &python)
        .args(["-c", "import jsonschema"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_jsonschema {
        eprintln!("skipped: jsonschema is not installed in .cache/python (scripts/setup.sh test installs it)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    // Every manifest the project ships: built-ins (with the perfusion CNN), the three example
    // plugins, the test plugin's and the package fixture's.
    let plugins = plugin_folder(work.path());
    let examples = repo_root().join("examples/plugins");
    build_plugin(&examples.join("c-threshold/threshold.c"), &plugins, "example_c_threshold", &[]);
    build_plugin(&examples.join("cpp-window/window.cpp"), &plugins, "example_cpp_window", &[]);
    std::fs::copy(cargo_plugin("imhost-example-rust-smooth"), plugins.join("libexample_rust_smooth.so")).unwrap();
    let good = package(work.path(), "good", |_| {});
    let list = imhost(work.path())
        .args(["models", "list", "--json", "--plugin"])
        .arg(&plugins)
        .arg("--plugin")
        .arg(&good)
        .output()
        .unwrap();
    assert!(list.status.success(), "{}", text(&list.stderr));
    let listed: Value = serde_json::from_slice(&list.stdout).unwrap();
    let manifests_dir = work.path().join("manifests");
    std::fs::create_dir_all(&manifests_dir).unwrap();
    let mut valid = Vec::new();
    for model in listed["models"].as_array().unwrap() {
        let id = model["id"].as_str().unwrap();
        let info = imhost(work.path())
            .args(["models", "info", id, "--plugin"])
            .arg(&plugins)
            .arg("--plugin")
            .arg(&good)
            .output()
            .unwrap();
        assert!(info.status.success(), "{id}: {}", text(&info.stderr));
        let path = manifests_dir.join(format!("{id}.json"));
        std::fs::write(&path, &info.stdout).unwrap();
        valid.push(path);
    }
    let names: Vec<String> = valid.iter().map(|p| p.file_stem().unwrap().to_string_lossy().into_owned()).collect();
    for id in ["perfusion-cnn", "example.c-threshold", "example.cpp-window", "example.rust-smooth", "test.ts-lesion"] {
        assert!(names.iter().any(|n| n == id), "{id} not listed: {names:?}");
    }

    // Each edit: the registry's verdict on it, and the schema must say the same.
    type Edit = Box<dyn Fn(&mut Value)>;
    let edits: Vec<(&str, Edit)> = vec![
        ("misspelt key", Box::new(|m| m["outputs"][1]["units"] = "HU".into())),
        ("unknown modality", Box::new(|m| m["inputs"][0]["modality"] = "CAT".into())),
        ("unknown orientation", Box::new(|m| m["inputs"][0]["orientation"] = "RAI".into())),
        ("two channels", Box::new(|m| m["inputs"][0]["channels"] = 2.into())),
        ("min_frames on 3-D", Box::new(|m| m["inputs"][0]["min_frames"] = 3.into())),
        ("research_use_only false", Box::new(|m| m["research_use_only"] = false.into())),
        ("no outputs", Box::new(|m| m["outputs"] = Value::Array(vec![]))),
        ("wrong format", Box::new(|m| m["format"] = "imhost-manifest/2".into())),
    ];
    let mut invalid = Vec::new();
    for (n, (what, edit)) in edits.iter().enumerate() {
        let pkg = package(work.path(), &format!("edit{n}"), edit);
        let out = imhost(work.path()).args(["models", "list", "--json", "--plugin"]).arg(&pkg).output().unwrap();
        let stderr = text(&out.stderr);
        let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
        let loaded = listed["models"].as_array().unwrap().iter().any(|m| m["id"] == "test.ts-lesion");
        // The registry refuses it, or (a misspelt key) loads it with a warning.
        assert!(!loaded || stderr.contains("unknown key"), "{what}: the registry accepted it silently: {stderr}");
        invalid.push((what.to_string(), pkg.join("manifest.json")));
    }
    let script = r#"
import json, sys
import jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)
verdicts = [("valid" if validator.is_valid(json.load(open(p))) else "invalid") for p in sys.argv[2:]]
print("\n".join(verdicts))
"#;
    let out = Command::new("python3")
        .env("PYTHONPATH", &python)
        .arg("-c")
        .arg(script)
        .arg(repo_root().join("schemas/imhost-manifest-1.schema.json"))
        .args(&valid)
        .args(invalid.iter().map(|(_, p)| p))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let verdicts: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(verdicts.len(), valid.len() + invalid.len());
    for (path, verdict) in valid.iter().zip(&verdicts) {
        assert_eq!(verdict, "valid", "the schema refuses {} that the registry loads", path.display());
    }
    for ((what, _), verdict) in invalid.iter().zip(&verdicts[valid.len()..]) {
        assert_eq!(verdict, "invalid", "the schema accepts a manifest with {what}");
    }
}

#[test]
fn unknown_keys_of_plugins_json_are_warnings() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join(".config/imhost");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("plugins.json"), r#"{"plugin": {}, "plugins": {"libacme.so": {"isolat": true}}}"#)
        .unwrap();
    let out = imhost(work.path()).env_remove("IMHOST_PLUGIN_CONFIG").args(["models", "list"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(r#"unknown key "plugin" ignored"#), "{stderr}");
    assert!(stderr.contains(r#"unknown setting "isolat" of "libacme.so" ignored"#), "{stderr}");
}
