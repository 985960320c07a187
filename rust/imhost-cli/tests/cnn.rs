//! The perfusion CNN from the command line: the training commands build a set and a loadable
//! model folder, and the committed default weights reproduce docs/VALIDATION.md's figures on a
//! held-out phantom within tolerance.

use std::path::Path;
use std::process::{Command, Output};

fn imhost(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imhost")).args(args).env("IMHOST_DEVICE", "cpu").output().expect("run imhost")
}

fn ok(out: &Output, label: &str) -> String {
    assert!(out.status.success(), "{label}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn training_commands_make_a_model_that_perfusion_loads() {
    let dir = tempfile::tempdir().unwrap();
    let (data, model) = (dir.path().join("set"), dir.path().join("model"));
    let d = data.to_str().unwrap();
    ok(
        &imhost(&["train", "perfusion-set", "--out", d, "--cases", "3", "--seed", "5", "--size", "48,48,2", "-q"]),
        "set",
    );
    for c in ["case-00005", "case-00006", "case-00007"] {
        assert!(data.join(c).join("ctp.nii.gz").is_file() && data.join(c).join("nlr/cbf.nii.gz").is_file());
    }
    let m = model.to_str().unwrap();
    let args =
        ["train", "perfusion-cnn", "--data", d, "--out", m, "--epochs", "2", "--width", "4", "--batch-norm", "-q"];
    ok(&imhost(&args), "train");
    let manifest = json(&model.join("manifest.json"));
    assert_eq!(manifest["architecture"]["config"]["base_width"], 4);
    assert_eq!(manifest["training"]["epochs"].as_array().unwrap().len(), 2);
    assert_eq!(manifest["training"]["targets"], "box-NLR maps (Bennink) from imhost's own pipeline, not ground truth");
    // Resuming a finished run adds nothing and keeps the history.
    let mut resume = args.to_vec();
    resume.push("--resume");
    ok(&imhost(&resume), "resume");
    assert_eq!(json(&model.join("manifest.json"))["training"]["epochs"].as_array().unwrap().len(), 2);
    // The model runs through the whole pipeline.
    let study = data.join("case-00005/ctp.nii.gz");
    let out = dir.path().join("cnn");
    ok(
        &imhost(&[
            "perfusion",
            study.to_str().unwrap(),
            "--method",
            "cnn",
            "--model",
            m,
            "--out",
            out.to_str().unwrap(),
            "-q",
        ]),
        "perfusion",
    );
    for f in ["cbf", "cbv", "mtt", "ttp", "core", "hypoperfusion", "brain"] {
        assert!(out.join(format!("{f}.nii.gz")).is_file(), "{f}");
    }
    assert!(!out.join("tmax.nii.gz").exists(), "the CNN writes no Tmax");
    let report = json(&out.join("report.json"));
    assert_eq!(report["method"], "cnn");
    assert_eq!(report["model"]["weights_sha256"], manifest["weights"]["sha256"]);
    // Bad inputs: one line, status 1.
    let e = imhost(&["train", "perfusion-cnn", "--data", dir.path().to_str().unwrap(), "--out", m, "-q"]);
    assert_eq!(e.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&e.stderr).contains("usable cases"));
    let e = imhost(&["perfusion", study.to_str().unwrap(), "--method", "cnn", "--model", d, "--out", m, "-q"]);
    assert_eq!(e.status.code(), Some(1), "a folder without a manifest");
    let e = imhost(&[
        "perfusion",
        study.to_str().unwrap(),
        "--method",
        "cnn",
        "--model",
        m,
        "--precision",
        "bf16",
        "--out",
        m,
        "-q",
    ]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("needs a CUDA device"));
}

/// Case 90000 of `scripts/validation-cnn.sh` (held out from training): the default weights
/// must reproduce its row of docs/validation-cnn.json within ±0.03 Dice / ±10 % volume, and
/// meet the Dice target against NLR.
#[test]
fn default_weights_reproduce_the_validation_figures_on_a_held_out_phantom() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let recorded = json(&root.join("docs/validation-cnn.json"));
    let case = recorded["full"]["cases"].as_array().unwrap().iter().find(|c| c["seed"] == 90000).unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v.md");
    let model = root.join("models/perfusion-cnn");
    ok(
        &imhost(&[
            "validate-cnn",
            "--model",
            model.to_str().unwrap(),
            "--cases",
            "1",
            "--seed",
            "90000",
            "--out",
            out.to_str().unwrap(),
            "-q",
        ]),
        "validate-cnn",
    );
    let now = json(&dir.path().join("validation-cnn.json"));
    let c = &now["full"]["cases"][0];
    for key in ["core_dice", "hyp_dice"] {
        let (a, b) = (c[key][0].as_f64().unwrap(), case[key][0].as_f64().unwrap());
        assert!((a - b).abs() < 0.03, "{key} CNN vs NLR: {a} now, {b} recorded");
        assert!(a >= 0.85, "{key} CNN vs NLR {a} below the 0.85 target");
    }
    for key in ["core_ml", "hyp_ml"] {
        let (a, b) = (c[key][0].as_f64().unwrap(), case[key][0].as_f64().unwrap());
        assert!((a - b).abs() <= 0.1 * b.max(1.0), "{key} CNN: {a} now, {b} recorded");
    }
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("research use only") || text.contains("Research use only"));
}
