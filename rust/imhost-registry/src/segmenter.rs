//! The manifest of a 2-D segmentation network folder (`imhost-model/1`, task
//! `segmentation-2d`): the architecture (`multiresunet`), the weights file and its sha256, what
//! the image must be and how it is normalised, the registry id it is served as, and the
//! training record. Read without LibTorch (the registry lists the model from it).
//!
//! ```json
//! { "format": "imhost-model/1", "id": "multiresunet-nuclei-phantom", "version": "0.1.0",
//!   "task": "segmentation-2d", "model_id": "multiresunet-nuclei", "research_use_only": true,
//!   "license": "Apache-2.0",
//!   "architecture": { "name": "multiresunet", "paper": "…", "config": { "in_channels": 3, "base_width": 8 } },
//!   "weights": { "file": "model.safetensors", "format": "safetensors", "sha256": "…" },
//!   "label": { "name": "nucleus", "color": [80, 200, 255] },
//!   "threshold": 0.5, "preprocessing": "…", "training": { … } }
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::network::{Architecture, FILE_NAME, FORMAT, Weights, read_trusted, sha256_hex};
use imhost_core::{Error, Result};

/// `task` of a 2-D segmentation folder's manifest.
pub const TASK: &str = "segmentation-2d";

/// The foreground label the network segments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    /// Its name (`nucleus`).
    pub name: String,
    /// Display colour.
    pub color: [u8; 3],
}

/// `manifest.json` of a 2-D segmentation folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmenterManifest {
    /// `imhost-model/1`.
    pub format: String,
    /// Identifier of the weights.
    pub id: String,
    /// Version of the weights.
    pub version: String,
    /// [`TASK`].
    pub task: String,
    /// The id the registry serves it as (`multiresunet-nuclei`).
    pub model_id: String,
    /// Always true.
    pub research_use_only: bool,
    /// Licence of the weights.
    pub license: String,
    /// `{ "name": "multiresunet", "paper": …, "config": {in_channels, base_width} }`.
    pub architecture: Architecture,
    /// The weights file and its sha256.
    pub weights: Weights,
    /// The foreground.
    pub label: Label,
    /// Probability at or above which a pixel is foreground (the report's 0.5).
    pub threshold: f64,
    /// Preprocessing, in words.
    pub preprocessing: String,
    /// How it was trained (data, recipe, validation).
    #[serde(default)]
    pub training: serde_json::Value,
}

impl SegmenterManifest {
    /// Read and check `dir/manifest.json` (trusted folder and file).
    pub fn read(dir: &Path) -> Result<Self> {
        let (path, bytes) = read_trusted(dir, FILE_NAME, 1 << 20)?;
        let m: SegmenterManifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::format(format!("{}: not a valid 2-D segmentation manifest: {e}", path.display())))?;
        m.check().map_err(|e| e.context(path.display()))?;
        Ok(m)
    }

    /// Consistency checks that need no file.
    pub fn check(&self) -> Result<()> {
        if self.format != FORMAT || self.task != TASK {
            return Err(Error::format(format!("not a {TASK} model ({}, {})", self.format, self.task)));
        }
        let plain = |s: &str| !s.is_empty() && !s.contains(['/', '\\']) && !s.starts_with('.');
        if !plain(&self.weights.file) {
            return Err(Error::format(format!("weights.file {:?} must be a plain file name", self.weights.file)));
        }
        if self.weights.sha256.len() != 64 || !self.weights.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::format("weights.sha256 must be 64 hex digits"));
        }
        let id_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if !id_ok(&self.model_id) {
            return Err(Error::format(format!("model_id {:?}: lower-case letters, digits and '-'", self.model_id)));
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(Error::format(format!("threshold {} must lie in (0, 1)", self.threshold)));
        }
        Ok(())
    }

    /// Write `dir/manifest.json`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::internal(e.to_string()))?;
        imhost_core::io::output::write_text(&dir.join(FILE_NAME), &(text + "\n"))
    }

    /// Read the weights (trusted) and verify their sha256; the bytes returned are the ones
    /// verified.
    pub fn read_weights(&self, dir: &Path) -> Result<Vec<u8>> {
        let (path, bytes) = read_trusted(dir, &self.weights.file, 1 << 30)?;
        let found = sha256_hex(&bytes);
        if !found.eq_ignore_ascii_case(&self.weights.sha256) {
            return Err(Error::format(format!(
                "{}: sha256 {found} does not match the manifest's {}: the weights are corrupt or were replaced",
                path.display(),
                self.weights.sha256
            )));
        }
        Ok(bytes)
    }
}
