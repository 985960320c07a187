//! `imh_view` and `imh_geometry`: how pixels and their placement cross the boundary, borrowed.

use std::borrow::Cow;

use imhost_core::geometry::Geometry;
use imhost_core::{AnyVolumeView, DType, TimeSource, VolumeView, Voxel};
use ndarray::{ArrayView4, ShapeBuilder};

use crate::status::{FfiError, FfiResult, imh_status};

/// Pixel type of a view or volume (`IMH_DTYPE_*`). 0 is never valid, so a zero-initialised
/// view is rejected.
#[allow(non_camel_case_types)]
pub type imh_dtype = u32;
/// Unsigned 8-bit (masks, label maps).
pub const IMH_DTYPE_U8: imh_dtype = 1;
/// Signed 16-bit (CT in HU).
pub const IMH_DTYPE_I16: imh_dtype = 2;
/// Unsigned 16-bit.
pub const IMH_DTYPE_U16: imh_dtype = 3;
/// Signed 32-bit.
pub const IMH_DTYPE_I32: imh_dtype = 4;
/// 32-bit float.
pub const IMH_DTYPE_F32: imh_dtype = 5;
/// 64-bit float.
pub const IMH_DTYPE_F64: imh_dtype = 6;

/// Where voxels are in the patient, in LPS millimetres (the DICOM/ITK convention).
///
/// Voxel (i, j, k) is at `origin + D * diag(spacing) * (i, j, k)`, where `D` is `direction`
/// read row-major (`direction[3*row + col]`) and column c of `D` is the unit LPS vector of index
/// axis c. `origin` is the centre of voxel (0, 0, 0). For 3D Slicer's RAS IJK-to-RAS matrix use
/// `imh_geometry_to_ijk_to_ras` / `imh_geometry_from_ijk_to_ras`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
#[allow(non_camel_case_types)]
pub struct imh_geometry {
    /// Distance between voxel centres along i, j, k (mm); finite and > 0.
    pub spacing: [f64; 3],
    /// LPS position of voxel (0, 0, 0) (mm).
    pub origin: [f64; 3],
    /// Direction cosines, row-major; columns are unit vectors.
    pub direction: [f64; 9],
}

impl From<&Geometry> for imh_geometry {
    fn from(g: &Geometry) -> Self {
        imh_geometry {
            spacing: g.spacing,
            origin: g.origin,
            direction: std::array::from_fn(|n| g.direction[n / 3][n % 3]),
        }
    }
}

impl TryFrom<&imh_geometry> for Geometry {
    type Error = imhost_core::Error;
    fn try_from(g: &imh_geometry) -> imhost_core::Result<Geometry> {
        let geometry = Geometry {
            spacing: g.spacing,
            origin: g.origin,
            direction: std::array::from_fn(|r| std::array::from_fn(|c| g.direction[3 * r + c])),
        };
        geometry.validate()?;
        Ok(geometry)
    }
}

/// A borrowed 3-D or 4-D image: the caller's pixels are read in place, never copied on the way
/// in. Axes are (i, j, k, t); `shape` and `strides` are indexed the same way.
///
/// - `data` points to voxel (0, 0, 0, 0) and must be aligned for `dtype`.
/// - `strides` are in **elements** (not bytes) and must be >= 0. A NIfTI-ordered buffer (i
///   fastest) has strides {1, ni, ni*nj, ni*nj*nk}; a C-ordered `[t][k][j][i]` array (VTK, ITK,
///   NumPy of shape (t, k, j, i)) has the same. A NumPy `(i, j, k, t)` C-order array has
///   {nj*nk*nt, nk*nt, nt, 1}.
/// - `ndim` is 3 or 4. For 3, `shape[3]`, `strides[3]` and `frame_times` are ignored.
/// - `frame_times`: for 4-D, `shape[3]` strictly increasing times in seconds; NULL means
///   unknown (frames are then assumed 1 s apart, and a warning is logged).
/// - Every voxel reachable through shape and strides must lie in one live allocation for the
///   duration of the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct imh_view {
    /// First voxel.
    pub data: *const std::ffi::c_void,
    /// Pixel type (`IMH_DTYPE_*`).
    pub dtype: imh_dtype,
    /// 3 or 4.
    pub ndim: u32,
    /// Voxels along i, j, k, t.
    pub shape: [i64; 4],
    /// Elements between neighbours along i, j, k, t.
    pub strides: [i64; 4],
    /// Placement in the patient.
    pub geometry: imh_geometry,
    /// Frame times in seconds (4-D), or NULL.
    pub frame_times: *const f64,
}

/// The dtype named by a C value.
pub(crate) fn dtype_arg(code: imh_dtype) -> FfiResult<DType> {
    DType::from_code(code)
        .ok_or_else(|| FfiError::new(imh_status::DataType, format!("dtype {code} is not an IMH_DTYPE_* value")))
}

