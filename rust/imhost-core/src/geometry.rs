//! Where voxels are in the patient: spacing, origin and direction cosines, and the conversions
//! between imhost's convention and the ones of NIfTI, DICOM/ITK and 3D Slicer.
//!
//! # The convention
//!
//! imhost stores geometry in **LPS** patient coordinates (x grows to the patient's Left, y to
//! Posterior, z to Superior), in millimetres — the convention of DICOM and ITK. A voxel index
//! `(i, j, k)` (0-based, `i` the fastest axis in a NIfTI file, the DICOM column index) maps to
//!
//! ```text
//! p_LPS = origin + D · diag(spacing) · (i, j, k)ᵀ
//! ```
//!
//! where column `c` of the direction matrix `D` is the unit vector of index axis `c` in LPS.
//! `origin` is the centre of voxel `(0, 0, 0)`.
//!
//! * **NIfTI** (sform/qform) and **Slicer** (IJK-to-RAS) use RAS+: the same matrix with the
//!   first two rows negated. [`Geometry::ijk_to_ras`] gives exactly Slicer's `IJKToRASMatrix` and
//!   a NIfTI affine; [`Geometry::from_ijk_to_ras`] reads either back.
//! * **DICOM** gives the same frame directly: `ImageOrientationPatient` holds the first two
//!   direction columns, `ImagePositionPatient` the origin of each slice, `PixelSpacing` the
//!   spacing between rows (along `j`) then between columns (along `i`). See
//!   [`Geometry::from_dicom_plane`].

// Matrix code reads best with explicit row/column indices.
#![allow(clippy::needless_range_loop)]

use crate::error::{Error, Result};

/// A 3×3 matrix, row-major: `m[row][col]`.
pub type Mat3 = [[f64; 3]; 3];
/// A 4×4 homogeneous matrix, row-major: `m[row][col]`.
pub type Mat4 = [[f64; 4]; 4];

/// Largest deviation from unit length tolerated in a direction column before it is an error
/// (files store directions in `f32`, so exact unit length cannot be expected).
const UNIT_TOLERANCE: f64 = 1e-3;

/// Spatial geometry of a 3-D grid, in LPS millimetres (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    /// Distance between voxel centres along `i`, `j`, `k`, in mm. Finite and > 0.
    pub spacing: [f64; 3],
    /// LPS position of the centre of voxel `(0, 0, 0)`, in mm.
    pub origin: [f64; 3],
    /// Direction cosines: column `c` is the LPS unit vector of index axis `c`. Row-major.
    pub direction: Mat3,
}

impl Default for Geometry {
    fn default() -> Self {
        Geometry::identity()
    }
}

/// The placement of one DICOM slice, in DICOM's own terms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DicomPlane {
    /// `ImageOrientationPatient` (0020,0037): row direction (along `i`), then column direction
    /// (along `j`), LPS.
    pub image_orientation: [f64; 6],
    /// `ImagePositionPatient` (0020,0032): LPS centre of the slice's first pixel.
    pub image_position: [f64; 3],
    /// `PixelSpacing` (0028,0030): spacing between rows (along `j`), then between columns
    /// (along `i`), in mm.
    pub pixel_spacing: [f64; 2],
}

impl Geometry {
    /// Unit spacing, origin at zero, axes aligned with LPS.
    pub const fn identity() -> Self {
        Geometry { spacing: [1.0; 3], origin: [0.0; 3], direction: IDENTITY3 }
    }

    /// Axis-aligned geometry with the given spacing and origin.
    pub fn axis_aligned(spacing: [f64; 3], origin: [f64; 3]) -> Result<Self> {
        let g = Geometry { spacing, origin, direction: IDENTITY3 };
        g.validate()?;
        Ok(g)
    }

