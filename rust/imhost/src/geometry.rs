//! Conversions between `imh_geometry` (LPS) and the RAS matrices of 3D Slicer and NIfTI.

use imhost_core::geometry::Geometry;

use crate::status::{FfiError, arg_out, arg_ref, ffi_boundary, imh_status};
use crate::view::imh_geometry;

/// Write the 4×4 IJK-to-RAS matrix of a geometry to `out` (16 doubles, row-major): 3D Slicer's
/// `IJKToRASMatrix` of a volume node, and the NIfTI sform. Use it when handing a result to
/// Slicer (`vtkMRMLVolumeNode::SetIJKToRASMatrix`).
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_geometry_to_ijk_to_ras(geometry: *const imh_geometry, out: *mut f64) -> imh_status {
    ffi_boundary!("imh_geometry_to_ijk_to_ras", {
        let geometry = Geometry::try_from(arg_ref!(geometry, "geometry"))?;
        let out = arg_out!(out, "out");
        let m = geometry.ijk_to_ras();
        // SAFETY: `out` is non-NULL and points to 16 writable doubles (header).
        let out = unsafe { std::slice::from_raw_parts_mut(out, 16) };
        out.copy_from_slice(m.as_flattened());
        Ok(())
    })
}

/// Read a 4×4 IJK-to-RAS matrix (16 doubles, row-major; a Slicer volume node's
/// `GetIJKToRASMatrix`, or a NIfTI affine) into a geometry. Fails with IMH_STATUS_GEOMETRY if the
/// matrix is not an affine map with independent, non-zero axes.
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_geometry_from_ijk_to_ras(matrix: *const f64, out: *mut imh_geometry) -> imh_status {
    ffi_boundary!("imh_geometry_from_ijk_to_ras", {
        if matrix.is_null() {
            return Err(FfiError::null("matrix"));
        }
        let out = arg_out!(out, "out");
        // SAFETY: `matrix` is non-NULL and points to 16 readable doubles (header).
        let m = unsafe { std::slice::from_raw_parts(matrix, 16) };
        let m: [[f64; 4]; 4] = std::array::from_fn(|r| std::array::from_fn(|c| m[4 * r + c]));
        let geometry = Geometry::from_ijk_to_ras(&m)?;
        // SAFETY: `out` is non-NULL and points to a writable imh_geometry (header).
        unsafe { out.write(imh_geometry::from(&geometry)) };
        Ok(())
    })
}
