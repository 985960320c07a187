//! TorchScript model packages (`imhost-manifest/1` with a `runtime` section): the manifest and
//! its declared pre/post-processing, read and checked without LibTorch (the runtime that runs
//! them is `imhost_models::torchscript`).

use std::path::Path;

use imhost_core::registry::{Manifest, OutputKind};
use imhost_core::{Error, Result};
use serde::Deserialize;

use crate::network::read_trusted;

/// The `runtime` section of a package manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSpec {
    /// `torchscript`.
    pub kind: String,
    /// The module file inside the folder.
    pub file: String,
    /// Its sha256 (hex), verified before loading.
    pub sha256: String,
    /// Preprocessing.
    #[serde(default)]
    pub preprocessing: Preprocessing,
    /// How outputs are made from the module's channels.
    pub postprocessing: Vec<Post>,
}

/// Preprocessing of the input.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocessing {
    /// Clip to `[low, high]`.
    pub window: Option<[f64; 2]>,
    /// `(x − mean) / std`.
    pub normalize: Option<Normalize>,
    /// Resample to this spacing (mm, i j k) before the module.
    pub spacing_mm: Option<[f64; 3]>,
}

/// Intensity normalisation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    /// Subtracted.
    pub mean: f64,
    /// Divided by (> 0).
    pub std: f64,
}

/// One output made from the module's result.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Post {
    /// The manifest output it fills.
    pub output: String,
    /// Label map: argmax over these channels; list position = label value.
    pub argmax: Option<Vec<i64>>,
    /// Map: this channel.
    pub channel: Option<i64>,
    /// `sigmoid` or `softmax` (over `softmax_channels`).
    pub activation: Option<String>,
    /// Channels of the softmax.
    pub softmax_channels: Option<Vec<i64>>,
    /// Multiplied after the activation.
    #[serde(default = "one")]
    pub scale: f64,
    /// Added after the scale.
    #[serde(default)]
    pub offset: f64,
    /// Score: the volume (ml) of `label` in the label map `volume_of`.
    pub volume_of: Option<String>,
    /// The label counted.
    pub label: Option<u8>,
}

fn one() -> f64 {
    1.0
}

/// Read and check `dir/manifest.json` (manifest, runtime section, postprocessing against the
/// outputs). The module and its checksum are the runtime's business, at its first run.
pub fn read_package(dir: &Path) -> Result<(Manifest, RuntimeSpec)> {
    let (path, bytes) = read_trusted(dir, "manifest.json", 1 << 20)?;
    let text = String::from_utf8(bytes).map_err(|_| Error::format("manifest.json is not UTF-8").in_file(&path))?;
    let manifest = Manifest::from_json(&text).map_err(|e| e.in_file(&path))?;
    let runtime = manifest
        .extra
        .get("runtime")
        .cloned()
        .ok_or_else(|| Error::format(format!("{}: a model package needs a \"runtime\" section", path.display())))?;
    let spec: RuntimeSpec =
        serde_json::from_value(runtime).map_err(|e| Error::format(format!("{}: runtime: {e}", path.display())))?;
    let bad = |m: String| Err(Error::format(format!("{}: {m}", path.display())));
    if spec.kind != "torchscript" {
        return bad(format!("runtime.kind {:?} (this imhost runs \"torchscript\")", spec.kind));
    }
    if spec.file.contains('/') || spec.file.contains("..") {
        return bad("runtime.file must be a file name inside the package".into());
    }
    if manifest.inputs.len() != 1 || manifest.inputs[0].dims != 3 {
        return bad("a TorchScript package takes one 3-D input".into());
    }
    if spec.preprocessing.normalize.as_ref().is_some_and(|n| n.std.is_nan() || n.std <= 0.0) {
        return bad("normalize.std must be > 0".into());
    }
    for output in &manifest.outputs {
        let Some(post) = spec.postprocessing.iter().find(|p| p.output == output.name) else {
            return bad(format!("no postprocessing for output '{}'", output.name));
        };
        let ok = match output.kind {
            OutputKind::Labelmap => post.argmax.is_some(),
            OutputKind::Map => post.channel.is_some(),
            OutputKind::Score => post.volume_of.is_some() && post.label.is_some(),
        };
        if !ok {
            return bad(format!("postprocessing of '{}' does not fit its kind", output.name));
        }
    }
    Ok((manifest, spec))
}
