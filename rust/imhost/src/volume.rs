//! `imh_volume`: an image owned by the library (read from a file or produced by an operation).

use imhost_core::io::nifti::{self, ReadOptions, WriteOptions};
use imhost_core::{AnyVolume, with_view, with_volume};

use crate::context::context_arg;
use crate::status::{FfiError, arg_out, arg_ref, ffi_boundary, imh_status, path_arg};
use crate::view::{imh_view, view_from_c, view_to_c};

/// An image owned by the library. Get at its pixels and geometry with `imh_volume_get_view`;
/// free it with `imh_volume_free`.
///
/// Thread safety: a volume is immutable; any number of threads may read it (get its view, write
/// it to a file, pass its view to operations) at the same time.
#[allow(non_camel_case_types)]
pub struct imh_volume {
    pub(crate) volume: AnyVolume,
    /// The DICOM series it was read from (for results written as DICOM).
    pub(crate) dicom: Option<Box<imhost_core::io::dicom::results::ResultSource>>,
}

impl imh_volume {
    /// A volume with no DICOM source.
    pub(crate) fn new(volume: AnyVolume) -> imh_volume {
        imh_volume { volume, dicom: None }
    }
}

/// Wrap a result for the caller, writing `*out` (checked non-NULL by the caller of this).
pub(crate) fn hand_out(volume: AnyVolume, out: *mut *mut imh_volume) {
    // SAFETY: callers pass an `out` they checked with arg_out!, which per the header points to
    // writable storage for one pointer.
    unsafe { out.write(Box::into_raw(Box::new(imh_volume::new(volume)))) };
}

/// Hand out a series read from DICOM, keeping its identifiers for DICOM results.
fn hand_out_series(series: imhost_core::io::dicom::DicomSeries, out: *mut *mut imh_volume) -> Result<(), FfiError> {
    let source = imhost_core::io::dicom::results::ResultSource::from_series(&series)?;
    let volume = imh_volume { volume: series.volume, dicom: Some(Box::new(source)) };
    // SAFETY: as in hand_out.
    unsafe { out.write(Box::into_raw(Box::new(volume))) };
    Ok(())
}

/// Read an image file (`.nii`, `.nii.gz`; NIfTI-1 or NIfTI-2, either byte order, scaled values
/// delivered as floats). A 4-D image's frame times come from a JSON sidecar (`name.json`, key
/// `"FrameTimes"`) if present, else from the header. The header is validated before any
/// memory is allocated for voxels.
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_volume_read(
    context: *const crate::context::imh_context,
    path: *const std::ffi::c_char,
    out: *mut *mut imh_volume,
) -> imh_status {
    ffi_boundary!("imh_volume_read", {
        let context = context_arg(context)?;
        let path = path_arg(path, "path")?;
        let out = arg_out!(out, "out");
        let (volume, info) = context.scope(|| nifti::read_nifti(path, &ReadOptions::default()))?;
        context.scope(|| {
            tracing::info!(path = %path.display(), shape = ?volume.shape(), dtype = %volume.dtype(), stored = info.stored_type, "read image")
        });
        hand_out(volume, out);
        Ok(())
    })
}

/// A borrowed byte buffer: `size` bytes at `data` (`data` may be NULL only when `size` is 0).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct imh_buffer {
    /// The first byte.
    pub data: *const std::ffi::c_void,
    /// How many bytes.
    pub size: usize,
}

/// The most instances one series read from memory may have.
const MAX_DICOM_BUFFERS: usize = 1 << 20;

/// Read a CT series from DICOM instances in memory (Part 10 files with or without the 128-byte
/// preamble, as an Orthanc plugin holds them): `buffers` holds `n_buffers` of them, borrowed for
/// the call. The same reader as `imh_volume_read_dicom_folder`: the largest series among them,
/// slices ordered along the normal, frames grouped by Temporal Position Identifier or
/// acquisition time (frame times in seconds from the first), the spacing checked to be even,
/// rescale applied (int16 HU when exact, else float32). Every element's declared length is
/// checked against its buffer, and the pixels against the context's memory limit, before
/// anything is allocated. Errors name the instance as `DICOM buffer N`: `IMH_STATUS_FORMAT`
/// (corrupt, incomplete series), `IMH_STATUS_GEOMETRY` (uneven slices), `IMH_STATUS_UNSUPPORTED`
/// (compressed transfer syntaxes, colour), `IMH_STATUS_TOO_LARGE`.
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_volume_read_dicom(
    context: *const crate::context::imh_context,
    buffers: *const imh_buffer,
    n_buffers: usize,
    out: *mut *mut imh_volume,
) -> imh_status {
    ffi_boundary!("imh_volume_read_dicom", {
        let context = context_arg(context)?;
        let out = arg_out!(out, "out");
        if n_buffers == 0 || n_buffers > MAX_DICOM_BUFFERS {
            return Err(FfiError::new(
                imh_status::InvalidArgument,
                format!("n_buffers is {n_buffers} (1 to {MAX_DICOM_BUFFERS})"),
            ));
        }
        if buffers.is_null() {
            return Err(FfiError::null("buffers"));
        }
        // SAFETY: `buffers` holds n_buffers structs (header contract), checked non-NULL.
        let list = unsafe { std::slice::from_raw_parts(buffers, n_buffers) };
        let mut slices = Vec::with_capacity(n_buffers);
        for (n, b) in list.iter().enumerate() {
            if b.size == 0 {
                slices.push(&[][..]);
                continue;
            }
            if b.data.is_null() || b.size > isize::MAX as usize {
                return Err(FfiError::new(imh_status::InvalidArgument, format!("buffers[{n}] is NULL or too long")));
            }
            // SAFETY: the caller's buffer of `size` bytes, live for the call (header contract).
            slices.push(unsafe { std::slice::from_raw_parts(b.data.cast::<u8>(), b.size) });
        }
        let series = context.scope(|| {
            imhost_core::memory::with_limit(context.memory_limit(), || {
                imhost_core::io::dicom::read_dicom_buffers(&slices, &Default::default())
            })
        })?;
        hand_out_series(series, out)?;
        Ok(())
    })
}

