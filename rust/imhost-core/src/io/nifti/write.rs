//! Writing volumes as `.nii` / `.nii.gz`.
//!
//! Headers are serialised here for both versions (NIfTI-2 is chosen automatically when an axis
//! exceeds NIfTI-1's 32767 voxels), into the writer of an atomic write. Both carry
//! the geometry twice, as the NIfTI standard recommends: an sform (exact, may hold shear) and a
//! qform (the nearest rotation), both with code 1 (scanner anatomical). Frame times go to
//! `pixdim[4]` and `toffset` in seconds; non-uniform times additionally go to a JSON sidecar.
//!
//! Every file is written through [`crate::io::output::write_atomically`]: under an unpredictable
//! temporary name created with `O_EXCL` in the destination folder, renamed into place once
//! complete, so a failed or interrupted write never leaves a half-written file under the final
//! name, never destroys the previous file and never writes through a planted link.

use std::io::Write;
use std::path::Path;

use ndarray::{ArrayView4, Axis};

use super::header::{self, Endian, Header, NiftiVersion, datatype, units};
use super::sidecar;
use crate::dtype::{DType, Voxel};
use crate::error::{Error, Result};
use crate::io::output::write_atomically;
use crate::volume::{AnyVolume, VolumeView, uniform_interval};
use crate::with_volume;

/// Options for [`write_nifti`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WriteOptions {
    /// NIfTI-1 or NIfTI-2; `None` picks NIfTI-1 unless an axis is longer than 32767.
    pub version: Option<NiftiVersion>,
    /// gzip level 0–9 for `.nii.gz` (default 1: fast, most of the gain on CT).
    pub compression_level: u32,
    /// Byte order of the file (default: this machine's).
    pub endian: Endian,
    /// The header's `descrip` text (at most 79 bytes are kept).
    pub description: String,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            version: None,
            compression_level: 1,
            endian: Endian::native(),
            description: format!("imhost {} - research use only", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Write any volume (see [`write_nifti`]).
pub fn write_any(volume: &AnyVolume, path: &Path, options: &WriteOptions) -> Result<()> {
    with_volume!(volume, v => write_nifti(&v.view(), path, options))
}

/// Write a volume to `path`, which must end in `.nii` or `.nii.gz`.
pub fn write_nifti<T: Voxel>(view: &VolumeView<'_, T>, path: &Path, options: &WriteOptions) -> Result<()> {
    write_inner(view, path, options).map_err(|e| e.in_file(path))
}

fn write_inner<T: Voxel>(view: &VolumeView<'_, T>, path: &Path, options: &WriteOptions) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let compressed = if name.ends_with(".nii.gz") {
        true
    } else if name.ends_with(".nii") {
        false
    } else {
        return Err(Error::invalid_argument("the output file name must end in .nii or .nii.gz"));
    };
    if options.compression_level > 9 {
        return Err(Error::invalid_argument(format!("gzip level {} is not in 0..=9", options.compression_level)));
    }
    let shape = view.shape();
    let longest = shape.iter().copied().max().unwrap_or(0);
    let version = match options.version {
        Some(NiftiVersion::Nifti1) if longest > i16::MAX as usize => {
            return Err(Error::invalid_argument(format!(
                "an axis of {longest} voxels does not fit NIfTI-1 (at most 32767); write NIfTI-2"
            )));
        }
        Some(v) => v,
        None if longest > i16::MAX as usize => NiftiVersion::Nifti2,
        None => NiftiVersion::Nifti1,
    };
    let header = build_header(view, version, options)?;

    let level = flate2::Compression::new(options.compression_level);
    let serialized = match version {
        NiftiVersion::Nifti1 => header::serialize_nifti1(&header),
        NiftiVersion::Nifti2 => header::serialize_nifti2(&header),
    };
    write_atomically(path, |w| {
        let body = |w: &mut dyn Write| -> Result<()> {
            w.write_all(&serialized)?;
            w.write_all(&[0u8; 4])?; // no extensions
            write_voxels(view.data(), header.endian, w)
        };
        if compressed {
            let mut gz = flate2::write::GzEncoder::new(w, level);
            body(&mut gz)?;
            gz.finish()?;
            Ok(())
        } else {
            body(w)
        }
    })?;

    if let Some(times) = view.frame_times() {
        let sidecar = sidecar::sidecar_path(path);
        if uniform_interval(times).is_none() && times.len() > 1 || sidecar.exists() {
            sidecar::write_frame_times(path, times)?;
        }
    }
    Ok(())
}

