//! Motion correction for the perfusion pipeline through ITK (the `itk-sys` bridge).

use imhost_core::perfusion::motion::RigidRegistration;
use imhost_core::phantom::ctp::RigidMotion;
use imhost_core::{Error, Geometry, Result};

/// Rigid (Euler 3-D) registration by ITK with `imhost_itk.hpp`'s settings for the frame size:
/// mean squares on a random sample, a 2-level pyramid (4× and 2× the frame handed over), one
/// work unit (the pipeline registers frames in parallel), linear resampling (air outside the
/// moved field of view).
pub struct ItkRigid;

impl RigidRegistration for ItkRigid {
    fn register(
        &self,
        fixed: &[f32],
        moving: &[f32],
        shape: [usize; 3],
        geometry: &Geometry,
    ) -> Result<(RigidMotion, Vec<f32>)> {
        let d = geometry.direction;
        let grid = itk_sys::Grid {
            size: shape,
            spacing: geometry.spacing,
            origin: geometry.origin,
            direction: [d[0][0], d[0][1], d[0][2], d[1][0], d[1][1], d[1][2], d[2][0], d[2][1], d[2][2]],
        };
        // The header's settings for this frame size (what hosts get through its callback).
        let settings = itk_sys::settings_for(shape);
        let mut out = vec![0.0f32; fixed.len()];
        let t = itk_sys::register_rigid(fixed, moving, &grid, &settings, &mut out)
            .map_err(|e| Error::internal(format!("ITK registration failed: {}", e.what())))?;
        Ok((RigidMotion { angles: t.angles, translation: t.translation }, out))
    }

    fn describe(&self) -> String {
        itk_sys::describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imhost_core::RunControl;
    use imhost_core::perfusion::motion::{self, FrameMotion, MotionOptions, euler_matrix};

    /// A head-like analytic image (HU): a skull shell with smooth edges, soft blobs, air outside.
    fn head(p: [f64; 3]) -> f32 {
        let r = ((p[0] / 38.0).powi(2) + (p[1] / 44.0).powi(2) + (p[2] / 30.0).powi(2)).sqrt();
        let shell = 1000.0 / (1.0 + ((r - 0.92).abs() / 0.03).powi(4));
        let inside = if r < 0.92 { 30.0 } else { -1000.0 / (1.0 + (-(r - 0.97) / 0.01).exp()) };
        let blob = |c: [f64; 3], s: f64, a: f64| {
            a * (-((p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2) + (p[2] - c[2]).powi(2)) / (2.0 * s * s)).exp()
        };
        (shell
            + inside
            + blob([10.0, -8.0, 3.0], 6.0, 60.0)
            + blob([-12.0, 14.0, -5.0], 8.0, 40.0)
            + blob([0.0, 20.0, 8.0], 5.0, 80.0)) as f32
    }

    /// The coarse path (a 0.5 mm study registered 4× shrunk, the transform applied at full size)
    /// recovers a known motion within ITK's own tolerances (0.02 rad, 0.3 mm) and lines the
    /// frame up with the reference.
    #[test]
    fn coarse_registration_recovers_a_known_motion_at_full_size() {
        let shape = [192usize, 192, 16];
        let spacing = [0.5, 0.5, 2.5];
        let origin: [f64; 3] = std::array::from_fn(|a| -0.5 * (shape[a] - 1) as f64 * spacing[a]);
        let geometry = Geometry { spacing, origin, ..Geometry::identity() };
        let (angles, shift) = ([0.02, -0.015, 0.035], [1.8, -1.2, 0.6]);
        let r = euler_matrix(angles);
        let n = shape.iter().product::<usize>();
        let (mut fixed, mut moving) = (vec![0.0f32; n], vec![0.0f32; n]);
        for k in 0..shape[2] {
            for j in 0..shape[1] {
                for i in 0..shape[0] {
                    let p = geometry.index_to_lps([i as f64, j as f64, k as f64]);
                    let v = i + shape[0] * (j + shape[1] * k);
                    fixed[v] = head(p);
                    // moving(T(p)) = fixed(p) with T(p) = R·p + t about the centre (the origin
                    // of LPS here): moving(q) = head(Rᵀ·(q − t)).
                    let d: [f64; 3] = std::array::from_fn(|a| p[a] - shift[a]);
                    moving[v] = head(std::array::from_fn(|a| (0..3).map(|b| r[b][a] * d[b]).sum()));
                }
            }
        }
        let frames = [fixed.clone(), moving.clone()];
        let source = |t: usize, out: &mut [f32]| out.copy_from_slice(&frames[t]);
        let options = MotionOptions::default();
        let control = RunControl::new(None, None);
        let found = motion::correct(2, &source, &[0.0, 2.0], shape, &geometry, &ItkRigid, &options, &control).unwrap();
        assert_eq!(found.factor, [4, 4, 1]);
        assert_eq!((found.coarse_frames, found.full_size_frames), (1, 0), "the convention check failed");
        let m = found.motions[1];
        for a in 0..3 {
            assert!((m.angles[a] - angles[a]).abs() < 0.02, "angle {a}: {:?} vs {angles:?}", m.angles);
            assert!((m.translation[a] - shift[a]).abs() < 0.3, "translation {a}: {:?} vs {shift:?}", m.translation);
        }
        assert!(matches!(found.frames[1], FrameMotion::Transform(_)));
        let mut corrected = vec![0.0f32; n];
        found.frame(1, &source, &mut corrected);
        let interior: Vec<usize> = (0..n)
            .filter(|&v| {
                let (i, j, k) = (v % shape[0], (v / shape[0]) % shape[1], v / (shape[0] * shape[1]));
                (20..172).contains(&i) && (20..172).contains(&j) && (2..14).contains(&k)
            })
            .collect();
        let mean_abs = |x: &[f32]| {
            interior.iter().map(|&v| f64::from((fixed[v] - x[v]).abs())).sum::<f64>() / interior.len() as f64
        };
        let (before, after) = (mean_abs(&moving), mean_abs(&corrected));
        assert!(after < before / 4.0, "mean |difference| {before:.1} → {after:.1} HU");
    }
}
