//! NIfTI-1 and NIfTI-2 (`.nii`, `.nii.gz`) reading and writing, with frame times from the
//! header or a JSON sidecar.

pub mod header;
mod read;
pub mod sidecar;
mod write;

pub use header::{AffineSource, Endian, NiftiVersion};
pub use read::{NiftiInfo, ReadOptions, available_memory, read_nifti};
pub use write::{WriteOptions, write_any, write_nifti};
