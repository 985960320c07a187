//! The manifest of a coronary-calcium model folder (`imhost-model/1`, task `coronary-calcium`):
//! the architecture, the ensemble's members with their sha256, the preprocessing and the
//! training record. Read without LibTorch (the registry lists the model from it).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::network::read_trusted;
use imhost_core::{Error, Result};

/// `task` of a CAC model folder's manifest.
pub const TASK: &str = "coronary-calcium";
/// Members of the ensemble (the paper's five).
pub const MEMBERS: usize = 5;

/// One member's weights file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// File name in the folder.
    pub file: String,
    /// Lower-case hex sha256.
    pub sha256: String,
    /// Its training figures.
    #[serde(default)]
    pub training: serde_json::Value,
}

/// `manifest.json` of a CAC model folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacManifest {
    /// `imhost-model/1`.
    pub format: String,
    /// Identifier.
    pub id: String,
    /// Version of the weights.
    pub version: String,
    /// [`TASK`].
    pub task: String,
    /// Always true.
    pub research_use_only: bool,
    /// Licence of the weights.
    pub license: String,
    /// `{ "name": "cac-unet3d", "paper": …, "config": {base_width, levels} }`.
    pub architecture: crate::network::Architecture,
    /// The members, voted per voxel (a voxel is calcium when more than half say so).
    pub members: Vec<Member>,
    /// Preprocessing, in words.
    pub preprocessing: String,
    /// How the members were trained (data, recipe, validation).
    #[serde(default)]
    pub training: serde_json::Value,
}

impl CacManifest {
    /// Read and check `dir/manifest.json` (trusted folder and file).
    pub fn read(dir: &Path) -> Result<Self> {
        let (path, bytes) = read_trusted(dir, crate::network::FILE_NAME, 1 << 20)?;
        let m: CacManifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::format(format!("{}: not a valid CAC model manifest: {e}", path.display())))?;
        if m.format != crate::network::FORMAT || m.task != TASK {
            return Err(Error::format(format!("{}: not a {TASK} model ({}, {})", path.display(), m.format, m.task)));
        }
        if m.members.is_empty() || m.members.len() > 15 {
            return Err(Error::format(format!("{}: {} members (1 to 15)", path.display(), m.members.len())));
        }
        for member in &m.members {
            if member.file.is_empty() || member.file.contains(['/', '\\']) || member.file.starts_with('.') {
                return Err(Error::format(format!("member file {:?} must be a plain file name", member.file)));
            }
            if member.sha256.len() != 64 || !member.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::format("every member's sha256 must be 64 hex digits"));
            }
        }
        Ok(m)
    }
}
