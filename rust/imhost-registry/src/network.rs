//! The model manifest (`manifest.json`): what a model is, what it takes and gives, how it was
//! trained, and the sha256 of its weights — verified on every load.
//!
//! ```json
//! { "format": "imhost-model/1", "id": "perfusion-cnn-phantom", "version": "0.1.0",
//!   "task": "perfusion-maps", "research_use_only": true, "license": "Apache-2.0",
//!   "architecture": { "name": "perfusion-unet", "paper": "...", "config": { ... } },
//!   "weights": { "file": "model.safetensors", "format": "safetensors", "sha256": "…" },
//!   "inputs": { "modality": "CT perfusion", "layout": "...", "time_points": 32,
//!               "interval_s": 1.5, "pre_arrival_s": 3.0, "clip_hu": [-20, 600], "scale_hu": 100,
//!               "spacing_mm": [1.8, 1.8, 4.0], "preprocessing": "..." },
//!   "outputs": [ { "name": "cbv", "unit": "ml/100 g", "scale": 10.0 }, ... ],
//!   "training": { ... free-form description ... } }
//! ```
//! `architecture.name` is `perfusion-unet` (weights in `.safetensors`, parameter names as in
//! PyTorch) or `torchscript` (a `torch.jit.script`/`trace` module in `.pt`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use imhost_core::perfusion::model::{ModelInputSpec, ModelOutputScale};

use imhost_core::{Error, Result};

/// The manifest format this version reads and writes.
pub const FORMAT: &str = "imhost-model/1";
/// The manifest's file name in a model folder.
pub const FILE_NAME: &str = "manifest.json";
/// Largest manifest read (bytes).
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// The architecture and its configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Architecture {
    /// `perfusion-unet` or `torchscript`.
    pub name: String,
    /// The paper it implements.
    #[serde(default)]
    pub paper: Option<String>,
    /// The architecture's `Config` (absent for TorchScript).
    #[serde(default)]
    pub config: Option<serde_json::Value>,
}

/// The weights file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    /// File name inside the model folder (no path separators).
    pub file: String,
    /// `safetensors` or `torchscript`.
    pub format: String,
    /// Lower-case hex sha256 of the file.
    pub sha256: String,
}

/// What the model takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    /// Imaging modality.
    pub modality: String,
    /// Tensor layout.
    pub layout: String,
    /// The time grid and normalisation.
    #[serde(flatten)]
    pub spec: ModelInputSpec,
    /// Voxel spacing of the training data (informative; the network is applied at any spacing).
    #[serde(default)]
    pub spacing_mm: Option<[f64; 3]>,
    /// Preprocessing, in words.
    #[serde(default)]
    pub preprocessing: String,
}

/// One output channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// `cbv`, `cbf` or `ttp`.
    pub name: String,
    /// Physical unit.
    pub unit: String,
    /// Physical value of an output of 1 (outputs are in [0, 1]).
    pub scale: f64,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// Identifier.
    pub id: String,
    /// Version of the weights.
    pub version: String,
    /// `perfusion-maps`.
    pub task: String,
    /// Always true for our models.
    pub research_use_only: bool,
    /// Licence of the weights.
    pub license: String,
    /// Architecture.
    pub architecture: Architecture,
    /// Weights file and checksum.
    pub weights: Weights,
    /// Inputs.
    pub inputs: Inputs,
    /// Outputs, in channel order.
    pub outputs: Vec<Output>,
    /// How the weights were trained (data, targets, recipe, results).
    #[serde(default)]
    pub training: serde_json::Value,
}

impl Manifest {
    /// Read and check `dir/manifest.json` (not the weights). The folder, every folder above it
    /// and the file pass the trust rules (`imhost_plugin_host::trust`: not writable by others,
    /// owned by you or root), checked on the descriptors that are read.
    pub fn read(dir: &Path) -> Result<Self> {
        let (_, bytes) = read_trusted(dir, FILE_NAME, MAX_MANIFEST_BYTES)?;
        let path = dir.join(FILE_NAME);
        let m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::format(format!("{}: not a valid model manifest: {e}", path.display())))?;
        m.check().map_err(|e| e.context(path.display()))?;
        Ok(m)
    }

    /// Write `dir/manifest.json`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(FILE_NAME);
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::internal(e.to_string()))?;
        imhost_core::io::output::write_text(&path, &(text + "\n"))
    }

    /// Consistency checks that need no file.
    pub fn check(&self) -> Result<()> {
        if self.format != FORMAT {
            return Err(Error::unsupported(format!("manifest format {:?}; this imhost reads {FORMAT:?}", self.format)));
        }
        if self.weights.file.is_empty() || self.weights.file.contains(['/', '\\']) || self.weights.file.starts_with('.')
        {
            return Err(Error::format(format!(
                "weights.file {:?} must be a plain file name inside the model folder",
                self.weights.file
            )));
        }
        if self.weights.sha256.len() != 64 || !self.weights.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::format("weights.sha256 must be 64 hex digits"));
        }
        self.inputs.spec.validate()?;
        let names: Vec<&str> = self.outputs.iter().map(|o| o.name.as_str()).collect();
        if self.task == "perfusion-maps" && names != ["cbv", "cbf", "ttp"] {
            return Err(Error::format(format!(
                "perfusion-maps models output [cbv, cbf, ttp]; the manifest lists {names:?}"
            )));
        }
        if self.outputs.iter().any(|o| !(o.scale.is_finite() && o.scale > 0.0)) {
            return Err(Error::format("every output scale must be a positive number"));
        }
        Ok(())
    }

    /// The output scale of a perfusion-maps model.
    pub fn output_scale(&self) -> ModelOutputScale {
        let s = |n: &str| self.outputs.iter().find(|o| o.name == n).map_or(1.0, |o| o.scale);
        ModelOutputScale { cbv: s("cbv"), cbf: s("cbf"), ttp_s: s("ttp") }
    }

    /// Read the weights file (trusted, see [`Manifest::read`]) and verify it against the
    /// manifest's sha256; the bytes returned are the ones verified, so nothing can change them
    /// between the check and the load.
    pub fn read_weights(&self, dir: &Path) -> Result<(PathBuf, Vec<u8>)> {
        let (path, bytes) = read_trusted(dir, &self.weights.file, imhost_core::memory::available_bytes_or(u64::MAX))?;
        let found = sha256_hex(&bytes);
        if !found.eq_ignore_ascii_case(&self.weights.sha256) {
            return Err(Error::format(format!(
                "{}: sha256 {found} does not match the manifest's {}: the weights are corrupt or were replaced",
                path.display(),
                self.weights.sha256
            )));
        }
        Ok((path, bytes))
    }
}

/// Read `name` in the folder `dir` after the trust checks (folder, folders above, file), at most
/// `max` bytes. Refusals are [`imhost_core::ErrorKind::Untrusted`] errors naming the file.
pub fn read_trusted(dir: &Path, name: &str, max: u64) -> Result<(PathBuf, Vec<u8>)> {
    use imhost_plugin_host::trust::TrustedDir;
    let refusal = |m: String| {
        if m.starts_with("refused") { Error::untrusted(m) } else { Error::new(imhost_core::ErrorKind::Io, m) }
    };
    let folder = TrustedDir::open(dir).map_err(refusal)?;
    let file = folder.open_file(name).map_err(refusal)?;
    let bytes = file.read_all(max).map_err(Error::too_large)?;
    Ok((file.path, bytes))
}

/// Lower-case hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Lower-case hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::from(e).in_file(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::from(e).in_file(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_a_known_string() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        // FIPS 180-2 test vector.
        assert_eq!(sha256_file(&p).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
