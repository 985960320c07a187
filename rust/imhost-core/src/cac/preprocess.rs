//! The CAC model's preprocessing and post-processing (Gogin et al. 2021, §2.3 "Pre-processing"
//! and "Post-processing"):
//! - the CT is **downsampled to isotropic 2.5 or 3 mm** by its slice spacing ([`iso_spacing`]);
//!   a cell of the isotropic grid takes the mean HU of the original voxels whose centres fall in
//!   it, **except where it holds voxels ≥ 130 HU: then their maximum** ("intensities above 130 HU
//!   in the original image were enhanced in the downsampled image" — our reading: a small
//!   calcification keeps its peak instead of being averaged away);
//! - clipped to −300…800 HU and scaled linearly to 0…1;
//! - a mask is downsampled by **any**: a cell is set when one of its voxels is;
//! - the predicted mask is **upsampled** to the original grid (each voxel takes the cell holding
//!   its centre) and **thresholded at 130 HU** on the original CT.
//!
//! Cell of voxel `i` along an axis: `floor((i + ½)·spacing / iso)`; the isotropic grid has
//! `ceil(n·spacing / iso)` cells, so it covers the original extent.

use rayon::prelude::*;

use super::THRESHOLD_HU;
use crate::{Error, Result};

/// Clip range of the network input, HU.
pub const CLIP_HU: (f32, f32) = (-300.0, 800.0);

/// 2.5 mm for slices up to 2.75 mm apart, else 3 mm.
pub fn iso_spacing(slice_mm: f64) -> f64 {
    if slice_mm <= 2.75 { 2.5 } else { 3.0 }
}

/// The isotropic grid of a CT.
#[derive(Debug, Clone, PartialEq)]
pub struct IsoGrid {
    /// Original grid.
    pub dims: [usize; 3],
    /// Original spacing, mm.
    pub spacing: [f64; 3],
    /// Isotropic spacing, mm.
    pub iso: f64,
    /// Isotropic grid size.
    pub iso_dims: [usize; 3],
    /// Cell of every original index, per axis.
    cell: [Vec<usize>; 3],
}

impl IsoGrid {
    /// The grid for `dims` at `spacing`, isotropic at `iso` mm.
    pub fn new(dims: [usize; 3], spacing: [f64; 3], iso: f64) -> Result<Self> {
        if !(iso.is_finite() && iso > 0.0) || spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) || dims.contains(&0)
        {
            return Err(Error::invalid_argument(format!("no isotropic grid for {dims:?} at {spacing:?} mm, {iso} mm")));
        }
        let iso_dims = [0, 1, 2].map(|a| ((dims[a] as f64 * spacing[a] / iso).ceil() as usize).max(1));
        let cell = [0, 1, 2].map(|a| {
            (0..dims[a])
                .map(|i| ((((i as f64 + 0.5) * spacing[a]) / iso).floor() as usize).min(iso_dims[a] - 1))
                .collect()
        });
        Ok(IsoGrid { dims, spacing, iso, iso_dims, cell })
    }

    fn cell_of(&self, i: usize, j: usize, k: usize) -> usize {
        let [ci, cj] = [self.iso_dims[0], self.iso_dims[1]];
        self.cell[0][i] + ci * (self.cell[1][j] + cj * self.cell[2][k])
    }

    fn cells(&self) -> usize {
        self.iso_dims.iter().product()
    }

    /// The network input: downsampled HU with calcium enhancement, clipped and scaled to 0…1.
    pub fn downsample_ct(&self, hu: &[f32]) -> Result<Vec<f32>> {
        let [ni, nj, nk] = self.dims;
        if hu.len() != ni * nj * nk {
            return Err(Error::shape("the CT does not fill its grid"));
        }
        let n = self.cells();
        crate::memory::check(crate::memory::bytes_of(&[n], 8 + 4 + 4 + 4), "the isotropic CT")?;
        let (mut sum, mut count, mut calcium) = (vec![0.0f64; n], vec![0u32; n], vec![f32::NEG_INFINITY; n]);
        for k in 0..nk {
            for j in 0..nj {
                for i in 0..ni {
                    let v = hu[i + ni * (j + nj * k)];
                    let c = self.cell_of(i, j, k);
                    sum[c] += f64::from(v);
                    count[c] += 1;
                    if f64::from(v) >= THRESHOLD_HU {
                        calcium[c] = calcium[c].max(v);
                    }
                }
            }
        }
        let (lo, hi) = CLIP_HU;
        Ok((0..n)
            .into_par_iter()
            .map(|c| {
                let mean = if count[c] > 0 { (sum[c] / f64::from(count[c])) as f32 } else { -1000.0 };
                let v = if calcium[c].is_finite() { mean.max(calcium[c]) } else { mean };
                (v.clamp(lo, hi) - lo) / (hi - lo)
            })
            .collect())
    }

    /// A mask downsampled by "any".
    pub fn downsample_mask(&self, mask: &[bool]) -> Result<Vec<bool>> {
        let [ni, nj, nk] = self.dims;
        if mask.len() != ni * nj * nk {
            return Err(Error::shape("the mask does not fill its grid"));
        }
        let mut out = vec![false; self.cells()];
        for k in 0..nk {
            for j in 0..nj {
                for i in 0..ni {
                    if mask[i + ni * (j + nj * k)] {
                        out[self.cell_of(i, j, k)] = true;
                    }
                }
            }
        }
        Ok(out)
    }

    /// An isotropic mask back on the original grid, kept where the original CT is ≥ 130 HU.
    pub fn upsample_mask(&self, iso_mask: &[bool], hu: &[f32]) -> Result<Vec<bool>> {
        let [ni, nj, nk] = self.dims;
        if iso_mask.len() != self.cells() || hu.len() != ni * nj * nk {
            return Err(Error::shape("the isotropic mask or the CT does not fill its grid"));
        }
        let slab = ni * nj;
        Ok((0..nk)
            .into_par_iter()
            .flat_map_iter(|k| {
                (0..slab).map(move |p| {
                    let (i, j) = (p % ni, p / ni);
                    iso_mask[self.cell_of(i, j, k)] && f64::from(hu[p + k * slab]) >= THRESHOLD_HU
                })
            })
            .collect())
    }
}

