//! `imhost score seg` and `imhost score table` as users run them, against values computed by
//! hand (the oracle comparison of the metrics themselves is imhost-core's `score_oracle`).

use std::path::Path;
use std::process::{Command, Output};

use imhost_core::io::nifti::{WriteOptions, write_any};
use imhost_core::{AnyVolume, Geometry, Volume};
use ndarray::{Array4, ShapeBuilder};
use serde_json::Value;

fn imhost(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imhost")).args(args).output().expect("run imhost")
}

fn assert_one_line_error(out: &Output, label: &str, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{label}: exit status, stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{label}: one line on stderr: {lines:?}");
    assert!(lines[0].starts_with("imhost: error: ") && lines[0].contains(needle), "{label}: {}", lines[0]);
}

/// A label map on a 10×10×10 grid of 1×1×2 mm from a function of (i, j, k).
fn write_labels(path: &Path, origin: [f64; 3], f: impl Fn(usize, usize, usize) -> u8) {
    let n = 10;
    let mut data = Array4::<u8>::zeros((n, n, n, 1).f());
    for k in 0..n {
        for j in 0..n {
            for i in 0..n {
                data[[i, j, k, 0]] = f(i, j, k);
            }
        }
    }
    let g = Geometry::axis_aligned([1.0, 1.0, 2.0], origin).unwrap();
    write_any(&AnyVolume::from(Volume::from_parts(data, g, None).unwrap()), path, &WriteOptions::default()).unwrap();
}

fn cube(i: usize, j: usize, k: usize, k0: usize) -> bool {
    (2..6).contains(&i) && (2..6).contains(&j) && (k0..k0 + 4).contains(&k)
}

/// Truth: a 4×4×4 cube of label 1 and one voxel of label 2. Prediction: the cube one slice
/// (2 mm) further along k, the single voxel in place.
fn pair(dir: &Path) -> (String, String) {
    let (p, t) = (dir.join("pred.nii.gz"), dir.join("truth.nii.gz"));
    let single = |i, j, k| (i, j, k) == (8, 8, 8);
    write_labels(&t, [0.0; 3], |i, j, k| {
        if cube(i, j, k, 2) {
            1
        } else if single(i, j, k) {
            2
        } else {
            0
        }
    });
    write_labels(&p, [0.0; 3], |i, j, k| {
        if cube(i, j, k, 3) {
            1
        } else if single(i, j, k) {
            2
        } else {
            0
        }
    });
    (p.to_str().unwrap().to_string(), t.to_str().unwrap().to_string())
}

