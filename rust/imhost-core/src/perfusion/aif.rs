//! Arterial input (AIF) and venous output (VOF) selection.
//!
//! Automatic AIF (after the open tools' "early, high, narrow" rule): among voxels whose
//! enhancement peaks at ≥ `min_peak_hu` and washes out again, keep those arriving earliest (time
//! to peak within one sample of the 25th percentile), rank them by peak/width, take a sample of
//! the best `sample` (100, as in the CNN paper's ground-truth pipeline) and average the `average`
//! highest of that sample. Automatic VOF: among enhancing voxels peaking after the AIF, the
//! `average` with the largest area. The AIF is then scaled by AUC(VOF)/AUC(AIF) when that ratio
//! lies in [1, 3]: venous outflow from a large sinus is free of the partial volume that shrinks
//! a small artery's curve.

use serde::Serialize;

/// How the AIF (or VOF) is chosen.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VesselSelection {
    /// Automatic search.
    #[default]
    Auto,
    /// One voxel `[i, j, k]`.
    Voxel([usize; 3]),
    /// The mean curve of these voxels (a mask).
    Voxels(Vec<[usize; 3]>),
}

/// Options of the automatic search.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct AifOptions {
    /// Lowest peak enhancement (ΔHU) of an arterial or venous voxel (50).
    pub min_peak_hu: f64,
    /// Size of the candidate sample (100).
    pub sample: usize,
    /// How many of the best voxels are averaged (5).
    pub average: usize,
}

impl Default for AifOptions {
    fn default() -> Self {
        AifOptions { min_peak_hu: 50.0, sample: 100, average: 5 }
    }
}

/// A candidate vessel voxel: its index and ΔHU curve on the uniform grid.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Voxel `[i, j, k]`.
    pub voxel: [usize; 3],
    /// ΔHU curve.
    pub curve: Vec<f32>,
}

/// Shape features of a curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CurveFeatures {
    /// Peak ΔHU.
    pub peak: f64,
    /// Time to peak in s from the first frame.
    pub ttp: f64,
    /// Full width at half maximum in s.
    pub fwhm: f64,
    /// Area in ΔHU·s.
    pub auc: f64,
    /// Whether the curve falls below half its peak again after the peak.
    pub washes_out: bool,
}

/// Features of `curve` sampled every `dt` s.
pub fn features(curve: &[f32], dt: f64) -> CurveFeatures {
    let (mut peak, mut at) = (f64::NEG_INFINITY, 0);
    for (m, &v) in curve.iter().enumerate() {
        if f64::from(v) > peak {
            peak = f64::from(v);
            at = m;
        }
    }
    let half = 0.5 * peak;
    let above = curve.iter().filter(|&&v| f64::from(v) >= half).count();
    let washes_out = curve[at..].iter().any(|&v| f64::from(v) < half);
    let auc = curve.iter().map(|&v| f64::from(v)).sum::<f64>() * dt;
    CurveFeatures { peak, ttp: at as f64 * dt, fwhm: above as f64 * dt, auc, washes_out }
}

/// The chosen vessel curve.
#[derive(Debug, Clone, Serialize)]
pub struct VesselCurve {
    /// The voxels averaged (the best first).
    pub voxels: Vec<[usize; 3]>,
    /// The mean ΔHU curve on the uniform grid.
    #[serde(skip)]
    pub curve: Vec<f32>,
    /// Its features.
    pub features: CurveFeatures,
}

fn mean_curve(picked: &[&Candidate], dt: f64) -> VesselCurve {
    let n = picked[0].curve.len();
    let mut curve = vec![0.0f32; n];
    for c in picked {
        for (a, &v) in curve.iter_mut().zip(&c.curve) {
            *a += v / picked.len() as f32;
        }
    }
    let features = features(&curve, dt);
    VesselCurve { voxels: picked.iter().map(|c| c.voxel).collect(), curve, features }
}

