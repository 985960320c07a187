//! Scoring: the numbers that say how good a segmentation, a map or a prediction is, each under a
//! named convention (docs/SCORING.md says which library agrees with which).
//!
//! - [`segmentation`]: overlap (Dice, Jaccard, precision, recall, specificity, accuracy, F1,
//!   volume errors) and surface distances (HD, HD95 two ways, ASSD, MASD, NSD), spacing-aware.
//! - [`image`]: SSIM (Gaussian σ 1.5, as MONAI and scikit-image with `gaussian_weights`) and
//!   PSNR, global or inside a mask.
//! - [`stats`]: agreement of paired numbers (Pearson, Spearman, ICC, Bland–Altman, weighted κ)
//!   and classification/ranking (ROC AUC, operating point, Harrell's C-index).
//!
//! Undefined values are `NaN` (serialised as JSON `null`) with the reason in the result: for
//! example Dice of two empty masks, precision of an empty prediction. A distance to an empty
//! surface is `+inf` (also `null` in JSON; [`SurfaceScores::empty`] says which side).

pub mod edt;
pub mod image;
pub mod stats;

use rayon::prelude::*;
use serde::Serialize;

use crate::{AnyVolumeView, Error, Result, VolumeView, Voxel, with_view};

/// A binary mask on a grid, `i` fastest in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Mask {
    data: Vec<bool>,
    dims: [usize; 3],
    spacing: [f64; 3],
}

impl Mask {
    /// A mask from its voxels (`i` fastest) and spacing in mm.
    pub fn new(data: Vec<bool>, dims: [usize; 3], spacing: [f64; 3]) -> Result<Self> {
        if data.len() != dims.iter().product::<usize>() {
            return Err(Error::shape(format!("{} voxels do not fill a {dims:?} grid", data.len())));
        }
        if spacing.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(Error::geometry(format!("spacing {spacing:?} must be finite and > 0")));
        }
        Ok(Mask { data, dims, spacing })
    }

    /// The voxels of a 3-D label volume equal to `label`, or every non-zero voxel when `label` is
    /// `None`. A 4-D volume is an error.
    pub fn from_labels(volume: &AnyVolumeView<'_>, label: Option<f64>) -> Result<Self> {
        with_view!(volume, v => Self::from_typed(v, label))
    }

    fn from_typed<T: Voxel>(v: &VolumeView<'_, T>, label: Option<f64>) -> Result<Self> {
        let [ni, nj, nk, nt] = v.shape();
        if nt != 1 {
            return Err(Error::shape(format!("a mask must be 3-D, but this volume has {nt} frames")));
        }
        crate::memory::check(crate::memory::bytes_of(&[ni, nj, nk], 1), "a mask")?;
        let test = |x: T| match label {
            Some(l) => x.to_f64() == l,
            None => x.to_f64() != 0.0,
        };
        let d = v.data();
        let data: Vec<bool> = match d.as_slice_memory_order() {
            Some(s) if d.t().is_standard_layout() => s.iter().map(|&x| test(x)).collect(),
            _ => {
                let mut out = Vec::with_capacity(ni * nj * nk);
                for k in 0..nk {
                    for j in 0..nj {
                        for i in 0..ni {
                            out.push(test(d[[i, j, k, 0]]));
                        }
                    }
                }
                out
            }
        };
        Mask::new(data, [ni, nj, nk], v.geometry().spacing)
    }

    /// The voxels, `i` fastest.
    pub fn data(&self) -> &[bool] {
        &self.data
    }

    /// Grid size `[ni, nj, nk]`.
    pub fn dims(&self) -> [usize; 3] {
        self.dims
    }

    /// Spacing in mm.
    pub fn spacing(&self) -> [f64; 3] {
        self.spacing
    }

    /// Voxels set.
    pub fn count(&self) -> u64 {
        self.data.par_iter().filter(|&&x| x).count() as u64
    }

    /// Linear indices of the surface voxels: set voxels with a 6-neighbour that is unset or
    /// outside the grid (`X − erosion(X)` with the cross structure and background beyond the
    /// border, as scipy's `binary_erosion`, MONAI, MedPy at connectivity 1 and Metrics
    /// Reloaded).
    pub fn surface(&self) -> Vec<usize> {
        let [ni, nj, nk] = self.dims;
        let slab = ni * nj;
        let d = &self.data;
        (0..nk)
            .into_par_iter()
            .flat_map_iter(|k| {
                let mut out = Vec::new();
                for j in 0..nj {
                    for i in 0..ni {
                        let n = i + j * ni + k * slab;
                        if !d[n] {
                            continue;
                        }
                        let inside = i > 0
                            && i + 1 < ni
                            && j > 0
                            && j + 1 < nj
                            && k > 0
                            && k + 1 < nk
                            && d[n - 1]
                            && d[n + 1]
                            && d[n - ni]
                            && d[n + ni]
                            && d[n - slab]
                            && d[n + slab];
                        if !inside {
                            out.push(n);
                        }
                    }
                }
                out
            })
            .collect()
    }
}

