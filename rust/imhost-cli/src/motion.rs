//! Motion correction for the perfusion pipeline through ITK (the `itk-sys` bridge).

use imhost_core::perfusion::motion::RigidRegistration;
use imhost_core::phantom::ctp::RigidMotion;
use imhost_core::{Error, Geometry, Result};

/// Rigid (Euler 3-D) registration by ITK: mean squares on a 25 % random sample, a 3-level
/// pyramid, linear resampling (air outside the moved field of view).
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
        // Thin slabs cannot be shrunk 4× along z; ITK shrinks every axis alike.
        let mut settings = itk_sys::RigidSettings::default();
        if shape[2] < 16 {
            settings.shrink = [2, 1, 0];
        }
        let mut out = vec![0.0f32; fixed.len()];
        let t = itk_sys::register_rigid(fixed, moving, &grid, &settings, &mut out)
            .map_err(|e| Error::internal(format!("ITK registration failed: {}", e.what())))?;
        Ok((RigidMotion { angles: t.angles, translation: t.translation }, out))
    }

    fn describe(&self) -> String {
        itk_sys::describe()
    }
}