    /// Check the invariants: everything finite, spacing > 0, direction columns of unit length
    /// (within 1e-3) and linearly independent.
    pub fn validate(&self) -> Result<()> {
        for (axis, s) in self.spacing.iter().enumerate() {
            if !s.is_finite() || *s <= 0.0 {
                return Err(Error::geometry(format!(
                    "spacing along axis {axis} is {s}; it must be a finite number > 0 mm"
                )));
            }
        }
        if self.origin.iter().any(|v| !v.is_finite()) {
            return Err(Error::geometry(format!("origin {:?} is not finite", self.origin)));
        }
        if self.direction.iter().flatten().any(|v| !v.is_finite()) {
            return Err(Error::geometry("direction cosines are not finite"));
        }
        for c in 0..3 {
            let norm = column_norm(&self.direction, c);
            if (norm - 1.0).abs() > UNIT_TOLERANCE {
                return Err(Error::geometry(format!(
                    "direction column {c} has length {norm}; direction cosines must be unit vectors"
                )));
            }
        }
        if det3(&self.direction).abs() < 1e-6 {
            return Err(Error::geometry("direction cosines are degenerate (two axes are parallel)"));
        }
        Ok(())
    }

    /// The 4×4 matrix from voxel index to LPS millimetres (ITK's and DICOM's frame).
    pub fn ijk_to_lps(&self) -> Mat4 {
        let mut m = [[0.0; 4]; 4];
        for r in 0..3 {
            for c in 0..3 {
                m[r][c] = self.direction[r][c] * self.spacing[c];
            }
            m[r][3] = self.origin[r];
        }
        m[3][3] = 1.0;
        m
    }

    /// The 4×4 matrix from voxel index to RAS millimetres: Slicer's `IJKToRASMatrix`, and the
    /// NIfTI sform/qform affine.
    pub fn ijk_to_ras(&self) -> Mat4 {
        let mut m = self.ijk_to_lps();
        for c in 0..4 {
            m[0][c] = -m[0][c];
            m[1][c] = -m[1][c];
        }
        m
    }

    /// Decompose an index-to-LPS matrix into spacing (column lengths), direction and origin.
    pub fn from_ijk_to_lps(m: &Mat4) -> Result<Self> {
        if m.iter().flatten().any(|v| !v.is_finite()) {
            return Err(Error::geometry("index-to-physical matrix holds a non-finite value"));
        }
        if m[3] != [0.0, 0.0, 0.0, 1.0] {
            return Err(Error::geometry(format!(
                "last row of an index-to-physical matrix must be [0, 0, 0, 1], not {:?}",
                m[3]
            )));
        }
        let mut g = Geometry::identity();
        for c in 0..3 {
            let norm = (0..3).map(|r| m[r][c] * m[r][c]).sum::<f64>().sqrt();
            if norm <= 0.0 || !norm.is_finite() {
                return Err(Error::geometry(format!("axis {c} of the index-to-physical matrix has zero length")));
            }
            g.spacing[c] = norm;
            for r in 0..3 {
                g.direction[r][c] = m[r][c] / norm;
            }
        }
        g.origin = [m[0][3], m[1][3], m[2][3]];
        g.validate()?;
        Ok(g)
    }

    /// Decompose an index-to-RAS matrix (Slicer's IJK-to-RAS, a NIfTI affine).
    pub fn from_ijk_to_ras(m: &Mat4) -> Result<Self> {
        let mut lps = *m;
        for c in 0..4 {
            lps[0][c] = -lps[0][c];
            lps[1][c] = -lps[1][c];
        }
        Geometry::from_ijk_to_lps(&lps)
    }

    /// LPS position (mm) of a continuous voxel index.
    pub fn index_to_lps(&self, ijk: [f64; 3]) -> [f64; 3] {
        let m = self.ijk_to_lps();
        std::array::from_fn(|r| m[r][0] * ijk[0] + m[r][1] * ijk[1] + m[r][2] * ijk[2] + m[r][3])
    }

    /// Continuous voxel index of an LPS position (mm).
    pub fn lps_to_index(&self, lps: [f64; 3]) -> [f64; 3] {
        let m = self.ijk_to_lps();
        let a: Mat3 = std::array::from_fn(|r| [m[r][0], m[r][1], m[r][2]]);
        let inv = inverse3(&a).expect("validated geometry is invertible");
        let d = [lps[0] - m[0][3], lps[1] - m[1][3], lps[2] - m[2][3]];
        std::array::from_fn(|r| inv[r][0] * d[0] + inv[r][1] * d[1] + inv[r][2] * d[2])
    }