/// Refuse two label volumes that do not lie on the same grid in the patient: the same size,
/// spacing (relative 1e-4), origin (1e-3 mm) and axes (1e-4), as a segmentation and its
/// reference must.
pub fn check_same_placement(
    pred: &crate::Geometry,
    truth: &crate::Geometry,
    pred_dims: [usize; 3],
    truth_dims: [usize; 3],
) -> Result<()> {
    if pred_dims != truth_dims {
        return Err(Error::shape(format!(
            "the prediction's grid {pred_dims:?} differs from the truth's {truth_dims:?}"
        )));
    }
    let spacing = pred.spacing.iter().zip(&truth.spacing).all(|(a, b)| (a - b).abs() <= 1e-4 * a.max(*b));
    if !spacing {
        return Err(Error::geometry(format!(
            "the prediction's spacing {:?} mm differs from the truth's {:?} mm",
            pred.spacing, truth.spacing
        )));
    }
    if pred.origin.iter().zip(&truth.origin).any(|(a, b)| (a - b).abs() > 1e-3) {
        return Err(Error::geometry(format!(
            "the prediction's origin {:?} mm (LPS) differs from the truth's {:?} mm: resample one onto the other first",
            pred.origin, truth.origin
        )));
    }
    if pred.direction.iter().flatten().zip(truth.direction.iter().flatten()).any(|(a, b)| (a - b).abs() > 1e-4) {
        return Err(Error::geometry(
            "the prediction's axes differ from the truth's (direction cosines): resample one onto the other first",
        ));
    }
    Ok(())
}

/// Which masks were empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Empty {
    /// Neither.
    Neither,
    /// The prediction only.
    Prediction,
    /// The truth only.
    Truth,
    /// Both.
    Both,
}

/// True positives, false positives, false negatives and true negatives (voxels, or cases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Confusion {
    #[allow(missing_docs)]
    pub tp: u64,
    #[allow(missing_docs)]
    pub fp: u64,
    /// False negatives (`fn` in JSON).
    #[serde(rename = "fn")]
    pub fn_: u64,
    #[allow(missing_docs)]
    pub tn: u64,
}

/// Overlap of a predicted mask with the truth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OverlapScores {
    /// Voxel counts.
    #[serde(flatten)]
    pub counts: Confusion,
    /// Which masks were empty.
    pub empty: Empty,
    /// 2TP / (2TP + FP + FN); NaN when both are empty (Metrics Reloaded; MONAI `ignore_empty`).
    pub dice: f64,
    /// TP / (TP + FP + FN); NaN when both are empty.
    pub jaccard: f64,
    /// TP / (TP + FP); NaN for an empty prediction.
    pub precision: f64,
    /// Sensitivity, TP / (TP + FN); NaN for an empty truth.
    pub recall: f64,
    /// TN / (TN + FP); NaN when the truth fills the grid.
    pub specificity: f64,
    /// (TP + TN) / all voxels.
    pub accuracy: f64,
    /// Harmonic mean of precision and recall (equals Dice where both are defined; NaN where
    /// either is not).
    pub f1: f64,
    /// Predicted volume in ml.
    pub volume_prediction_ml: f64,
    /// True volume in ml.
    pub volume_truth_ml: f64,
    /// Predicted − true volume, ml.
    pub volume_difference_ml: f64,
    /// (predicted − true) / true volume, signed; NaN for an empty truth.
    pub relative_volume_error: f64,
}

