//! Head motion: a cheap estimate from the skull, and rigid correction through a registration
//! back end supplied by the caller (the `itk-sys` crate provides ITK's; the core stays pure Rust).
//!
//! Estimate per frame, against the reference frame: the skull (HU ≥ `bone_hu`, which contrast
//! never reaches) is thresholded, and the displacement is the larger of its centroid shift and
//! its mean surface displacement (voxels that changed side × voxel volume / skull surface area).
//! Both are in mm. Registration runs only when the largest estimate reaches `negligible_mm`, so
//! a still study costs one thresholding pass.

use rayon::prelude::*;
use serde::Serialize;

use crate::control::RunControl;
use crate::error::Result;
use crate::geometry::Geometry;
use crate::phantom::ctp::RigidMotion;

/// A rigid registration back end.
pub trait RigidRegistration: Sync {
    /// Register `moving` onto `fixed` (3-D images in linear order `i + ni·(j + nj·k)`, HU) and
    /// return the motion found and `moving` resampled onto `fixed`'s grid.
    fn register(
        &self,
        fixed: &[f32],
        moving: &[f32],
        shape: [usize; 3],
        geometry: &Geometry,
    ) -> Result<(RigidMotion, Vec<f32>)>;

    /// A short description for the report (library, transform, metric).
    fn describe(&self) -> String;
}

/// Options of motion estimation and correction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct MotionOptions {
    /// Correct motion when a back end is available (true).
    pub correct: bool,
    /// Below this estimated displacement (mm) registration is skipped (0.5).
    pub negligible_mm: f64,
    /// HU threshold of the skull (700).
    pub bone_hu: f64,
    /// Displacement (mm) above which the study is flagged even after correction (10).
    pub too_much_mm: f64,
    /// The reference frame (0).
    pub reference_frame: usize,
}

impl Default for MotionOptions {
    fn default() -> Self {
        MotionOptions { correct: true, negligible_mm: 0.5, bone_hu: 700.0, too_much_mm: 10.0, reference_frame: 0 }
    }
}

/// Per-frame motion estimate in mm (0 for the reference frame).
/// `frame(t, out)` fills frame `t` of `frames` into `out`.
pub fn estimate(
    frames: usize,
    frame: &(dyn Fn(usize, &mut [f32]) + Sync),
    shape: [usize; 3],
    spacing: [f64; 3],
    options: &MotionOptions,
) -> Vec<f64> {
    let mut reference = vec![0.0f32; shape.iter().product()];
    frame(options.reference_frame.min(frames - 1), &mut reference);
    let bone = |f: &[f32]| -> Vec<bool> { f.iter().map(|&v| f64::from(v) >= options.bone_hu).collect() };
    let ref_bone = bone(&reference);
    let [ni, nj, nk] = shape;
    let centroid = |b: &[bool]| -> Option<[f64; 3]> {
        let (mut s, mut n) = ([0.0; 3], 0usize);
        for (v, _) in b.iter().enumerate().filter(|(_, x)| **x) {
            let ijk = [v % ni, (v / ni) % nj, v / (ni * nj)];
            for a in 0..3 {
                s[a] += ijk[a] as f64 * spacing[a];
            }
            n += 1;
        }
        (n > 0).then(|| s.map(|x| x / n as f64))
    };
    let ref_centroid = centroid(&ref_bone);
    // Skull surface area: faces between bone and non-bone.
    let mut area = 0.0;
    let face = [spacing[1] * spacing[2], spacing[0] * spacing[2], spacing[0] * spacing[1]];
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                let v = i + ni * (j + nj * k);
                if !ref_bone[v] {
                    continue;
                }
                let ijk = [i, j, k];
                for a in 0..3 {
                    for d in [-1i64, 1] {
                        let mut n = ijk.map(|x| x as i64);
                        n[a] += d;
                        let inside = n.iter().zip(shape).all(|(&x, s)| x >= 0 && (x as usize) < s);
                        if !inside || !ref_bone[n[0] as usize + ni * (n[1] as usize + nj * n[2] as usize)] {
                            area += face[a];
                        }
                    }
                }
            }
        }
    }
    let voxel_volume = spacing.iter().product::<f64>();
    (0..frames)
        .into_par_iter()
        .map(|t| {
            let mut f = vec![0.0f32; reference.len()];
            frame(t, &mut f);
            let b = bone(&f);
            let (Some(c0), Some(c1)) = (ref_centroid, centroid(&b)) else { return 0.0 };
            let shift = (0..3).map(|a| (c1[a] - c0[a]).powi(2)).sum::<f64>().sqrt();
            let changed = b.iter().zip(&ref_bone).filter(|(x, y)| x != y).count() as f64;
            let surface = if area > 0.0 { changed * voxel_volume / area } else { 0.0 };
            shift.max(surface)
        })
        .collect()
}

/// Register every frame to the reference in parallel; returns the motions found.
pub fn correct(
    frames: &mut [Vec<f32>],
    shape: [usize; 3],
    geometry: &Geometry,
    registration: &dyn RigidRegistration,
    options: &MotionOptions,
    control: &RunControl<'_>,
) -> Result<Vec<RigidMotion>> {
    let r = options.reference_frame.min(frames.len() - 1);
    let reference = frames[r].clone();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let total = frames.len();
    frames
        .par_iter_mut()
        .enumerate()
        .map(|(t, frame)| {
            control.check()?;
            let motion = if t == r {
                RigidMotion::default()
            } else {
                let (motion, resampled) = registration.register(&reference, frame, shape, geometry)?;
                *frame = resampled;
                motion
            };
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            control.report("motion correction", n as f64 / total as f64)?;
            Ok(motion)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_sees_a_shift_and_nothing_else() {
        let shape = [40, 40, 4];
        let spacing = [1.0, 1.0, 4.0];
        let ring = |shift: f64| -> Vec<f32> {
            let mut f = vec![30.0f32; 40 * 40 * 4];
            for k in 0..4 {
                for j in 0..40 {
                    for i in 0..40 {
                        let (x, y) = (i as f64 - 20.0 - shift, j as f64 - 20.0);
                        let r = (x * x + y * y).sqrt();
                        if (14.0..17.0).contains(&r) {
                            f[i + 40 * (j + 40 * k)] = 1000.0;
                        }
                    }
                }
            }
            f
        };
        let frames = [ring(0.0), ring(0.0), ring(2.0)];
        let e = estimate(
            3,
            &|t, out: &mut [f32]| out.copy_from_slice(&frames[t]),
            shape,
            spacing,
            &MotionOptions::default(),
        );
        assert_eq!(e[0], 0.0);
        assert_eq!(e[1], 0.0);
        assert!((1.0..3.5).contains(&e[2]), "{}", e[2]);
    }
}
