//! Reading and writing images: NIfTI files and DICOM series (folders).

pub mod dicom;
pub mod nifti;
pub mod output;
pub mod png;

use std::path::Path;

use crate::error::Result;
use crate::volume::AnyVolume;

/// Read an image file with default options, choosing the format by its content.
pub fn read_volume(path: &Path) -> Result<AnyVolume> {
    if path.is_dir() {
        return dicom::read_dicom_series(path, &dicom::DicomReadOptions::default());
    }
    nifti::read_nifti(path, &nifti::ReadOptions::default()).map(|(v, _)| v)
}

/// Write an image file with default options; the format follows the extension.
pub fn write_volume(volume: &AnyVolume, path: &Path) -> Result<()> {
    nifti::write_any(volume, path, &nifti::WriteOptions::default())
}