    /// Geometry of a DICOM series from the first slice's plane and the step between consecutive
    /// slices' `ImagePositionPatient` (LPS mm; its length is the slice spacing).
    pub fn from_dicom_plane(plane: &DicomPlane, slice_step: [f64; 3]) -> Result<Self> {
        let step = norm3(slice_step);
        if step.is_nan() || step <= 0.0 {
            return Err(Error::geometry("consecutive DICOM slices share one position"));
        }
        let o = &plane.image_orientation;
        let mut g = Geometry {
            spacing: [plane.pixel_spacing[1], plane.pixel_spacing[0], step],
            origin: plane.image_position,
            direction: IDENTITY3,
        };
        for r in 0..3 {
            g.direction[r][0] = o[r];
            g.direction[r][1] = o[3 + r];
            g.direction[r][2] = slice_step[r] / step;
        }
        g.validate()?;
        Ok(g)
    }

    /// The DICOM placement of slice `k`.
    pub fn dicom_plane(&self, k: usize) -> DicomPlane {
        let d = &self.direction;
        DicomPlane {
            image_orientation: [d[0][0], d[1][0], d[2][0], d[0][1], d[1][1], d[2][1]],
            image_position: self.index_to_lps([0.0, 0.0, k as f64]),
            pixel_spacing: [self.spacing[1], self.spacing[0]],
        }
    }
}

/// Convert a point between LPS and RAS (the map is its own inverse).
pub fn lps_to_ras(p: [f64; 3]) -> [f64; 3] {
    [-p[0], -p[1], p[2]]
}

pub(crate) const IDENTITY3: Mat3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

fn column_norm(m: &Mat3, c: usize) -> f64 {
    (m[0][c] * m[0][c] + m[1][c] * m[1][c] + m[2][c] * m[2][c]).sqrt()
}

