//! Reading `.nii` and `.nii.gz` (NIfTI-1 and NIfTI-2, either byte order) into an [`AnyVolume`].
//!
//! Order of work, so that a lying header costs nothing: parse and validate the header, compute the
//! voxel byte count with overflow checks, compare it with the memory limit and (uncompressed) with
//! the file's length, and only then allocate — once, for exactly the claimed size — and fill the
//! buffer with a single `read_exact`. Compressed files, whose length says nothing, are read in
//! bounded chunks so that a truncated stream fails before a claimed-but-absent gigabyte is
//! allocated.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use bytemuck::Pod;
use ndarray::{Array4, ShapeBuilder};

use super::header::{self, Endian, Header, Layout, NiftiVersion, datatype};
use super::sidecar;
use crate::dtype::Voxel;
use crate::error::{Error, ErrorKind, Result};
use crate::geometry::Geometry;
use crate::volume::{AnyVolume, FrameTimes, TimeSource, Volume};

/// Options for [`read_nifti`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReadOptions {
    /// Refuse files whose voxels (after any conversion) would need more bytes than this.
    /// Default: what this process may still allocate now ([`crate::memory::budget`]: the least
    /// of `MemAvailable`, `RLIMIT_AS`/`RLIMIT_DATA` headroom and the cgroup's), or 16 GiB where
    /// none is known.
    pub max_bytes: u64,
    /// Look for a JSON sidecar with `"FrameTimes"` next to the file. Default: true.
    pub use_sidecar: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions { max_bytes: crate::memory::available_bytes_or(16 << 30), use_sidecar: true }
    }
}

/// What was read besides the voxels, for reports and `imhost info`.
#[derive(Debug, Clone, PartialEq)]
pub struct NiftiInfo {
    /// NIfTI-1 or NIfTI-2.
    pub version: NiftiVersion,
    /// Byte order of the file.
    pub endian: Endian,
    /// Stored NIfTI datatype name (e.g. `"int16"`).
    pub stored_type: &'static str,
    /// `(slope, intercept)` if the stored values were scaled.
    pub scaling: Option<(f64, f64)>,
    /// Where the geometry came from.
    pub affine_source: header::AffineSource,
    /// Whether the file was gzip-compressed.
    pub compressed: bool,
}

/// Read a NIfTI file. Frame times of a 4-D image come from a JSON sidecar (same name, `.json`,
/// key `"FrameTimes"`, seconds) when there is one, else from `pixdim[4]`, `toffset` and the time
/// unit; when neither is usable the frames are assumed 1 s apart and marked
/// [`TimeSource::Assumed`].
pub fn read_nifti(path: &Path, options: &ReadOptions) -> Result<(AnyVolume, NiftiInfo)> {
    read_nifti_inner(path, options).map_err(|e| e.in_file(path))
}

