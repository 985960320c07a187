//! Checks of a CT before calcium scoring: what makes a score meaningless is refused (an error)
//! or flagged so that no number is shown as if valid.
//!
//! Refused: a 4-D series, slices that are not axial, slices thicker than 5 mm, a volume with no
//! tissue (all air), values that are not HU (no voxel below −300 HU in the darkest 1 %: a chest CT
//! always holds lung; the usual cause is a missing RescaleIntercept).
//! Flagged: slices outside the 2.5–3 mm of the Agatston protocol (the score is scaled by Δz/3 but
//! is not comparable with the reference), contrast medium (a blood pool of > 100 ml between 180
//! and 600 HU: the Agatston score is defined on non-contrast CT only — *blocking*).

use rayon::prelude::*;
use serde::Serialize;

use super::components::components_3d;
use crate::{Error, Geometry, Result};

/// A finding of the checks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QcFlag {
    /// Short code (`slice_thickness`, `contrast`).
    pub code: &'static str,
    /// One readable sentence.
    pub message: String,
    /// When true the score must not be reported as a result.
    pub blocking: bool,
}

/// What the checks measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CtCheck {
    /// Slice spacing, mm.
    pub slice_mm: f64,
    /// Largest connected region between 180 and 600 HU, ml.
    pub largest_enhancing_ml: f64,
    /// The flags raised.
    pub flags: Vec<QcFlag>,
}

impl CtCheck {
    /// Whether a flag forbids showing the score.
    pub fn blocked(&self) -> bool {
        self.flags.iter().any(|f| f.blocking)
    }
}

/// Slices thicker than this are refused, mm.
pub const MAX_SLICE_MM: f64 = 5.0;
/// The Agatston protocol's slice thickness range, mm.
pub const PROTOCOL_SLICE_MM: (f64, f64) = (2.5, 3.0);
/// A connected region of this many ml between 180 and 600 HU means contrast medium.
pub const CONTRAST_POOL_ML: f64 = 100.0;

/// Check the CT `hu` (`dims`, `frames` frames, placed by `geometry`).
pub fn check_ct(hu: &[f32], dims: [usize; 3], frames: usize, geometry: &Geometry) -> Result<CtCheck> {
    if frames != 1 {
        return Err(Error::shape(format!(
            "calcium scoring takes one 3-D CT; this is a 4-D series of {frames} frames (pick one phase)"
        )));
    }
    if hu.len() != dims.iter().product::<usize>() || hu.is_empty() {
        return Err(Error::shape(format!("the CT does not fill its {dims:?} grid")));
    }
    let k_axis = [geometry.direction[0][2], geometry.direction[1][2], geometry.direction[2][2]];
    if k_axis[2].abs() < 0.95 {
        return Err(Error::unsupported(format!(
            "the slices are not axial (the slice axis points along LPS {:.2?}); the Agatston score is defined on axial slices",
            k_axis
        )));
    }
    let slice_mm = geometry.spacing[2];
    if slice_mm > MAX_SLICE_MM {
        return Err(Error::unsupported(format!(
            "slices are {slice_mm:.2} mm apart; calcium scoring needs ≤ {MAX_SLICE_MM} mm (the protocol is 2.5–3 mm)"
        )));
    }
    let mut sample: Vec<f32> = hu.iter().step_by(7).copied().filter(|v| v.is_finite()).collect();
    if sample.is_empty() {
        return Err(Error::invalid_argument("the CT holds no finite value"));
    }
    sample.sort_unstable_by(f32::total_cmp);
    let q = |f: f64| sample[((sample.len() - 1) as f64 * f).round() as usize];
    if q(0.99) < -500.0 {
        return Err(Error::invalid_argument(format!(
            "the CT holds no tissue (99 % of voxels below {:.0} HU: all air)",
            q(0.99)
        )));
    }
    if q(0.01) > -300.0 {
        return Err(Error::invalid_argument(format!(
            "the values are not HU of a chest CT: the darkest 1 % is at {:.0} (lung and air are below −300 HU); \
             is the rescale (RescaleSlope/RescaleIntercept) missing?",
            q(0.01)
        )));
    }
    let mut flags = Vec::new();
    let (lo, hi) = PROTOCOL_SLICE_MM;
    if slice_mm < lo - 1e-6 || slice_mm > hi + 1e-6 {
        flags.push(QcFlag {
            code: "slice_thickness",
            message: format!(
                "slices are {slice_mm:.2} mm apart, outside the protocol's 2.5–3 mm: areas are scaled by Δz/3 = {:.3}, \
                 but the score is not comparable with reference values",
                slice_mm / 3.0
            ),
            blocking: false,
        });
    }
    let enhancing: Vec<bool> = hu.par_iter().map(|&v| (180.0..=600.0).contains(&v)).collect();
    let (labels, count) = components_3d(&enhancing, dims);
    let mut sizes = vec![0u64; count as usize + 1];
    for &l in &labels {
        sizes[l as usize] += 1;
    }
    let voxel_ml = geometry.spacing.iter().product::<f64>() / 1000.0;
    let largest = sizes.iter().skip(1).max().copied().unwrap_or(0) as f64 * voxel_ml;
    if largest > CONTRAST_POOL_ML {
        flags.push(QcFlag {
            code: "contrast",
            message: format!(
                "contrast medium: a connected region of {largest:.0} ml between 180 and 600 HU (a blood pool); \
                 the Agatston score is defined on non-contrast CT only"
            ),
            blocking: true,
        });
    }
    Ok(CtCheck { slice_mm, largest_enhancing_ml: largest, flags })
}