/// Validate a C view and build a typed view over the caller's memory.
///
/// # Safety
/// `view` must satisfy the contract documented on [`imh_view`]: `data` valid for every voxel
/// reachable through shape and strides, and `frame_times` (if non-NULL) valid for `shape[3]`
/// doubles, both for the lifetime `'a`.
pub(crate) unsafe fn view_from_c<'a>(view: &'a imh_view) -> FfiResult<AnyVolumeView<'a>> {
    let dtype = dtype_arg(view.dtype)?;
    // SAFETY: our caller upholds the same contract `typed` requires (see above).
    unsafe {
        Ok(match dtype {
            DType::U8 => AnyVolumeView::U8(typed::<u8>(view)?),
            DType::I16 => AnyVolumeView::I16(typed::<i16>(view)?),
            DType::U16 => AnyVolumeView::U16(typed::<u16>(view)?),
            DType::I32 => AnyVolumeView::I32(typed::<i32>(view)?),
            DType::F32 => AnyVolumeView::F32(typed::<f32>(view)?),
            DType::F64 => AnyVolumeView::F64(typed::<f64>(view)?),
        })
    }
}

/// # Safety
/// As [`view_from_c`].
unsafe fn typed<'a, T: Voxel>(view: &'a imh_view) -> FfiResult<VolumeView<'a, T>> {
    let shape_error = |m: String| FfiError::new(imh_status::Shape, m);
    let four_d = match view.ndim {
        3 => false,
        4 => true,
        n => return Err(shape_error(format!("ndim is {n}; a view has 3 or 4 dimensions"))),
    };
    let axes = if four_d { 4 } else { 3 };
    let mut shape = [1usize; 4];
    let mut strides = [0usize; 4];
    for a in 0..axes {
        let (n, s) = (view.shape[a], view.strides[a]);
        if n <= 0 {
            return Err(shape_error(format!("shape[{a}] is {n}; every axis needs at least one voxel")));
        }
        if s < 0 {
            return Err(shape_error(format!("strides[{a}] is {s}; negative strides are not supported")));
        }
        shape[a] = n as usize;
        strides[a] = s as usize;
    }
    // The furthest element reachable must be addressable: checked, in elements and in bytes.
    let mut last: u64 = 0;
    for a in 0..axes {
        let step = (shape[a] as u64 - 1).checked_mul(strides[a] as u64);
        last = step.and_then(|s| last.checked_add(s)).ok_or_else(|| shape_error("shape × strides overflows".into()))?;
    }
    let bytes = (last + 1).checked_mul(size_of::<T>() as u64);
    if bytes.is_none_or(|b| b > isize::MAX as u64) {
        return Err(FfiError::new(imh_status::TooLarge, "the view spans more memory than can be addressed"));
    }
    if view.data.is_null() {
        return Err(FfiError::null("view.data"));
    }
    if view.data as usize % align_of::<T>() != 0 {
        return Err(FfiError::new(
            imh_status::InvalidArgument,
            format!("view.data is not aligned to the {}-byte alignment of {}", align_of::<T>(), T::DTYPE),
        ));
    }
    let geometry = Geometry::try_from(&view.geometry)?;
    let frame_times = if four_d {
        if view.frame_times.is_null() {
            tracing::warn!("the view has no frame times; assuming frames 1 s apart");
            Some((Cow::Owned((0..shape[3]).map(|t| t as f64).collect()), TimeSource::Assumed))
        } else {
            // SAFETY: per the contract, a non-NULL frame_times holds shape[3] doubles.
            let times = unsafe { std::slice::from_raw_parts(view.frame_times, shape[3]) };
            Some((Cow::Borrowed(times), TimeSource::Caller))
        }
    } else {
        None
    };
    // SAFETY: `data` is non-NULL and aligned (checked); strides are non-negative and the
    // furthest reachable element is addressable without overflow (checked); the caller
    // guarantees the memory is live and holds those elements for 'a.
    let data = unsafe { ArrayView4::from_shape_ptr(shape.strides(strides), view.data.cast::<T>()) };
    Ok(VolumeView::new(data, geometry, frame_times)?)
}

/// A C view of a volume the library owns (valid while the volume lives).
pub(crate) fn view_to_c<T: Voxel>(v: &imhost_core::Volume<T>) -> imh_view {
    let data = v.data();
    let s = data.strides();
    let [ni, nj, nk, nt] = v.shape();
    imh_view {
        data: data.as_ptr().cast(),
        dtype: T::DTYPE.code(),
        ndim: if v.is_4d() { 4 } else { 3 },
        shape: [ni as i64, nj as i64, nk as i64, nt as i64],
        strides: [s[0] as i64, s[1] as i64, s[2] as i64, s[3] as i64],
        geometry: imh_geometry::from(v.geometry()),
        frame_times: v.frame_times().map_or(std::ptr::null(), |f| f.as_slice().as_ptr()),
    }
}