fn read_nifti_inner(path: &Path, options: &ReadOptions) -> Result<(AnyVolume, NiftiInfo)> {
    let file = File::open(path).map_err(|e| Error::new(ErrorKind::Io, "cannot open file").with_source(e))?;
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    // A second handle for positional (parallel) reads of uncompressed voxel data.
    let positional = file.try_clone().ok();
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let compressed = {
        let peek = std::io::BufRead::fill_buf(&mut reader)?;
        peek.starts_with(&[0x1f, 0x8b])
    };
    let mut source: Box<dyn Read> =
        if compressed { Box::new(flate2::bufread::MultiGzDecoder::new(reader)) } else { Box::new(reader) };

    let header = read_header(&mut source)?;
    let layout = header::layout(&header)?;
    let scaling = header::scaling(&header)?;
    let (geometry, affine_source) = header::geometry(&header)?;
    let stored = header::stored_type(header.datatype)?;

    // Memory: the stored voxels plus, when values are converted (scaling, exotic types), the
    // converted copy.
    let converted_bytes = match converted_bytes_per_voxel(header.datatype, scaling.is_some()) {
        Some(size) => (layout.voxel_count as u64).saturating_mul(size),
        None => 0,
    };
    let needed = layout.data_bytes.saturating_add(converted_bytes);
    if needed > options.max_bytes {
        return Err(Error::too_large(format!(
            "image of {:?} voxels needs {} MiB, more than the {} MiB this process may allocate",
            layout.shape,
            needed >> 20,
            options.max_bytes >> 20
        )));
    }
    if !compressed && layout.data_offset.saturating_add(layout.data_bytes) > file_len {
        return Err(Error::format(format!(
            "file is truncated: the header claims {} bytes of voxel data from offset {}, but the file holds {} bytes",
            layout.data_bytes, layout.data_offset, file_len
        )));
    }

    // Skip extensions between the header and the voxels.
    let skip = layout.data_offset - header.header_size() as u64;
    let skipped = std::io::copy(&mut (&mut source).take(skip), &mut std::io::sink())?;
    if skipped != skip {
        return Err(Error::format("file ends inside the header extensions"));
    }

    let (frame_times, warning) = match layout.is_4d {
        true => {
            let (times, warning) = frame_times(path, &header, layout.shape[3], options)?;
            (Some(times), warning)
        }
        false => (None, None),
    };
    let raw = if compressed { Raw::Stream(&mut *source) } else { Raw::File(positional.as_ref(), &mut *source) };
    let volume = read_voxels(raw, &header, &layout, scaling, geometry, frame_times)?;
    // Warn only about files that could be read: a broken file gets its one error, nothing else.
    if let Some(warning) = warning {
        tracing::warn!("'{}': {warning}", path.display());
    }
    tracing::debug!(shape = ?layout.shape, stored = stored.name, compressed, "read {}", path.display());
    let info = NiftiInfo {
        version: header.version,
        endian: header.endian,
        stored_type: stored.name,
        scaling,
        affine_source,
        compressed,
    };
    Ok((volume, info))
}

fn read_header(source: &mut dyn Read) -> Result<Header> {
    let mut buf = [0u8; header::NIFTI2_HEADER_SIZE];
    source.read_exact(&mut buf[..4]).map_err(|_| Error::format("file is too short to hold a NIfTI header"))?;
    let (version, endian) = header::detect([buf[0], buf[1], buf[2], buf[3]])?;
    let size = match version {
        NiftiVersion::Nifti1 => header::NIFTI1_HEADER_SIZE,
        NiftiVersion::Nifti2 => header::NIFTI2_HEADER_SIZE,
    };
    source.read_exact(&mut buf[4..size]).map_err(|_| Error::format("file ends inside the NIfTI header"))?;
    match version {
        NiftiVersion::Nifti1 => header::parse_nifti1(&buf[..size]),
        NiftiVersion::Nifti2 => header::parse_nifti2(&buf[..size], endian),
    }
}

/// Frame times, and a warning to log once the file has been read if they had to be assumed.
fn frame_times(path: &Path, h: &Header, frames: usize, options: &ReadOptions) -> Result<(FrameTimes, Option<String>)> {
    if options.use_sidecar {
        if let Some(times) = sidecar::read_frame_times(path)? {
            if times.len() != frames {
                return Err(Error::format(format!(
                    "the sidecar lists {} frame times but the image has {frames} frames",
                    times.len()
                )));
            }
            let times = FrameTimes::new(times, TimeSource::Sidecar)
                .map_err(|e| e.context("invalid FrameTimes in the sidecar"))?;
            return Ok((times, None));
        }
    }
    let scale = match h.xyzt_units & 0o70 {
        header::units::MSEC => 1e-3,
        header::units::USEC => 1e-6,
        // Seconds, or unknown: scanners and converters that leave the unit unset use seconds.
        header::units::SEC | 0 => 1.0,
        other => {
            let warning = format!("the time axis is in unit code {other}, not a time; assuming frames 1 s apart");
            return Ok((FrameTimes::uniform(frames, 0.0, 1.0, TimeSource::Assumed)?, Some(warning)));
        }
    };
    let step = h.pixdim[4] * scale;
    let start = if h.toffset.is_finite() { h.toffset * scale } else { 0.0 };
    if step.is_finite() && step > 0.0 {
        Ok((FrameTimes::uniform(frames, start, step, TimeSource::Header)?, None))
    } else {
        let warning = format!(
            "no frame interval in the header (pixdim[4] = {}) and no sidecar; assuming frames 1 s apart",
            h.pixdim[4]
        );
        Ok((FrameTimes::uniform(frames, 0.0, 1.0, TimeSource::Assumed)?, Some(warning)))
    }
}

