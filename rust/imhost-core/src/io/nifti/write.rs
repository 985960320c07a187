//! Writing volumes as `.nii` / `.nii.gz`.
//!
//! NIfTI-1 files are written by the `nifti` crate from a reference header built here; NIfTI-2
//! (chosen automatically when an axis exceeds NIfTI-1's 32767 voxels) by this module. Both carry
//! the geometry twice, as the NIfTI standard recommends: an sform (exact, may hold shear) and a
//! qform (the nearest rotation), both with code 1 (scanner anatomical). Frame times go to
//! `pixdim[4]` and `toffset` in seconds; non-uniform times additionally go to a JSON sidecar.
//!
//! Every file is written under a temporary name in the destination folder and renamed into place
//! once complete, so a failed or interrupted write never leaves a half-written file under the
//! final name, and never destroys the previous file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{ArrayView4, Axis};

use super::header::{self, Endian, Header, NiftiVersion, datatype, units};
use super::sidecar;
use crate::dtype::{DType, Voxel};
use crate::error::{Error, Result};
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
    match version {
        NiftiVersion::Nifti1 => write_atomically(path, |temp| write_nifti1(view, &header, temp, compressed, level))?,
        NiftiVersion::Nifti2 => write_file_atomically(path, |w| {
            if compressed {
                let mut gz = flate2::write::GzEncoder::new(w, level);
                write_nifti2(view, &header, &mut gz)?;
                gz.finish()?;
                Ok(())
            } else {
                write_nifti2(view, &header, w)
            }
        })?,
    }

    if let Some(times) = view.frame_times() {
        let sidecar = sidecar::sidecar_path(path);
        if uniform_interval(times).is_none() && times.len() > 1 || sidecar.exists() {
            sidecar::write_frame_times(path, times)?;
        }
    }
    Ok(())
}

fn nifti_datatype(dtype: DType) -> (i16, nifti::NiftiType) {
    match dtype {
        DType::U8 => (datatype::UINT8, nifti::NiftiType::Uint8),
        DType::I16 => (datatype::INT16, nifti::NiftiType::Int16),
        DType::U16 => (datatype::UINT16, nifti::NiftiType::Uint16),
        DType::I32 => (datatype::INT32, nifti::NiftiType::Int32),
        DType::F32 => (datatype::FLOAT32, nifti::NiftiType::Float32),
        DType::F64 => (datatype::FLOAT64, nifti::NiftiType::Float64),
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
    let (code, _) = nifti_datatype(T::DTYPE);
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

fn write_nifti1<T: Voxel>(
    view: &VolumeView<'_, T>,
    h: &Header,
    target: &Path,
    compressed: bool,
    level: flate2::Compression,
) -> Result<()> {
    let mut reference = nifti::NiftiHeader {
        dim: h.dim.map(|d| d as u16),
        pixdim: h.pixdim.map(|p| p as f32),
        toffset: h.toffset as f32,
        xyzt_units: h.xyzt_units,
        qform_code: h.qform_code as i16,
        sform_code: h.sform_code as i16,
        quatern_b: h.quatern[0] as f32,
        quatern_c: h.quatern[1] as f32,
        quatern_d: h.quatern[2] as f32,
        quatern_x: h.qoffset[0] as f32,
        quatern_y: h.qoffset[1] as f32,
        quatern_z: h.qoffset[2] as f32,
        srow_x: h.srow[0].map(|v| v as f32),
        srow_y: h.srow[1].map(|v| v as f32),
        srow_z: h.srow[2].map(|v| v as f32),
        endianness: match h.endian {
            Endian::Little => nifti::Endianness::Little,
            Endian::Big => nifti::Endianness::Big,
        },
        ..nifti::NiftiHeader::default()
    };
    let mut descrip = h.descrip.as_bytes().to_vec();
    descrip.truncate(79);
    reference.set_description(descrip).map_err(|e| Error::internal(e.to_string()))?;

    let (_, nifti_type) = nifti_datatype(T::DTYPE);
    // `target` ends in .nii or .nii.gz with a dot-free stem, which the crate keeps as it is.
    let options = nifti::writer::WriterOptions::new(target).reference_header(&reference);
    let options = if compressed { options.compression_level(level) } else { options.compress(false) };
    let data = view.data();
    let result = if view.is_4d() {
        options.write_nifti_with_type(data, nifti_type)
    } else {
        options.write_nifti_with_type(&data.index_axis(Axis(3), 0), nifti_type)
    };
    result.map_err(|e| Error::new(crate::ErrorKind::Io, format!("NIfTI-1 writer failed: {e}")))
}

fn write_nifti2<T: Voxel>(view: &VolumeView<'_, T>, h: &Header, w: &mut dyn Write) -> Result<()> {
    w.write_all(&header::serialize_nifti2(h))?;
    w.write_all(&[0u8; 4])?; // no extensions
    write_voxels(view.data(), h.endian, w)
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

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Let `write` create a temporary file next to `path` (at the path it is given, which keeps the
/// `.nii`, `.nii.gz` or `.json` ending), then flush it to disk and rename it onto `path`. On
/// failure the temporary file is removed and `path` is left as it was.
pub(crate) fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(Error::new(crate::ErrorKind::Io, format!("folder '{}' does not exist", dir.display())));
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let ending = [".nii.gz", ".nii", ".json"].into_iter().find(|e| name.ends_with(e)).unwrap_or("");
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let temp = dir.join(format!(".imhost-partial-{}-{n}{ending}", std::process::id()));
    let result = (|| {
        write(&temp)?;
        File::open(&temp)?.sync_all()?;
        std::fs::rename(&temp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// [`write_atomically`] for writers that stream into a buffered file.
pub(crate) fn write_file_atomically(path: &Path, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    write_atomically(path, |temp| {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(temp)?);
        write(&mut out)?;
        out.flush()?;
        Ok(())
    })
}
