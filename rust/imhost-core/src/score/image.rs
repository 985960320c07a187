//! Image similarity: SSIM and PSNR, over the whole grid or inside a mask.
//!
//! SSIM follows Wang et al. (2004) as MONAI `SSIMMetric` and scikit-image
//! `structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`
//! compute it: an 11-tap Gaussian window of σ 1.5 (normalised), K1 = 0.01, K2 = 0.03, population
//! (co)variances, and only positions where the whole window lies inside the image ("valid").
//! Grids are `[ni, nj, nk]` with `i` fastest.

use serde::Serialize;

use crate::{Error, Result};

/// Half width of the Gaussian window (11 taps: scikit-image's `int(3.5 σ + 0.5)` at σ 1.5).
const RADIUS: usize = 5;
const SIGMA: f64 = 1.5;
const K1: f64 = 0.01;
const K2: f64 = 0.03;

/// Over which axes the window slides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SsimWindow {
    /// A 3-D window over `i`, `j`, `k` (an axis of length 1 is left out, so a single slice is 2-D).
    Volume,
    /// A 2-D window in each axial (`k`) slice; the mean is over every slice's valid positions.
    Slices,
}

/// SSIM and PSNR of an image against its reference.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ImageScores {
    /// Mean SSIM over the valid positions (inside the mask when one is given).
    pub ssim: f64,
    /// 10 log10(R² / MSE) in dB (+inf for identical images; MSE inside the mask when given).
    pub psnr_db: f64,
    /// Mean squared error.
    pub mse: f64,
    /// R, the data range used by both.
    pub data_range: f64,
    /// Positions the SSIM mean is taken over.
    pub ssim_positions: u64,
    /// Voxels the MSE is taken over.
    pub mse_voxels: u64,
    /// The window.
    pub window: SsimWindow,
}

fn gaussian_taps() -> [f64; 2 * RADIUS + 1] {
    let mut w = [0.0; 2 * RADIUS + 1];
    for (n, x) in w.iter_mut().enumerate() {
        let d = n as f64 - RADIUS as f64;
        *x = (-d * d / (2.0 * SIGMA * SIGMA)).exp();
    }
    let s: f64 = w.iter().sum();
    w.map(|x| x / s)
}

/// Valid correlation with `taps` along `axis` of a `[ni, nj, nk]` grid.
fn filter_axis(v: &[f64], dims: [usize; 3], axis: usize, taps: &[f64]) -> (Vec<f64>, [usize; 3]) {
    let w = taps.len();
    let mut od = dims;
    od[axis] = dims[axis] + 1 - w;
    let stride = [1, dims[0], dims[0] * dims[1]][axis];
    let mut out = Vec::with_capacity(od.iter().product());
    for k in 0..od[2] {
        for j in 0..od[1] {
            for i in 0..od[0] {
                let base = i + dims[0] * (j + dims[1] * k);
                out.push(taps.iter().enumerate().map(|(t, c)| c * v[base + t * stride]).sum());
            }
        }
    }
    (out, od)
}