/// Bytes per voxel of the converted copy when stored values are converted rather than used in
/// place (scaled values become f32 or f64; int8 becomes i16; 64-bit and uint32 become f64).
fn converted_bytes_per_voxel(code: i16, scaled: bool) -> Option<u64> {
    use datatype::*;
    match (code, scaled) {
        (UINT8 | INT8 | INT16 | UINT16 | FLOAT32, true) => Some(4),
        (_, true) => Some(8),
        (INT8, false) => Some(2),
        (UINT32 | INT64 | UINT64, false) => Some(8),
        _ => None,
    }
}

/// Where the voxel bytes come from: a decompressing stream, or the file itself (positioned at the
/// data, with an optional second handle for positional reads).
enum Raw<'a> {
    Stream(&'a mut dyn Read),
    File(Option<&'a File>, &'a mut dyn Read),
}

fn read_voxels(
    source: Raw<'_>,
    h: &Header,
    layout: &Layout,
    scaling: Option<(f64, f64)>,
    geometry: Geometry,
    frame_times: Option<FrameTimes>,
) -> Result<AnyVolume> {
    use datatype::*;
    let ctx = Ctx { layout, geometry, frame_times, endian: h.endian };
    Ok(match (h.datatype, scaling) {
        (UINT8, None) => ctx.native::<u8>(source)?.into(),
        (INT16, None) => ctx.native::<i16>(source)?.into(),
        (UINT16, None) => ctx.native::<u16>(source)?.into(),
        (INT32, None) => ctx.native::<i32>(source)?.into(),
        (FLOAT32, None) => ctx.native::<f32>(source)?.into(),
        (FLOAT64, None) => ctx.native::<f64>(source)?.into(),
        (INT8, None) => ctx.converted::<i8, i16>(source, |v| v as i16)?.into(),
        (UINT32, None) => ctx.converted_lossy::<u32>(source, |v| v as f64)?.into(),
        (INT64, None) => ctx.converted_lossy::<i64>(source, |v| v as f64)?.into(),
        (UINT64, None) => ctx.converted_lossy::<u64>(source, |v| v as f64)?.into(),
        (code, Some((m, b))) => match code {
            UINT8 => ctx.converted::<u8, f32>(source, |v| (v as f64 * m + b) as f32)?.into(),
            INT8 => ctx.converted::<i8, f32>(source, |v| (v as f64 * m + b) as f32)?.into(),
            INT16 => ctx.converted::<i16, f32>(source, |v| (v as f64 * m + b) as f32)?.into(),
            UINT16 => ctx.converted::<u16, f32>(source, |v| (v as f64 * m + b) as f32)?.into(),
            FLOAT32 => ctx.converted::<f32, f32>(source, |v| (v as f64 * m + b) as f32)?.into(),
            INT32 => ctx.converted::<i32, f64>(source, |v| v as f64 * m + b)?.into(),
            UINT32 => ctx.converted::<u32, f64>(source, |v| v as f64 * m + b)?.into(),
            INT64 => ctx.converted::<i64, f64>(source, |v| v as f64 * m + b)?.into(),
            UINT64 => ctx.converted::<u64, f64>(source, |v| v as f64 * m + b)?.into(),
            FLOAT64 => ctx.converted::<f64, f64>(source, |v| v * m + b)?.into(),
            other => return Err(Error::format(format!("unknown NIfTI datatype code {other}"))),
        },
        (other, None) => return Err(Error::format(format!("unknown NIfTI datatype code {other}"))),
    })
}

struct Ctx<'a> {
    layout: &'a Layout,
    geometry: Geometry,
    frame_times: Option<FrameTimes>,
    endian: Endian,
}