/// Automatic AIF among `candidates`; `None` when no voxel qualifies.
pub fn auto_aif(candidates: &[Candidate], dt: f64, options: &AifOptions) -> Option<VesselCurve> {
    let n = candidates.first()?.curve.len();
    let mut scored: Vec<(&Candidate, CurveFeatures)> = candidates
        .iter()
        .map(|c| (c, features(&c.curve, dt)))
        .filter(|(_, f)| f.peak >= options.min_peak_hu && f.washes_out && f.ttp < (n as f64 - 2.0) * dt)
        .collect();
    if scored.is_empty() {
        return None;
    }
    let mut ttps: Vec<f64> = scored.iter().map(|(_, f)| f.ttp).collect();
    ttps.sort_by(f64::total_cmp);
    let early = ttps[ttps.len() / 4] + dt;
    scored.retain(|(_, f)| f.ttp <= early);
    scored.sort_by(|a, b| (b.1.peak / b.1.fwhm.max(dt)).total_cmp(&(a.1.peak / a.1.fwhm.max(dt))));
    scored.truncate(options.sample.max(1));
    let best = scored[0].0;
    scored.sort_by(|a, b| b.1.peak.total_cmp(&a.1.peak));
    let mut picked: Vec<&Candidate> = scored.iter().take(options.average.max(1)).map(|(c, _)| *c).collect();
    if let Some(pos) = picked.iter().position(|c| std::ptr::eq(*c, best)) {
        picked.swap(0, pos);
    }
    Some(mean_curve(&picked, dt))
}

/// Automatic VOF: enhancing voxels peaking after `aif_ttp`, the largest areas.
pub fn auto_vof(candidates: &[Candidate], dt: f64, aif_ttp: f64, options: &AifOptions) -> Option<VesselCurve> {
    let mut scored: Vec<(&Candidate, CurveFeatures)> = candidates
        .iter()
        .map(|c| (c, features(&c.curve, dt)))
        .filter(|(_, f)| f.peak >= options.min_peak_hu && f.ttp > aif_ttp)
        .collect();
    if scored.is_empty() {
        return None;
    }
    scored.sort_by(|a, b| b.1.auc.total_cmp(&a.1.auc));
    let picked: Vec<&Candidate> = scored.iter().take(options.average.max(1)).map(|(c, _)| *c).collect();
    Some(mean_curve(&picked, dt))
}

/// The mean curve of given voxels (a manual choice).
pub fn manual(candidates: &[Candidate], dt: f64) -> Option<VesselCurve> {
    let picked: Vec<&Candidate> = candidates.iter().collect();
    (!picked.is_empty()).then(|| mean_curve(&picked, dt))
}

/// The partial-volume factor AUC(VOF)/AUC(AIF) and whether it was applied (only in [1, 3]).
pub fn partial_volume_scale(aif: &CurveFeatures, vof: &CurveFeatures) -> (f64, bool) {
    let ratio = vof.auc / aif.auc;
    (ratio, ratio.is_finite() && (1.0..=3.0).contains(&ratio))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phantom::ctp::ArterialInput;

    #[test]
    fn picks_the_early_narrow_artery_over_the_vein() {
        let aif = ArterialInput::standard();
        let t: Vec<f64> = (0..60).map(f64::from).collect();
        let artery: Vec<f32> = t.iter().map(|&s| (0.7 * aif.value(s)) as f32).collect();
        let vein: Vec<f32> = t.iter().map(|&s| (0.8 * aif.value(s - 6.0)) as f32).collect();
        let tissue: Vec<f32> = t.iter().map(|&s| (0.05 * aif.value(s - 2.0)) as f32).collect();
        let mut candidates = vec![];
        for n in 0..20 {
            candidates.push(Candidate { voxel: [n, 0, 0], curve: artery.clone() });
            candidates.push(Candidate { voxel: [n, 1, 0], curve: vein.clone() });
            candidates.push(Candidate { voxel: [n, 2, 0], curve: tissue.clone() });
        }
        let a = auto_aif(&candidates, 1.0, &AifOptions::default()).unwrap();
        assert!(a.voxels.iter().all(|v| v[1] == 0), "{:?}", a.voxels);
        let v = auto_vof(&candidates, 1.0, a.features.ttp, &AifOptions::default()).unwrap();
        assert!(v.voxels.iter().all(|v| v[1] == 1));
        let (scale, applied) = partial_volume_scale(&a.features, &v.features);
        assert!(applied && (scale - 0.8 / 0.7).abs() < 0.02, "{scale}");
        assert!(auto_aif(&candidates[2..3], 1.0, &AifOptions::default()).is_none(), "tissue is no artery");
    }
}