/// Distances between the surfaces of the prediction and the truth, in mm.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SurfaceScores {
    /// Which masks were empty. One empty side makes every distance `+inf` and NSD 0; both empty
    /// make them all NaN.
    pub empty: Empty,
    /// Surface voxels of the prediction and of the truth.
    pub surface_voxels_prediction: u64,
    #[allow(missing_docs)]
    pub surface_voxels_truth: u64,
    /// Hausdorff distance: the largest of both directed maxima.
    pub hd: f64,
    /// The larger of the two directed 95th percentiles, each linearly interpolated (numpy's
    /// default): MONAI `compute_hausdorff_distance(percentile=95)`, Metrics Reloaded.
    pub hd95: f64,
    /// The 95th percentile of both directions' distances pooled (MedPy `hd95`).
    pub hd95_pooled: f64,
    /// Mean of both directions' distances pooled (MONAI `symmetric=True`, MedPy `assd`, Metrics
    /// Reloaded `assd`).
    pub assd: f64,
    /// Mean of the two directed means (Metrics Reloaded `masd`; the mean of MONAI's two directed
    /// `compute_average_surface_distance`).
    pub masd: f64,
    /// Normalised surface distance: the share of both surfaces within `nsd_tolerance_mm` of the
    /// other (distance ≤ τ), counted in surface voxels (MONAI `compute_surface_dice`).
    pub nsd: f64,
    /// τ of [`nsd`](Self::nsd), mm.
    pub nsd_tolerance_mm: f64,
}

/// Both groups.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentationScores {
    /// Overlap.
    pub overlap: OverlapScores,
    /// Surface distances (absent when not asked for).
    pub surface: Option<SurfaceScores>,
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 { f64::NAN } else { num as f64 / den as f64 }
}

fn empty_of(pred: u64, truth: u64) -> Empty {
    match (pred == 0, truth == 0) {
        (false, false) => Empty::Neither,
        (true, false) => Empty::Prediction,
        (false, true) => Empty::Truth,
        (true, true) => Empty::Both,
    }
}

fn check_same_grid(pred: &Mask, truth: &Mask) -> Result<()> {
    if pred.dims != truth.dims {
        return Err(Error::shape(format!(
            "the prediction's grid {:?} differs from the truth's {:?}",
            pred.dims, truth.dims
        )));
    }
    let close = pred.spacing.iter().zip(&truth.spacing).all(|(a, b)| (a - b).abs() <= 1e-4 * a.max(*b));
    if !close {
        return Err(Error::geometry(format!(
            "the prediction's spacing {:?} mm differs from the truth's {:?} mm",
            pred.spacing, truth.spacing
        )));
    }
    Ok(())
}