fn json_of(out: &Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn close(v: &Value, want: f64, what: &str) {
    let got = v.as_f64().unwrap_or_else(|| panic!("{what}: {v} is not a number"));
    assert!((got - want).abs() < 1e-9, "{what}: {got} vs {want} by hand");
}

#[test]
fn seg_scores_a_shifted_cube_as_computed_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let (p, t) = pair(dir.path());
    // Label 1: 48 voxels overlap, 16 on each side only. Of the 56 surface voxels of each cube,
    // 36 (the side rings of the shared slices) lie on the other surface, the 16 of the face the
    // other lacks 2 mm (one slice) from it, and the 4 inner voxels of the other face 1 mm from
    // the other's side (one voxel along i or j).
    let out = imhost(&["score", "seg", &p, &t, "--each-label", "--tolerance-mm", "1", "--json"]);
    let v = json_of(&out);
    assert_eq!(v["research_use_only"], true);
    let labels = v["labels"].as_array().unwrap();
    assert_eq!(labels.len(), 2);
    let l1 = &labels[0];
    assert_eq!(l1["label"], 1);
    assert_eq!(l1["counts"]["tp"], 48);
    assert_eq!(l1["counts"]["fp"], 16);
    assert_eq!(l1["counts"]["fn"], 16);
    assert_eq!(l1["surface_voxels"]["truth"], 56);
    close(&l1["dice"], 0.75, "dice");
    close(&l1["jaccard"], 0.6, "jaccard");
    close(&l1["precision"], 0.75, "precision");
    close(&l1["volume_truth_ml"], 0.128, "64 voxels of 2 mm³");
    close(&l1["volume_difference_ml"], 0.0, "volume difference");
    close(&l1["hd"], 2.0, "hd: one slice of 2 mm");
    close(&l1["hd95"], 2.0, "hd95");
    close(&l1["hd95_pooled"], 2.0, "hd95 pooled");
    close(&l1["assd"], 2.0 * (16.0 * 2.0 + 4.0 * 1.0) / 112.0, "assd");
    close(&l1["masd"], (16.0 * 2.0 + 4.0 * 1.0) / 56.0, "masd");
    close(&l1["nsd"], 2.0 * (36.0 + 4.0) / 112.0, "nsd at 1 mm");
    let l2 = &labels[1];
    assert_eq!(l2["label"], 2);
    close(&l2["dice"], 1.0, "the single voxel");
    close(&l2["hd"], 0.0, "the single voxel");

    // Default: every non-zero voxel together; NSD at 2 mm takes in the shifted face.
    let v = json_of(&imhost(&["score", "seg", &p, &t, "--metrics", "dice,nsd", "--tolerance-mm", "2", "--json"]));
    let l = &v["labels"][0];
    assert_eq!(l["label"], "non-zero");
    close(&l["dice"], 98.0 / 130.0, "dice of the union");
    close(&l["nsd"], 1.0, "nsd at 2 mm");
    assert!(l.get("hd").is_none() && l.get("jaccard").is_none(), "only what was asked: {l}");

    // Text, for people.
    let out = imhost(&["score", "seg", &p, &t, "--label", "1"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("research use only") && text.contains("label 1:"), "{text}");
    assert!(text.lines().any(|l| l.trim_start().starts_with("dice") && l.contains("0.7500")), "{text}");
    assert!(text.lines().any(|l| l.trim_start().starts_with("hd95 ") && l.contains("2.00 mm")), "{text}");
}

#[test]
fn seg_says_why_a_value_is_undefined() {
    let dir = tempfile::tempdir().unwrap();
    let (p, t) = pair(dir.path());
    // Label 3 is in neither map: Dice is undefined, and says so.
    let out = imhost(&["score", "seg", &p, &t, "--label", "3", "--metrics", "dice,hd"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("undefined (both masks are empty)"), "{text}");
    let empty = dir.path().join("empty.nii.gz");
    write_labels(&empty, [0.0; 3], |_, _, _| 0);
    let v = json_of(&imhost(&["score", "seg", empty.to_str().unwrap(), &t, "--json"]));
    let l = &v["labels"][0];
    assert_eq!(l["empty"], "prediction");
    assert_eq!(l["dice"], 0.0);
    assert!(l["hd95"].is_null() && l["precision"].is_null(), "not finite is null: {l}");
    let out = imhost(&["score", "seg", empty.to_str().unwrap(), &t, "--metrics", "hd95"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("∞ (the prediction is empty)"));
}

#[test]
fn seg_bad_input_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (p, t) = pair(dir.path());
    let moved = dir.path().join("moved.nii.gz");
    write_labels(&moved, [5.0, 0.0, 0.0], |i, j, k| u8::from(cube(i, j, k, 2)));
    assert_one_line_error(&imhost(&["score", "seg", moved.to_str().unwrap(), &t]), "moved grid", "origin");
    let prob = dir.path().join("prob.nii.gz");
    let mut data = Array4::<f32>::zeros((10, 10, 10, 1).f());
    data[[3, 3, 3, 0]] = 0.3;
    let g = Geometry::axis_aligned([1.0, 1.0, 2.0], [0.0; 3]).unwrap();
    write_any(&AnyVolume::from(Volume::from_parts(data, g, None).unwrap()), &prob, &WriteOptions::default()).unwrap();
    assert_one_line_error(&imhost(&["score", "seg", prob.to_str().unwrap(), &t]), "probabilities", "probability map");
    assert_one_line_error(&imhost(&["score", "seg", &p, &t, "--metrics", "dise"]), "unknown metric", "unknown metric");
    assert_one_line_error(
        &imhost(&["score", "seg", &p, &t, "--tolerance-mm=-1"]),
        "negative tolerance",
        "--tolerance-mm",
    );
    let missing = dir.path().join("missing.nii.gz");
    assert_one_line_error(&imhost(&["score", "seg", missing.to_str().unwrap(), &t]), "missing file", "prediction");
}

#[test]
fn table_scores_as_computed_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("t.csv");
    std::fs::write(
        &csv,
        "case,true_ml,pred_ml,true_cat,pred_cat,label,score,time,event\n\
         a,1,2,A,A,1,0.9,1,1\n\
         b,2,3,B,B,0,0.1,2,1\n\
         \"c, the third\",3,4,C,B,1,0.4,3,0\n\
         d,4,5,A,A,0,0.6,4,1\n",
    )
    .unwrap();
    let c = csv.to_str().unwrap();
    let v = json_of(&imhost(&["score", "table", c, "--truth", "true_ml", "--pred", "pred_ml", "--json"]));
    assert_eq!(v["n"], 4);
    close(&v["pearson_r"], 1.0, "a constant offset correlates perfectly");
    close(&v["bland_altman"]["bias"], 1.0, "bias");
    close(&v["bland_altman"]["sd"], 0.0, "sd");
    close(&v["icc"]["icc3_1"], 1.0, "consistency ignores the offset");
    // ICC(2,1) = (MSR − MSE) / (MSR + MSE + 2 (MSC − MSE) / n): MSR = 10/3, MSE = 0, MSC = 2.
    close(&v["icc"]["icc2_1"], (10.0 / 3.0) / (10.0 / 3.0 + 2.0 * 2.0 / 4.0), "absolute agreement");
    close(&v["mae"], 1.0, "mae");

    let v = json_of(&imhost(&[
        "score", "table", c, "--truth", "true_cat", "--pred", "pred_cat", "--kind", "category", "--json",
    ]));
    assert_eq!(v["categories"], serde_json::json!(["A", "B", "C"]));
    close(&v["accuracy"], 0.75, "accuracy");
    // Observed agreement 3/4, chance (2·2 + 1·2 + 1·0)/16: κ = (0.75 − 0.375) / 0.625.
    close(&v["kappa"], 0.6, "unweighted κ");
    assert_eq!(v["confusion"], serde_json::json!([[2, 0, 0], [0, 1, 0], [0, 1, 0]]));

    let v =
        json_of(&imhost(&["score", "table", c, "--truth", "label", "--pred", "score", "--kind", "binary", "--json"]));
    close(&v["roc_auc"], 0.75, "3 of 4 positive–negative pairs in order");
    close(&v["operating_point"]["sensitivity"], 0.5, "sensitivity at 0.5");
    assert_eq!(v["operating_point"]["fn"], 1);

    let v = json_of(&imhost(&[
        "score", "table", c, "--truth", "time", "--pred", "score", "--kind", "survival", "--event", "event", "--json",
    ]));
    // Comparable pairs (shorter time an event): (a,b) (a,c) (a,d) (b,c) (b,d); concordant when
    // the shorter time has the higher score: (a,b) (a,c) (a,d) → 3/5.
    close(&v["c_index"], 0.6, "Harrell's C");

    assert_one_line_error(
        &imhost(&["score", "table", c, "--truth", "nope", "--pred", "score"]),
        "no column",
        "no column 'nope'",
    );
    assert_one_line_error(
        &imhost(&["score", "table", c, "--truth", "true_cat", "--pred", "score"]),
        "text as a number",
        "not a number",
    );
    assert_one_line_error(
        &imhost(&["score", "table", c, "--truth", "time", "--pred", "score", "--kind", "survival"]),
        "no event column",
        "--event",
    );
}
