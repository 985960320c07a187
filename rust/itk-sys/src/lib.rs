//! # itk-sys
//!
//! imhost's own bridge to ITK (Debian's `libinsighttoolkit5-dev`, ITK 5.2) through `cxx`, over
//! the header hosts use to supply their own ITK (`cpp/include/imhost_itk.hpp`):
//! rigid (Euler 3-D) registration of one 3-D image onto another with ITK's v4 registration
//! framework, and resampling of the moving image onto the fixed grid. ITK exceptions come back
//! as `Err`; nothing C++ crosses into Rust unwinding.

#![allow(missing_docs)] // the bridge's generated items

#[cxx::bridge(namespace = "imhost_itk")]
mod ffi {
    /// The grid both images share (LPS, ITK's convention).
    struct Grid {
        size: [usize; 3],
        spacing: [f64; 3],
        origin: [f64; 3],
        /// Row-major 3×3 direction cosines (columns = axis directions).
        direction: [f64; 9],
    }

    /// Registration settings.
    struct RigidSettings {
        /// Shrink factors of the pyramid levels, coarse to fine (0 ends the list).
        shrink: [u32; 3],
        /// Gradient-descent iterations per level.
        iterations: u32,
        /// Fraction of voxels sampled by the metric (0 < f ≤ 1).
        sampling: f64,
        /// Seed of the random sampling.
        seed: u32,
        /// ITK work units per registration (0: ITK's default, every core).
        threads: u32,
    }

    /// The transform found (fixed → moving points: p' = R·(p − c) + c + t) and the final metric.
    #[derive(Debug, Clone, Copy)]
    struct RigidTransform {
        /// Euler angles about x, y, z in radians.
        angles: [f64; 3],
        /// Translation in mm.
        translation: [f64; 3],
        /// Centre of rotation in mm.
        center: [f64; 3],
        /// Metric value at the end.
        metric: f64,
    }

    unsafe extern "C++" {
        include!("shim.h");

        /// Register `moving` onto `fixed` (both on `grid`, voxels in `i + ni·(j + nj·k)` order)
        /// and write `moving` resampled through the transform into `resampled`.
        fn register_rigid(
            fixed: &[f32],
            moving: &[f32],
            grid: &Grid,
            settings: &RigidSettings,
            resampled: &mut [f32],
        ) -> Result<RigidTransform>;

        /// The settings imhost registers a frame of `size` voxels with
        /// (`imhost::itk::RigidSettings::for_grid`: the header's choice, one implementation).
        fn settings_for(size: [usize; 3]) -> RigidSettings;

        /// "ITK <version> rigid (…)", for the report.
        fn describe() -> String;
    }
}

pub use ffi::{Grid, RigidSettings, RigidTransform, describe, register_rigid, settings_for};

impl Default for RigidSettings {
    fn default() -> Self {
        RigidSettings { shrink: [4, 2, 1], iterations: 200, sampling: 0.25, seed: 7, threads: 0 }
    }
}
