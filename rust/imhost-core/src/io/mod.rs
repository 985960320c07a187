//! Reading and writing images. Formats: NIfTI (this issue); DICOM series follow.

pub mod nifti;

use std::path::Path;

use crate::error::{Error, Result};
use crate::volume::AnyVolume;

/// Read an image file with default options, choosing the format by its content.
pub fn read_volume(path: &Path) -> Result<AnyVolume> {
    if path.is_dir() {
        return Err(Error::unsupported("reading a DICOM folder is not supported yet").in_file(path));
    }
    nifti::read_nifti(path, &nifti::ReadOptions::default()).map(|(v, _)| v)
}

/// Write an image file with default options; the format follows the extension.
pub fn write_volume(volume: &AnyVolume, path: &Path) -> Result<()> {
    nifti::write_any(volume, path, &nifti::WriteOptions::default())
}
