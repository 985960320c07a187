//! The command without LibTorch: `cargo build -p imhost-cli --no-default-features` needs no
//! LibTorch (checked on its dependency graph here; `scripts/test.sh` also compiles it).

use std::path::PathBuf;
use std::process::Command;

fn tree(features: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let out = Command::new(cargo)
        .args(["tree", "--offline", "-q", "--manifest-path", manifest.to_str().unwrap()])
        .args(["-e", "normal,build", "--prefix", "none"])
        .args(features)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn without_the_learned_feature_nothing_needs_libtorch() {
    let lean = tree(&["--no-default-features"]);
    assert!(lean.contains("imhost-registry") && lean.contains("imhost-core"), "{lean}");
    for forbidden in ["torch-sys v", "tch v", "imhost-models v"] {
        assert!(
            !lean.lines().any(|l| l.starts_with(forbidden)),
            "imhost-cli without `learned` depends on {forbidden}:\n{lean}"
        );
    }
    // And the default build does link it (so the check above can fail).
    assert!(tree(&[]).lines().any(|l| l.starts_with("torch-sys v")));
}