/// Read the CT series in the folder `dir` (and its sub-folders; files that are not DICOM
/// images are skipped, a corrupt DICOM file is an error naming it). See `imh_volume_read_dicom`
/// for the series logic and the checks.
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_volume_read_dicom_folder(
    context: *const crate::context::imh_context,
    dir: *const std::ffi::c_char,
    out: *mut *mut imh_volume,
) -> imh_status {
    ffi_boundary!("imh_volume_read_dicom_folder", {
        let context = context_arg(context)?;
        let dir = path_arg(dir, "dir")?;
        let out = arg_out!(out, "out");
        let series = context.scope(|| {
            imhost_core::memory::with_limit(context.memory_limit(), || {
                imhost_core::io::dicom::read_dicom_folder(dir, &Default::default())
            })
        })?;
        hand_out_series(series, out)?;
        Ok(())
    })
}

/// Write a volume to `path` (`.nii` or `.nii.gz`), atomically: the file appears complete or not
/// at all. Non-uniform frame times also go to a JSON sidecar.
///
/// Thread safety: may be called from any thread; concurrent writes to one path leave one of the
/// complete files.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_volume_write(
    context: *const crate::context::imh_context,
    volume: *const imh_volume,
    path: *const std::ffi::c_char,
) -> imh_status {
    ffi_boundary!("imh_volume_write", {
        let context = context_arg(context)?;
        let volume = arg_ref!(volume, "volume");
        let path = path_arg(path, "path")?;
        context.scope(|| nifti::write_any(&volume.volume, path, &WriteOptions::default()))?;
        Ok(())
    })
}

/// Write a caller's borrowed view to `path` without copying it first (see `imh_volume_write`).
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_view_write(
    context: *const crate::context::imh_context,
    view: *const imh_view,
    path: *const std::ffi::c_char,
) -> imh_status {
    ffi_boundary!("imh_view_write", {
        let context = context_arg(context)?;
        let view = arg_ref!(view, "view");
        let path = path_arg(path, "path")?;
        context.scope(|| -> crate::status::FfiResult {
            // SAFETY: the header's imh_view contract holds for the duration of this call.
            let input = unsafe { view_from_c(view) }?;
            with_view!(&input, v => nifti::write_nifti(v, path, &WriteOptions::default()))?;
            Ok(())
        })
    })
}

/// Copy a borrowed view into a new library-owned volume (the one place a view is copied, on
/// request).
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_volume_from_view(
    context: *const crate::context::imh_context,
    view: *const imh_view,
    out: *mut *mut imh_volume,
) -> imh_status {
    ffi_boundary!("imh_volume_from_view", {
        let context = context_arg(context)?;
        let view = arg_ref!(view, "view");
        let out = arg_out!(out, "out");
        let volume = context.scope(|| -> crate::status::FfiResult<AnyVolume> {
            // SAFETY: the header's imh_view contract holds for the duration of this call.
            let input = unsafe { view_from_c(view) }?;
            Ok(with_view!(&input, v => AnyVolume::from(v.to_volume())))
        })?;
        hand_out(volume, out);
        Ok(())
    })
}

/// Describe a volume's pixels and geometry as a view into the volume's own memory, valid until
/// the volume is freed. The view can be passed straight to operations.
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_volume_get_view(volume: *const imh_volume, out: *mut imh_view) -> imh_status {
    ffi_boundary!("imh_volume_get_view", {
        let volume = arg_ref!(volume, "volume");
        let out = arg_out!(out, "out");
        let view = with_volume!(&volume.volume, v => view_to_c(v));
        // SAFETY: `out` is non-NULL and points to a writable imh_view (header).
        unsafe { out.write(view) };
        Ok(())
    })
}

/// Free a volume. NULL is a no-op. Views obtained from it become invalid.
///
/// Thread safety: may be called from any thread once no other call uses the volume.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_volume_free(volume: *mut imh_volume) {
    ffi_boundary!("imh_volume_free", default = (), {
        if !volume.is_null() {
            // SAFETY: a non-NULL volume came from this library (Box::into_raw) and is freed once.
            drop(unsafe { Box::from_raw(volume) });
        }
    })
}