/// `data` (`dims`, i fastest) padded at the high end of every axis to multiples of `m` with
/// `fill`; returns the padded data and size.
pub fn pad_to_multiple(data: &[f32], dims: [usize; 3], m: usize, fill: f32) -> (Vec<f32>, [usize; 3]) {
    let p = dims.map(|d| d.next_multiple_of(m));
    let mut out = vec![fill; p[0] * p[1] * p[2]];
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            let src = dims[0] * (j + dims[1] * k);
            let dst = p[0] * (j + p[1] * k);
            out[dst..dst + dims[0]].copy_from_slice(&data[src..src + dims[0]]);
        }
    }
    (out, p)
}

/// The `dims` corner of a padded volume of size `padded`.
pub fn crop<T: Copy>(data: &[T], padded: [usize; 3], dims: [usize; 3]) -> Vec<T> {
    let mut out = Vec::with_capacity(dims.iter().product());
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            let src = padded[0] * (j + padded[1] * k);
            out.extend_from_slice(&data[src..src + dims[0]]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_cover_the_extent_and_calcium_keeps_its_peak() {
        // 6 voxels of 1 mm along i into 2.5 mm cells: centres 0.5, 1.5, …, 5.5 mm over 2.5 →
        // cells 0, 0, 1, 1, 1, 2; 3 cells cover the 6 mm.
        let g = IsoGrid::new([6, 1, 1], [1.0, 1.0, 2.5], 2.5).unwrap();
        assert_eq!(g.iso_dims, [3, 1, 1]);
        assert_eq!(g.cell[0], vec![0, 0, 1, 1, 1, 2]);
        let hu = [0.0, 100.0, 0.0, 500.0, -300.0, -100.0];
        let x = g.downsample_ct(&hu).unwrap();
        // Cell 0: mean 50 HU; cell 1 (0, 500, −300): a voxel ≥ 130 HU → its 500; cell 2: −100.
        let scale = |h: f32| (h + 300.0) / 1100.0;
        assert!((x[0] - scale(50.0)).abs() < 1e-6);
        assert!((x[1] - scale(500.0)).abs() < 1e-6);
        assert!((x[2] - scale(-100.0)).abs() < 1e-6);
        // Clipping: 2000 HU → 1, −1000 → 0.
        let y = g.downsample_ct(&[2000.0, 2000.0, -1000.0, -1000.0, -1000.0, 0.0]).unwrap();
        assert_eq!((y[0], y[1]), (1.0, 0.0));
    }

    #[test]
    fn masks_go_down_by_any_and_come_back_above_130_hu() {
        let g = IsoGrid::new([6, 1, 1], [1.0, 1.0, 3.0], 3.0).unwrap();
        assert_eq!(g.iso_dims, [2, 1, 1]);
        let down = g.downsample_mask(&[false, false, true, false, false, false]).unwrap();
        assert_eq!(down, vec![true, false]);
        let hu = [200.0, 100.0, 131.0, 500.0, 500.0, 500.0];
        let up = g.upsample_mask(&down, &hu).unwrap();
        assert_eq!(up, vec![true, false, true, false, false, false]);
        assert_eq!(iso_spacing(2.5), 2.5);
        assert_eq!(iso_spacing(3.0), 3.0);
    }

    #[test]
    fn pad_and_crop_round_trip() {
        let data: Vec<f32> = (0..30).map(|x| x as f32).collect();
        let (p, pd) = pad_to_multiple(&data, [5, 3, 2], 4, -1.0);
        assert_eq!(pd, [8, 4, 4]);
        assert_eq!(p[0..5], data[0..5]);
        assert_eq!(p[5], -1.0);
        assert_eq!(crop(&p, pd, [5, 3, 2]), data);
    }
}