/// Overlap scores of `pred` against `truth` (same grid).
pub fn overlap(pred: &Mask, truth: &Mask) -> Result<OverlapScores> {
    check_same_grid(pred, truth)?;
    let (tp, fp, fn_) = pred
        .data
        .par_chunks(1 << 16)
        .zip(truth.data.par_chunks(1 << 16))
        .map(|(p, t)| {
            let (mut tp, mut fp, mut fn_) = (0u64, 0u64, 0u64);
            for (&a, &b) in p.iter().zip(t) {
                tp += u64::from(a & b);
                fp += u64::from(a & !b);
                fn_ += u64::from(!a & b);
            }
            (tp, fp, fn_)
        })
        .reduce(|| (0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
    let all = pred.data.len() as u64;
    let tn = all - tp - fp - fn_;
    let (np, nt) = (tp + fp, tp + fn_);
    let voxel_ml = truth.spacing.iter().product::<f64>() / 1000.0;
    let precision = ratio(tp, np);
    let recall = ratio(tp, nt);
    Ok(OverlapScores {
        counts: Confusion { tp, fp, fn_, tn },
        empty: empty_of(np, nt),
        dice: ratio(2 * tp, 2 * tp + fp + fn_),
        jaccard: ratio(tp, tp + fp + fn_),
        precision,
        recall,
        specificity: ratio(tn, tn + fp),
        accuracy: ratio(tp + tn, all),
        f1: if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else if precision == 0.0 && recall == 0.0 {
            0.0
        } else {
            f64::NAN
        },
        volume_prediction_ml: np as f64 * voxel_ml,
        volume_truth_ml: nt as f64 * voxel_ml,
        volume_difference_ml: (np as f64 - nt as f64) * voxel_ml,
        relative_volume_error: if nt == 0 { f64::NAN } else { (np as f64 - nt as f64) / nt as f64 },
    })
}

/// The `q`-quantile (0…1) of `v`, linearly interpolated between order statistics (numpy's
/// default, `torch.quantile`). NaN for an empty sample. Reorders `v`.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let h = (v.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let (_, a, rest) = v.select_nth_unstable_by(lo, f64::total_cmp);
    let a = *a;
    if rest.is_empty() || h == lo as f64 {
        return a;
    }
    let b = rest.iter().copied().fold(f64::INFINITY, f64::min);
    a + (h - lo as f64) * (b - a)
}

/// Directed distances (mm) from the surface of `from` to the surface of `to`, on `to`'s grid.
/// Both surfaces are cut to the box that holds them, so the transform covers only that box.
fn directed(from: &[usize], to: &[usize], dims: [usize; 3], spacing: [f64; 3]) -> Result<Vec<f64>> {
    if to.is_empty() {
        return Ok(vec![f64::INFINITY; from.len()]);
    }
    let [ni, nj, _] = dims;
    let at = |n: usize| [n % ni, (n / ni) % nj, n / (ni * nj)];
    let (mut lo, mut hi) = ([usize::MAX; 3], [0usize; 3]);
    for &n in from.iter().chain(to) {
        let p = at(n);
        for c in 0..3 {
            lo[c] = lo[c].min(p[c]);
            hi[c] = hi[c].max(p[c]);
        }
    }
    let bd = [hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1];
    // The features (1 byte) and the squared distances (8 bytes) of the box.
    crate::memory::check(crate::memory::bytes_of(&bd, 9), "the surface-distance transform")?;
    let local = |n: usize| {
        let p = at(n);
        (p[0] - lo[0]) + bd[0] * ((p[1] - lo[1]) + bd[1] * (p[2] - lo[2]))
    };
    let mut features = vec![false; bd.iter().product()];
    for &n in to {
        features[local(n)] = true;
    }
    let queries: Vec<usize> = from.iter().map(|&n| local(n)).collect();
    Ok(edt::distances_to(&features, bd, spacing, &queries))
}

/// Surface distances of `pred` against `truth` (same grid), NSD at `tolerance_mm`.
pub fn surface(pred: &Mask, truth: &Mask, tolerance_mm: f64) -> Result<SurfaceScores> {
    check_same_grid(pred, truth)?;
    if !tolerance_mm.is_finite() || tolerance_mm < 0.0 {
        return Err(Error::invalid_argument(format!("the NSD tolerance {tolerance_mm} mm must be finite and ≥ 0")));
    }
    let (sp, st) = rayon::join(|| pred.surface(), || truth.surface());
    let empty = empty_of(sp.len() as u64, st.len() as u64);
    let (dp, dt) =
        rayon::join(|| directed(&sp, &st, pred.dims, pred.spacing), || directed(&st, &sp, pred.dims, pred.spacing));
    let (mut dp, mut dt) = (dp?, dt?);
    let nan = f64::NAN;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let scores = match empty {
        Empty::Both => SurfaceScores {
            empty,
            surface_voxels_prediction: 0,
            surface_voxels_truth: 0,
            hd: nan,
            hd95: nan,
            hd95_pooled: nan,
            assd: nan,
            masd: nan,
            nsd: nan,
            nsd_tolerance_mm: tolerance_mm,
        },
        Empty::Prediction | Empty::Truth => SurfaceScores {
            empty,
            surface_voxels_prediction: sp.len() as u64,
            surface_voxels_truth: st.len() as u64,
            hd: f64::INFINITY,
            hd95: f64::INFINITY,
            hd95_pooled: f64::INFINITY,
            assd: f64::INFINITY,
            masd: f64::INFINITY,
            nsd: 0.0,
            nsd_tolerance_mm: tolerance_mm,
        },
        Empty::Neither => {
            let within = dp.iter().chain(&dt).filter(|&&d| d <= tolerance_mm).count();
            let (mp, mt) = (mean(&dp), mean(&dt));
            let pooled_mean = (dp.iter().sum::<f64>() + dt.iter().sum::<f64>()) / (dp.len() + dt.len()) as f64;
            let hd = dp.iter().chain(&dt).copied().fold(0.0, f64::max);
            let hd95 = quantile(&mut dp, 0.95).max(quantile(&mut dt, 0.95));
            let mut pooled: Vec<f64> = dp.iter().chain(&dt).copied().collect();
            SurfaceScores {
                empty,
                surface_voxels_prediction: sp.len() as u64,
                surface_voxels_truth: st.len() as u64,
                hd,
                hd95,
                hd95_pooled: quantile(&mut pooled, 0.95),
                assd: pooled_mean,
                masd: 0.5 * (mp + mt),
                nsd: within as f64 / (sp.len() + st.len()) as f64,
                nsd_tolerance_mm: tolerance_mm,
            }
        }
    };
    Ok(scores)
}

/// Overlap and, when `tolerance_mm` is given, surface scores.
pub fn segmentation(pred: &Mask, truth: &Mask, tolerance_mm: Option<f64>) -> Result<SegmentationScores> {
    let overlap = overlap(pred, truth)?;
    let surface = tolerance_mm.map(|t| surface(pred, truth, t)).transpose()?;
    Ok(SegmentationScores { overlap, surface })
}

/// The most distinct labels [`labels_present`] collects.
pub const MAX_LABELS: usize = 4096;

/// The distinct non-zero values of a label volume, ascending. An error for a value that is not a
/// whole number (a probability map or an image, not a label map) and for more than
/// [`MAX_LABELS`] labels.
pub fn labels_present(volume: &AnyVolumeView<'_>) -> Result<Vec<f64>> {
    with_view!(volume, v => labels_typed(v))
}

fn labels_typed<T: Voxel>(v: &VolumeView<'_, T>) -> Result<Vec<f64>> {
    let mut seen = std::collections::BTreeSet::new();
    let mut last = 0.0f64;
    for &x in v.data() {
        let x = x.to_f64();
        // Label maps come in runs: skip the set for a repeat of the last value.
        if x == 0.0 || x == last {
            continue;
        }
        last = x;
        if !x.is_finite() || x.fract() != 0.0 {
            return Err(Error::invalid_argument(format!(
                "the volume holds {x}, which is not a label (a whole number): is it a probability map? Threshold it first"
            )));
        }
        if seen.insert(x as i64) && seen.len() > MAX_LABELS {
            return Err(Error::invalid_argument(format!(
                "the volume holds more than {MAX_LABELS} distinct labels: is it an image rather than a label map?"
            )));
        }
    }
    Ok(seen.into_iter().map(|x| x as f64).collect())
}

/// Score one label of two label volumes on the same grid: the voxels equal to `label`, or every
/// non-zero voxel for `None`. Surface distances too when `tolerance_mm` (NSD's τ) is given.
/// Refuses volumes on different grids ([`check_same_placement`]) and 4-D volumes.
pub fn label_volumes(
    pred: &AnyVolumeView<'_>,
    truth: &AnyVolumeView<'_>,
    label: Option<f64>,
    tolerance_mm: Option<f64>,
) -> Result<SegmentationScores> {
    let (ps, ts) = (pred.shape(), truth.shape());
    for (what, s) in [("prediction", ps), ("truth", ts)] {
        if s[3] != 1 {
            return Err(Error::shape(format!("the {what} has {} frames; a label map is 3-D", s[3])));
        }
    }
    check_same_placement(pred.geometry(), truth.geometry(), [ps[0], ps[1], ps[2]], [ts[0], ts[1], ts[2]])?;
    if let Some(l) = label
        && (!l.is_finite() || l.fract() != 0.0)
    {
        return Err(Error::invalid_argument(format!("label {l} is not a whole number")));
    }
    let (p, t) = rayon::join(|| Mask::from_labels(pred, label), || Mask::from_labels(truth, label));
    segmentation(&p?, &t?, tolerance_mm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(dims: [usize; 3], spacing: [f64; 3], f: impl Fn(usize, usize, usize) -> bool) -> Mask {
        let mut d = Vec::new();
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    d.push(f(i, j, k));
                }
            }
        }
        Mask::new(d, dims, spacing).unwrap()
    }

    #[test]
    fn overlap_by_hand() {
        let p = mask([4, 1, 1], [1.0, 1.0, 1.0], |i, _, _| i < 2);
        let t = mask([4, 1, 1], [1.0, 1.0, 1.0], |i, _, _| i == 1 || i == 2);
        let o = overlap(&p, &t).unwrap();
        assert_eq!(o.counts, Confusion { tp: 1, fp: 1, fn_: 1, tn: 1 });
        assert_eq!(o.dice, 0.5);
        assert_eq!(o.jaccard, 1.0 / 3.0);
        assert_eq!(o.volume_difference_ml, 0.0);
        let none = mask([4, 1, 1], [1.0, 1.0, 1.0], |_, _, _| false);
        let both = overlap(&none, &none).unwrap();
        assert!(both.dice.is_nan() && both.empty == Empty::Both && both.specificity == 1.0);
        let e = overlap(&none, &t).unwrap();
        assert_eq!((e.dice, e.recall, e.empty), (0.0, 0.0, Empty::Prediction));
        assert!(e.precision.is_nan() && e.f1.is_nan());
    }

    #[test]
    fn surface_of_a_cube_and_distances_by_hand() {
        // A 3×3×3 cube in a 5×5×5 grid: 26 surface voxels; two cubes 2 voxels apart along k at
        // 2 mm spacing are 4 mm apart face to face.
        let s = [1.0, 1.0, 2.0];
        let a = mask([5, 5, 8], s, |i, j, k| (1..4).contains(&i) && (1..4).contains(&j) && (1..4).contains(&k));
        assert_eq!(a.surface().len(), 26);
        let b = mask([5, 5, 8], s, |i, j, k| (1..4).contains(&i) && (1..4).contains(&j) && (3..6).contains(&k));
        let sc = surface(&a, &b, 4.0).unwrap();
        // Every surface voxel of a lies within 4 mm of b's surface, the farthest being a's
        // bottom face (k = 1) to b's nearest surface voxel at k = 3: 4 mm.
        assert_eq!(sc.hd, 4.0);
        assert_eq!(sc.nsd, 1.0);
        let same = surface(&a, &a, 0.0).unwrap();
        assert_eq!((same.hd, same.hd95, same.assd, same.nsd), (0.0, 0.0, 0.0, 1.0));
    }

    #[test]
    fn quantile_matches_numpy_linear() {
        // numpy.quantile([4, 1, 3, 2, 10], 0.95) = 8.8
        assert!((quantile(&mut [4.0, 1.0, 3.0, 2.0, 10.0], 0.95) - 8.8).abs() < 1e-12);
        assert_eq!(quantile(&mut [5.0], 0.95), 5.0);
        assert_eq!(quantile(&mut [1.0, 2.0, 3.0], 0.5), 2.0);
    }

    #[test]
    fn a_volume_becomes_a_mask_in_either_memory_order() {
        use ndarray::{Array4, ShapeBuilder};
        let g = crate::Geometry::axis_aligned([0.5, 0.7, 3.0], [0.0; 3]).unwrap();
        let values: Vec<u8> = (0..24).map(|x| (x % 3) as u8).collect();
        let f = Array4::from_shape_vec((2, 3, 4, 1).f(), values).unwrap();
        let mut c = Array4::<u8>::zeros((2, 3, 4, 1));
        c.assign(&f);
        let vf = crate::Volume::from_parts(f, g, None).unwrap();
        let vc = crate::Volume::from_parts(c, g, None).unwrap();
        let mf = Mask::from_labels(&AnyVolumeView::U8(vf.view()), Some(2.0)).unwrap();
        let mc = Mask::from_labels(&AnyVolumeView::U8(vc.view()), Some(2.0)).unwrap();
        assert_eq!(mf, mc);
        assert_eq!(mf.data()[..6], [false, false, true, false, false, true]);
        assert_eq!(mf.spacing(), [0.5, 0.7, 3.0]);
    }
}