/// The SSIM map at the valid positions, its grid, and which axes the window used.
fn ssim_map(x: &[f64], y: &[f64], dims: [usize; 3], axes: &[usize], range: f64) -> (Vec<f64>, [usize; 3]) {
    let taps = gaussian_taps();
    let smooth = |v: Vec<f64>| {
        let (mut v, mut d) = (v, dims);
        for &a in axes {
            (v, d) = filter_axis(&v, d, a, &taps);
        }
        (v, d)
    };
    let (ux, od) = smooth(x.to_vec());
    let (uy, _) = smooth(y.to_vec());
    let (uxx, _) = smooth(x.iter().map(|a| a * a).collect());
    let (uyy, _) = smooth(y.iter().map(|a| a * a).collect());
    let (uxy, _) = smooth(x.iter().zip(y).map(|(a, b)| a * b).collect());
    let (c1, c2) = ((K1 * range).powi(2), (K2 * range).powi(2));
    let map = (0..ux.len())
        .map(|n| {
            let (mx, my) = (ux[n], uy[n]);
            let vx = uxx[n] - mx * mx;
            let vy = uyy[n] - my * my;
            let vxy = uxy[n] - mx * my;
            ((2.0 * mx * my + c1) * (2.0 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        })
        .collect();
    (map, od)
}

/// SSIM and PSNR of `image` against `reference` on the grid `dims`, with data range `range`
/// (the reference's max − min is the usual choice; MONAI's default is 1). With `mask`, the SSIM
/// mean is over valid positions whose centre voxel is in the mask and the MSE over mask voxels
/// (the lesion-local scores of the stroke paper).
pub fn image_scores(
    image: &[f64],
    reference: &[f64],
    dims: [usize; 3],
    range: f64,
    mask: Option<&[bool]>,
    window: SsimWindow,
) -> Result<ImageScores> {
    let n: usize = dims.iter().product();
    if image.len() != n || reference.len() != n || mask.is_some_and(|m| m.len() != n) {
        return Err(Error::shape(format!("the image, reference and mask must all fill the {dims:?} grid")));
    }
    if !range.is_finite() || range <= 0.0 {
        return Err(Error::invalid_argument(format!("the data range {range} must be finite and > 0")));
    }
    if let Some(v) = image.iter().chain(reference).find(|v| !v.is_finite()) {
        return Err(Error::invalid_argument(format!("the images hold a non-finite value ({v})")));
    }
    let axes: Vec<usize> = match window {
        SsimWindow::Volume => (0..3).filter(|&a| dims[a] > 1).collect(),
        SsimWindow::Slices => (0..2).filter(|&a| dims[a] > 1).collect(),
    };
    let w = 2 * RADIUS + 1;
    if let Some(&a) = axes.iter().find(|&&a| dims[a] < w) {
        return Err(Error::shape(format!(
            "SSIM's {w}-voxel window does not fit along axis {} ({} voxels){}",
            ["i", "j", "k"][a],
            dims[a],
            if a == 2 { "; score slice by slice instead" } else { "" }
        )));
    }
    let (map, od) = ssim_map(image, reference, dims, &axes, range);
    // Offset of a valid position's centre in the input grid.
    let off = |a: usize| if axes.contains(&a) { RADIUS } else { 0 };
    let (mut sum, mut count) = (0.0, 0u64);
    for k in 0..od[2] {
        for j in 0..od[1] {
            for i in 0..od[0] {
                let centre = (i + off(0)) + dims[0] * ((j + off(1)) + dims[1] * (k + off(2)));
                if mask.is_none_or(|m| m[centre]) {
                    sum += map[i + od[0] * (j + od[1] * k)];
                    count += 1;
                }
            }
        }
    }
    let (mut se, mut voxels) = (0.0, 0u64);
    for (v, (a, b)) in image.iter().zip(reference).enumerate() {
        if mask.is_none_or(|m| m[v]) {
            se += (a - b).powi(2);
            voxels += 1;
        }
    }
    let mse = if voxels == 0 { f64::NAN } else { se / voxels as f64 };
    Ok(ImageScores {
        ssim: if count == 0 { f64::NAN } else { sum / count as f64 },
        psnr_db: 10.0 * (range * range / mse).log10(),
        mse,
        data_range: range,
        ssim_positions: count,
        mse_voxels: voxels,
        window,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_images_score_one_and_infinite_psnr() {
        let dims = [12, 13, 1];
        let x: Vec<f64> = (0..156).map(|v| (v * 7 % 11) as f64).collect();
        let s = image_scores(&x, &x, dims, 10.0, None, SsimWindow::Volume).unwrap();
        assert!((s.ssim - 1.0).abs() < 1e-12);
        assert_eq!(s.psnr_db, f64::INFINITY);
        assert_eq!(s.ssim_positions, 2 * 3);
    }

    #[test]
    fn psnr_by_hand_and_window_errors() {
        let dims = [11, 11, 1];
        let x = vec![0.0; 121];
        let y = vec![1.0; 121];
        // MSE 1, R 10: 20 dB. Constant images: SSIM = (2·0·1 + c1)/(0 + 1 + c1) = c1/(1 + c1).
        let s = image_scores(&x, &y, dims, 10.0, None, SsimWindow::Volume).unwrap();
        assert!((s.psnr_db - 20.0).abs() < 1e-12);
        let c1 = (0.01f64 * 10.0).powi(2);
        assert!((s.ssim - c1 / (1.0 + c1)).abs() < 1e-12);
        let e = image_scores(&x[..110], &y[..110], [11, 10, 1], 1.0, None, SsimWindow::Volume).unwrap_err();
        assert!(e.message().contains("window does not fit along axis j"), "{e}");
    }
}
