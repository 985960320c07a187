//! Generated volumes with known content.
//!
//! [`bolus_demo`] is the built-in input of the main job while the CT-perfusion phantoms are being
//! written: a head-like slab whose artery and tissue enhance with a gamma-variate bolus, sampled at
//! non-uniform frame times, so that its temporal MIP is known in closed form.

pub mod cac;
pub mod ctp;
pub mod dwi;
pub mod nuclei;

use ndarray::{Array4, ShapeBuilder};

use crate::error::{Error, Result};
use crate::geometry::Geometry;
use crate::volume::{FrameTimes, TimeSource, Volume};

/// Options of [`bolus_demo`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BolusDemoOptions {
    /// In-plane size and slice count `[ni, nj, nk]`.
    pub shape: [usize; 3],
    /// Voxel spacing in mm.
    pub spacing: [f64; 3],
    /// Frame times in seconds.
    pub frame_times: Vec<f64>,
}

impl Default for BolusDemoOptions {
    fn default() -> Self {
        // A typical CTP schedule: 1 s sampling through the first pass, then every 3 s.
        let mut times: Vec<f64> = (0..30).map(f64::from).collect();
        times.extend((1..=7).map(|k| 29.0 + 3.0 * f64::from(k)));
        BolusDemoOptions { shape: [128, 128, 16], spacing: [0.9, 0.9, 5.0], frame_times: times }
    }
}

/// The tissue classes of the demo, with their baseline and peak enhancement in HU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    /// Name used in summaries.
    pub name: &'static str,
    /// Unenhanced HU.
    pub baseline_hu: f64,
    /// Enhancement at the bolus peak, in HU.
    pub peak_enhancement_hu: f64,
    /// Bolus arrival in s (the gamma variate's t0).
    pub arrival_s: f64,
}

/// Air, skull, brain tissue and an artery.
pub static REGIONS: [Region; 4] = [
    Region { name: "air", baseline_hu: -1000.0, peak_enhancement_hu: 0.0, arrival_s: 0.0 },
    Region { name: "skull", baseline_hu: 1000.0, peak_enhancement_hu: 0.0, arrival_s: 0.0 },
    Region { name: "tissue", baseline_hu: 35.0, peak_enhancement_hu: 20.0, arrival_s: 10.0 },
    Region { name: "artery", baseline_hu: 40.0, peak_enhancement_hu: 400.0, arrival_s: 8.0 },
];

/// Gamma-variate shape of the bolus, scaled to a peak of 1 at `t0 + α·β`
/// (α = 3, β = 1.5 s: the `pct` toolbox's simulation defaults).
pub fn gamma_variate(t: f64, t0: f64) -> f64 {
    const ALPHA: f64 = 3.0;
    const BETA: f64 = 1.5;
    if t <= t0 {
        return 0.0;
    }
    let x = (t - t0) / (ALPHA * BETA);
    x.powf(ALPHA) * (ALPHA * (1.0 - x)).exp()
}

impl Region {
    /// HU of this region at time `t` (before rounding to the stored integer).
    pub fn hu_at(&self, t: f64) -> f64 {
        self.baseline_hu + self.peak_enhancement_hu * gamma_variate(t, self.arrival_s)
    }

    /// The region's temporal maximum over the given frame times, as stored (rounded to i16):
    /// the closed-form truth for the temporal MIP.
    pub fn expected_mip(&self, times: &[f64]) -> i16 {
        times.iter().map(|&t| self.hu_at(t).round() as i16).max().unwrap_or(0)
    }
}

/// The index into [`REGIONS`] of voxel `(i, j)` (the same on every slice): an elliptic head
/// with a 3-voxel skull, and an artery of radius 3 voxels left of centre.
pub fn region_index(i: usize, j: usize, shape: [usize; 3]) -> usize {
    let (ci, cj) = (shape[0] as f64 / 2.0, shape[1] as f64 / 2.0);
    let (ri, rj) = (0.42 * shape[0] as f64, 0.36 * shape[1] as f64);
    let (x, y) = (i as f64 + 0.5 - ci, j as f64 + 0.5 - cj);
    let r = ((x / ri).powi(2) + (y / rj).powi(2)).sqrt();
    let skull = 3.0 / ri.min(rj);
    let artery = (x + 0.2 * ri).powi(2) + y.powi(2) <= 9.0;
    match () {
        _ if r > 1.0 => 0,
        _ if r > 1.0 - skull => 1,
        _ if artery => 3,
        _ => 2,
    }
}

/// The region of voxel `(i, j)`, see [`region_index`].
pub fn region_at(i: usize, j: usize, shape: [usize; 3]) -> &'static Region {
    &REGIONS[region_index(i, j, shape)]
}

/// Generate the demo: an `i16` 4-D volume in HU with LPS-axis-aligned geometry centred on the
/// origin. Noise-free, so every voxel's MIP equals its region's [`Region::expected_mip`].
pub fn bolus_demo(options: &BolusDemoOptions) -> Result<Volume<i16>> {
    let [ni, nj, nk] = options.shape;
    if ni < 16 || nj < 16 || nk == 0 {
        return Err(Error::invalid_argument(format!("demo shape {:?} is too small (at least 16×16×1)", options.shape)));
    }
    let times = FrameTimes::new(options.frame_times.clone(), TimeSource::Caller)?;
    let origin: [f64; 3] = std::array::from_fn(|a| -0.5 * (options.shape[a] - 1) as f64 * options.spacing[a]);
    let geometry = Geometry::axis_aligned(options.spacing, origin)?;
    let nt = times.as_slice().len();
    let mut data = Array4::<i16>::zeros((ni, nj, nk, nt).f());
    for (t, &time) in times.as_slice().iter().enumerate() {
        let hu: Vec<i16> = REGIONS.iter().map(|r| r.hu_at(time).round() as i16).collect();
        for j in 0..nj {
            for i in 0..ni {
                let index = region_index(i, j, options.shape);
                for k in 0..nk {
                    data[[i, j, k, t]] = hu[index];
                }
            }
        }
    }
    Volume::new_4d(data, geometry, times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_variate_peaks_at_one_at_alpha_beta() {
        assert!((gamma_variate(8.0 + 4.5, 8.0) - 1.0).abs() < 1e-12);
        assert!(gamma_variate(12.0, 8.0) < 1.0);
        assert_eq!(gamma_variate(7.0, 8.0), 0.0);
    }

    #[test]
    fn demo_holds_every_region() {
        let v = bolus_demo(&BolusDemoOptions::default()).unwrap();
        assert_eq!(v.shape(), [128, 128, 16, 37]);
        let first = v.data().index_axis(ndarray::Axis(3), 0);
        for region in &REGIONS {
            assert!(first.iter().any(|&hu| hu == region.baseline_hu as i16), "{} missing", region.name);
        }
        // Artery peak by hand: frames at 12 s and 13 s straddle the peak at 12.5 s;
        // g(13) = (5/4.5)³·e^(3·(1 − 5/4.5)) = 1.3717·0.7165 = 0.9829 > g(12) = 0.9802,
        // so the MIP is 40 + 400·0.9829 = 433.2 → 433. Tissue: g(14 or 15 s after t0 = 10) → 55.
        let times = v.frame_times().unwrap().as_slice();
        assert_eq!(REGIONS[3].expected_mip(times), 433);
        assert_eq!(REGIONS[2].expected_mip(times), 55);
    }
}