fn norm3(v: [f64; 3]) -> f64 {
    (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
}

/// Determinant of a 3×3 matrix.
pub(crate) fn det3(m: &Mat3) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

/// Inverse of a 3×3 matrix, `None` when singular.
pub(crate) fn inverse3(m: &Mat3) -> Option<Mat3> {
    let det = det3(m);
    if det.abs() < 1e-300 || !det.is_finite() {
        return None;
    }
    let c = |r0: usize, r1: usize, c0: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    Some([
        [c(1, 2, 1, 2) / det, -c(0, 2, 1, 2) / det, c(0, 1, 1, 2) / det],
        [-c(1, 2, 0, 2) / det, c(0, 2, 0, 2) / det, -c(0, 1, 0, 2) / det],
        [c(1, 2, 0, 1) / det, -c(0, 2, 0, 1) / det, c(0, 1, 0, 1) / det],
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// An oblique geometry: 30° rotation about z, spacing (0.5, 0.7, 5), origin (10, -20, 30).
    fn oblique() -> Geometry {
        let (s, c) = 30f64.to_radians().sin_cos();
        Geometry {
            spacing: [0.5, 0.7, 5.0],
            origin: [10.0, -20.0, 30.0],
            direction: [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]],
        }
    }

    #[test]
    fn index_to_lps_matches_hand_computation() {
        let g = oblique();
        // (i, j, k) = (2, 1, 3): i moves 2*0.5 = 1 mm along (c, s), j 0.7 mm along (-s, c), k 15 mm up.
        let (s, c) = 30f64.to_radians().sin_cos();
        let p = g.index_to_lps([2.0, 1.0, 3.0]);
        assert!(close(p[0], 10.0 + 1.0 * c - 0.7 * s));
        assert!(close(p[1], -20.0 + 1.0 * s + 0.7 * c));
        assert!(close(p[2], 45.0));
        let back = g.lps_to_index(p);
        for (a, b) in back.iter().zip([2.0, 1.0, 3.0]) {
            assert!(close(*a, b));
        }
    }

    #[test]
    fn ras_matrix_negates_first_two_rows_and_round_trips() {
        let g = oblique();
        let ras = g.ijk_to_ras();
        let lps = g.ijk_to_lps();
        for c in 0..4 {
            assert_eq!(ras[0][c], -lps[0][c]);
            assert_eq!(ras[1][c], -lps[1][c]);
            assert_eq!(ras[2][c], lps[2][c]);
        }
        let back = Geometry::from_ijk_to_ras(&ras).unwrap();
        for r in 0..3 {
            assert!(close(back.spacing[r], g.spacing[r]));
            assert!(close(back.origin[r], g.origin[r]));
            for c in 0..3 {
                assert!(close(back.direction[r][c], g.direction[r][c]));
            }
        }
        // A point in RAS is the LPS point with x and y negated.
        let p = g.index_to_lps([1.0, 2.0, 3.0]);
        let ras_p: [f64; 3] =
            std::array::from_fn(|r| (0..3).map(|c| ras[r][c] * [1.0, 2.0, 3.0][c]).sum::<f64>() + ras[r][3]);
        let expect = lps_to_ras(p);
        for r in 0..3 {
            assert!(close(ras_p[r], expect[r]));
        }
    }

    #[test]
    fn slicer_default_volume_matrix() {
        // A Slicer volume loaded from an axis-aligned LPS DICOM: IJK-to-RAS = diag(-sx, -sy, sz).
        let g = Geometry::axis_aligned([0.8, 0.8, 2.5], [100.0, 120.0, -50.0]).unwrap();
        let m = g.ijk_to_ras();
        assert_eq!(m[0], [-0.8, 0.0, 0.0, -100.0]);
        assert_eq!(m[1], [0.0, -0.8, 0.0, -120.0]);
        assert_eq!(m[2], [0.0, 0.0, 2.5, -50.0]);
        assert_eq!(m[3], [0.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn dicom_plane_round_trip() {
        let g = oblique();
        let plane = g.dicom_plane(0);
        assert_eq!(plane.pixel_spacing, [0.7, 0.5]);
        let next = g.dicom_plane(1).image_position;
        let step = std::array::from_fn(|r| next[r] - plane.image_position[r]);
        let back = Geometry::from_dicom_plane(&plane, step).unwrap();
        for r in 0..3 {
            assert!(close(back.spacing[r], g.spacing[r]));
            assert!(close(back.origin[r], g.origin[r]));
            for c in 0..3 {
                assert!(close(back.direction[r][c], g.direction[r][c]));
            }
        }
        // The standard axial DICOM orientation 1\0\0\0\1\0 is the identity in LPS.
        let axial = DicomPlane {
            image_orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            image_position: [-125.0, -125.0, 40.0],
            pixel_spacing: [0.5, 0.49],
        };
        let g = Geometry::from_dicom_plane(&axial, [0.0, 0.0, 5.0]).unwrap();
        assert_eq!(g.direction, IDENTITY3);
        assert_eq!(g.spacing, [0.49, 0.5, 5.0]);
        assert!(Geometry::from_dicom_plane(&axial, [0.0; 3]).is_err());
    }

    #[test]
    fn invalid_geometry_is_rejected() {
        let mut g = Geometry::identity();
        g.spacing[1] = f64::NAN;
        assert!(g.validate().is_err());
        g.spacing[1] = 0.0;
        assert!(g.validate().is_err());
        let mut g = Geometry::identity();
        g.direction[0][1] = 1.0;
        g.direction[1][1] = 0.0; // axis j parallel to axis i
        assert!(g.validate().is_err());
        let mut singular = Geometry::identity().ijk_to_lps();
        singular[3][3] = 2.0;
        assert!(Geometry::from_ijk_to_lps(&singular).is_err());
        let mut zero_axis = Geometry::identity().ijk_to_lps();
        zero_axis[2][2] = 0.0;
        assert!(Geometry::from_ijk_to_lps(&zero_axis).is_err());
    }

    #[test]
    fn inverse_of_a_hand_matrix() {
        let m = [[2.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 3.0, 1.0]];
        // det = 2*(1-0) - 0 + 1*(3-0) = 5
        assert!(close(det3(&m), 5.0));
        let inv = inverse3(&m).unwrap();
        for r in 0..3 {
            for c in 0..3 {
                let v: f64 = (0..3).map(|k| m[r][k] * inv[k][c]).sum();
                assert!(close(v, if r == c { 1.0 } else { 0.0 }));
            }
        }
    }
}