impl Ctx<'_> {
    fn native<T: Voxel>(self, source: Raw<'_>) -> Result<Volume<T>> {
        let mut data: Vec<T> = read_stored(source, self.layout)?;
        if self.endian != Endian::native() && size_of::<T>() > 1 {
            data.iter_mut().for_each(|v| *v = v.swap_bytes());
        }
        self.finish(data)
    }

    fn converted<S: Pod + SwapBytes, T: Voxel>(self, source: Raw<'_>, f: impl Fn(S) -> T) -> Result<Volume<T>> {
        let stored: Vec<S> = read_stored(source, self.layout)?;
        let swap = self.endian != Endian::native();
        let data = stored.into_iter().map(|v| f(if swap { v.swap() } else { v })).collect();
        self.finish(data)
    }

    fn converted_lossy<S: Pod + SwapBytes>(self, source: Raw<'_>, f: impl Fn(S) -> f64) -> Result<Volume<f64>> {
        tracing::debug!("64-bit or unsigned 32-bit integers are delivered as f64 (exact up to 2^53)");
        self.converted(source, f)
    }

    fn finish<T: Voxel>(self, data: Vec<T>) -> Result<Volume<T>> {
        let array = Array4::from_shape_vec(self.layout.shape.f(), data)
            .map_err(|e| Error::internal(format!("voxel buffer does not fit its shape: {e}")))?;
        Volume::from_parts(array, self.geometry, self.frame_times)
    }
}

/// Read the stored values. Uncompressed input (whose length was checked against the header) gets
/// one allocation filled by positional reads, split over a few threads for large studies so
/// that page faulting and copying use every core; compressed input grows in chunks of at most
/// 64 MiB, so a lying header costs at most one chunk.
fn read_stored<S: Pod>(source: Raw<'_>, layout: &Layout) -> Result<Vec<S>> {
    let count = layout.voxel_count;
    let truncated = |got: usize| {
        Error::format(format!(
            "file is truncated: the header claims {count} voxels but the data ends after about {got}"
        ))
    };
    match source {
        Raw::File(positional, stream) => {
            let mut data: Vec<S> = bytemuck::allocation::zeroed_vec(count);
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut data);
            match positional {
                Some(file) if bytes.len() >= PARALLEL_READ_MIN => read_parallel(file, layout.data_offset, bytes)?,
                _ => stream.read_exact(bytes).map_err(|_| truncated(0))?,
            }
            Ok(data)
        }
        Raw::Stream(stream) => {
            let chunk = ((64usize << 20) / size_of::<S>().max(1)).max(1);
            let mut data: Vec<S> = Vec::new();
            while data.len() < count {
                let start = data.len();
                let end = (start + chunk).min(count);
                // Growth that the system refuses is an error, not an abort.
                data.try_reserve(end - start).map_err(|_| {
                    Error::too_large(format!("out of memory after {} MiB of voxels", (start * size_of::<S>()) >> 20))
                })?;
                data.resize(end, S::zeroed());
                stream.read_exact(bytemuck::cast_slice_mut(&mut data[start..end])).map_err(|_| truncated(start))?;
            }
            Ok(data)
        }
    }
}

/// Below this many bytes a single read is as fast as several.
const PARALLEL_READ_MIN: usize = 64 << 20;

/// Fill `bytes` from `file` at `offset` with one positional read per thread.
fn read_parallel(file: &File, offset: u64, bytes: &mut [u8]) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
    let part = bytes.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = bytes
            .chunks_mut(part)
            .enumerate()
            .map(|(n, chunk)| scope.spawn(move || file.read_exact_at(chunk, offset + (n * part) as u64)))
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or_else(|_| Err(std::io::Error::other("reader thread panicked"))))
    })
    .map_err(|e| Error::from(e).context("reading voxel data"))
}

/// Byte swapping for every stored type (including those that are not [`Voxel`]s).
trait SwapBytes: Copy {
    fn swap(self) -> Self;
}
macro_rules! swap_int {
    ($($t:ty),*) => {$(impl SwapBytes for $t { fn swap(self) -> Self { self.swap_bytes() } })*};
}
swap_int!(u8, i8, i16, u16, i32, u32, i64, u64);
impl SwapBytes for f32 {
    fn swap(self) -> Self {
        f32::from_bits(self.to_bits().swap_bytes())
    }
}
impl SwapBytes for f64 {
    fn swap(self) -> Self {
        f64::from_bits(self.to_bits().swap_bytes())
    }
}

/// What this process may still allocate ([`crate::memory::budget`]), where known.
pub fn available_memory() -> Option<u64> {
    crate::memory::budget().map(|b| b.bytes)
}