fn nifti_datatype(dtype: DType) -> i16 {
    match dtype {
        DType::U8 => datatype::UINT8,
        DType::I16 => datatype::INT16,
        DType::U16 => datatype::UINT16,
        DType::I32 => datatype::INT32,
        DType::F32 => datatype::FLOAT32,
        DType::F64 => datatype::FLOAT64,
    }
}

/// The header describing `view`, in the widened form shared by both versions.
fn build_header<T: Voxel>(view: &VolumeView<'_, T>, version: NiftiVersion, options: &WriteOptions) -> Result<Header> {
    let g = view.geometry();
    let ras = g.ijk_to_ras();
    let ras_direction = std::array::from_fn(|r| std::array::from_fn(|c| ras[r][c] / g.spacing[c]));
    let (quatern, qfac) = header::rotation_to_quaternion(&ras_direction);
    let [ni, nj, nk, nt] = shape_i64(view.shape());
    let (ndim, nt_dim) = if view.is_4d() { (4, nt) } else { (3, 1) };
    let (time_step, toffset) = match view.frame_times() {
        Some(times) => {
            let step = uniform_interval(times).unwrap_or_else(|| median_interval(times));
            (step, times[0])
        }
        None => (0.0, 0.0),
    };
    let code = nifti_datatype(T::DTYPE);
    Ok(Header {
        version,
        endian: options.endian,
        dim: [ndim, ni, nj, nk, nt_dim, 1, 1, 1],
        datatype: code,
        bitpix: (T::DTYPE.size_of() * 8) as i16,
        pixdim: [qfac, g.spacing[0], g.spacing[1], g.spacing[2], time_step, 0.0, 0.0, 0.0],
        vox_offset: match version {
            NiftiVersion::Nifti1 => 352.0,
            NiftiVersion::Nifti2 => 544.0,
        },
        scl_slope: 1.0,
        scl_inter: 0.0,
        toffset,
        xyzt_units: units::MM | units::SEC,
        qform_code: header::XFORM_SCANNER_ANAT,
        sform_code: header::XFORM_SCANNER_ANAT,
        quatern,
        qoffset: [ras[0][3], ras[1][3], ras[2][3]],
        srow: [ras[0], ras[1], ras[2]],
        descrip: options.description.clone(),
        single_file: true,
    })
}

fn shape_i64(shape: [usize; 4]) -> [i64; 4] {
    shape.map(|n| n as i64)
}

fn median_interval(times: &[f64]) -> f64 {
    let mut d: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    d.sort_by(|a, b| a.total_cmp(b));
    d.get(d.len() / 2).copied().unwrap_or(0.0)
}

/// Voxels in NIfTI order (`i` fastest), in the requested byte order.
fn write_voxels<T: Voxel>(data: &ArrayView4<'_, T>, endian: Endian, w: &mut dyn Write) -> Result<()> {
    let swap = endian != Endian::native();
    if !swap {
        if let Some(slice) = data.t().to_slice() {
            w.write_all(bytemuck::cast_slice(slice))?;
            return Ok(());
        }
    }
    let (_, _, nk, nt) = data.dim();
    let mut buffer: Vec<T> = Vec::new();
    for t in 0..nt {
        for k in 0..nk {
            buffer.clear();
            let plane = data.index_axis(Axis(3), t);
            let plane = plane.index_axis(Axis(2), k);
            buffer.extend(plane.t().iter().map(|&v| if swap { v.swap_bytes() } else { v }));
            w.write_all(bytemuck::cast_slice(&buffer))?;
        }
    }
    Ok(())
}
