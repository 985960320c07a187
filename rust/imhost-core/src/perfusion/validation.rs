//! Agreement of a result with a phantom's ground truth: the numbers of `docs/VALIDATION.md`.

use serde::Serialize;

use super::PerfusionResult;
use crate::phantom::ctp::Truth;

/// Agreement of one map with its truth over the evaluation voxels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MapAgreement {
    /// Pearson correlation.
    pub pearson_r: f64,
    /// Median of |estimate − truth|/truth.
    pub median_relative_error: f64,
}

/// Everything compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agreement {
    /// Voxels compared (tissue in the truth and in the brain mask).
    pub voxels: usize,
    /// CBF.
    pub cbf: MapAgreement,
    /// CBV.
    pub cbv: MapAgreement,
    /// MTT.
    pub mtt: MapAgreement,
    /// Median |Tmax − truth| in s (over `tmax_voxels`).
    pub tmax_median_abs_error_s: f64,
    /// Median |delay − truth| in s.
    pub delay_median_abs_error_s: f64,
    /// Dice of the core mask (`None` when both are empty).
    pub core_dice: Option<f64>,
    /// Dice of the hypoperfusion mask.
    pub hypoperfusion_dice: Option<f64>,
    /// Core volume estimate − truth (ml).
    pub core_volume_error_ml: f64,
    /// Hypoperfusion volume estimate − truth (ml).
    pub hypoperfusion_volume_error_ml: f64,
}

/// Pearson r of two samples ([`crate::score::stats::pearson`]; NaN where undefined or a value
/// is not finite).
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    crate::score::stats::pearson(a, b).unwrap_or(f64::NAN)
}

/// Median (NaN for an empty sample).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) }
}

/// Dice of two masks (`None` when both are empty), by [`crate::score::overlap`].
pub fn dice(a: &[bool], b: &[bool]) -> Option<f64> {
    let mask = |m: &[bool]| crate::score::Mask::new(m.to_vec(), [m.len(), 1, 1], [1.0; 3]);
    let d = crate::score::overlap(&mask(a).ok()?, &mask(b).ok()?).ok()?.dice;
    (!d.is_nan()).then_some(d)
}

/// Compare `result` with `truth`. `tmax_voxel` selects voxels whose Tmax truth is unambiguous
/// (the Kudo grid's box-IRF slices are left out by the caller).
pub fn compare(result: &PerfusionResult, truth: &Truth, tmax_voxel: &dyn Fn(usize) -> bool) -> Agreement {
    let flat = |v: &crate::Volume<f32>| -> Vec<f64> { v.data().iter().map(|&x| f64::from(x)).collect() };
    let flat_u8 = |v: &crate::Volume<u8>| -> Vec<bool> { v.data().iter().map(|&x| x == 1).collect() };
    // Volumes are indexed in the same (NIfTI) order on both sides.
    let tissue = flat_u8(&truth.tissue);
    let brain = flat_u8(&result.brain);
    let eval: Vec<usize> = (0..tissue.len()).filter(|&n| tissue[n] && brain[n]).collect();
    let agree = |est: &crate::Volume<f32>, tru: &crate::Volume<f32>| -> MapAgreement {
        let (e, t) = (flat(est), flat(tru));
        let (a, b): (Vec<f64>, Vec<f64>) = eval.iter().map(|&n| (e[n], t[n])).filter(|(x, _)| x.is_finite()).unzip();
        MapAgreement {
            pearson_r: pearson(&a, &b),
            median_relative_error: median(a.iter().zip(&b).map(|(x, y)| ((x - y) / y).abs()).collect()),
        }
    };
    let abs_err = |est: &crate::Volume<f32>, tru: &crate::Volume<f32>| -> f64 {
        let (e, t) = (flat(est), flat(tru));
        median(eval.iter().filter(|&&n| tmax_voxel(n) && e[n].is_finite()).map(|&n| (e[n] - t[n]).abs()).collect())
    };
    let voxel_ml = truth.cbf.geometry().spacing.iter().product::<f64>() / 1000.0;
    let count = |m: &[bool]| m.iter().filter(|&&x| x).count() as f64 * voxel_ml;
    let (core_e, core_t) = (flat_u8(&result.core), flat_u8(&truth.core));
    let (hyp_e, hyp_t) = (flat_u8(&result.hypoperfusion), flat_u8(&truth.hypoperfusion));
    Agreement {
        voxels: eval.len(),
        cbf: agree(&result.maps.cbf, &truth.cbf),
        cbv: agree(&result.maps.cbv, &truth.cbv),
        mtt: agree(&result.maps.mtt, &truth.mtt),
        tmax_median_abs_error_s: abs_err(&result.maps.tmax, &truth.tmax),
        delay_median_abs_error_s: abs_err(&result.maps.delay, &truth.delay),
        core_dice: dice(&core_e, &core_t),
        hypoperfusion_dice: dice(&hyp_e, &hyp_t),
        core_volume_error_ml: count(&core_e) - count(&core_t),
        hypoperfusion_volume_error_ml: count(&hyp_e) - count(&hyp_t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_by_hand() {
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]) - 1.0).abs() < 1e-12);
        assert!((pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(dice(&[true, true, false], &[true, false, false]), Some(2.0 / 3.0));
        assert_eq!(dice(&[false], &[false]), None);
    }
}
