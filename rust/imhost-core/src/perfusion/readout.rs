//! Clinical read-out: core and hypoperfusion masks, volumes, mismatch, HIR, and the imaging
//! criteria of DEFUSE-3 and DAWN. Research use only: these numbers support, never replace, a
//! clinician's decision.
//!
//! - Reference CBF: the 5 %-trimmed mean CBF of brain voxels outside the hypoperfused region
//!   (Tmax ≤ the hypoperfusion threshold) — healthy grey and white matter of both hemispheres.
//!   A mean, not a median: the median of a white-matter-dominated slab is white matter's flow,
//!   against which grey-matter core (10 % of grey flow) sits above 30 %.
//! - Core: rCBF = CBF/reference < 30 % **within** the hypoperfused region (as RAPID does, so that
//!   low-flow white matter and CSF-adjacent voxels outside the lesion are not called core).
//! - Hypoperfusion: Tmax > 6 s; severe: Tmax > 10 s; HIR = V(Tmax > 10 s)/V(Tmax > 6 s).
//! - Without Tmax (the CNN gives CBV, CBF and TTP only): hypoperfusion = relative TTP > 4.5 s,
//!   which matched Tmax > 6 s volumes in 94 % of mismatch classifications (DEFUSE-2 reanalysis).
//!   Relative TTP = TTP − the median TTP of the brain half (split at the brain's middle column)
//!   with the earlier median; no severe class (Tmax > 10 s has no validated TTP analogue).
//! - Mismatch volume = V(hypoperfusion) − V(core); ratio = V(hypoperfusion)/V(core).
//! - DEFUSE-3: core < 70 ml, mismatch ≥ 15 ml, ratio ≥ 1.8.
//! - DAWN (needs age and NIHSS): age ≥ 80 and NIHSS ≥ 10 with core < 21 ml; age < 80 and
//!   NIHSS ≥ 10 with core < 31 ml; age < 80 and NIHSS ≥ 20 with core 31 to < 51 ml.
//! - The time window from last known well (DEFUSE-3 6–16 h, DAWN 6–24 h) and the occlusion site
//!   are clinical facts the images do not hold; the report says so.

use serde::Serialize;

/// Thresholds of the read-out.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ReadoutOptions {
    /// Core: rCBF below this fraction of the reference (0.30).
    pub core_relative_cbf: f64,
    /// Hypoperfusion: Tmax above this (6 s).
    pub hypoperfusion_tmax_s: f64,
    /// Severe hypoperfusion: Tmax above this (10 s).
    pub severe_tmax_s: f64,
    /// Hypoperfusion by relative TTP when Tmax is not available (4.5 s).
    pub hypoperfusion_relative_ttp_s: f64,
}

impl Default for ReadoutOptions {
    fn default() -> Self {
        ReadoutOptions {
            core_relative_cbf: 0.30,
            hypoperfusion_tmax_s: 6.0,
            severe_tmax_s: 10.0,
            hypoperfusion_relative_ttp_s: 4.5,
        }
    }
}

/// Clinical facts that some criteria need.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
#[non_exhaustive]
pub struct Patient {
    /// Age in years.
    pub age: Option<f64>,
    /// NIH stroke scale.
    pub nihss: Option<f64>,
}

impl Patient {
    /// A patient with optional age and NIHSS.
    pub fn new(age: Option<f64>, nihss: Option<f64>) -> Self {
        Patient { age, nihss }
    }
}

/// Lesion masks in linear voxel order.
#[derive(Debug, Clone)]
pub struct LesionMasks {
    /// Core.
    pub core: Vec<bool>,
    /// Tmax > 6 s.
    pub hypoperfusion: Vec<bool>,
    /// Tmax > 10 s (`None` under the TTP rule).
    pub severe: Option<Vec<bool>>,
    /// The reference CBF (ml/100 g/min) and how many voxels it came from.
    pub reference_cbf: Option<(f64, usize)>,
}

/// Threshold the maps inside `brain`.
pub fn lesion_masks(cbf: &[f32], tmax: &[f32], brain: &[bool], options: &ReadoutOptions) -> LesionMasks {
    let hyp: Vec<bool> =
        tmax.iter().zip(brain).map(|(&t, &b)| b && f64::from(t) > options.hypoperfusion_tmax_s).collect();
    let severe: Vec<bool> = tmax.iter().zip(brain).map(|(&t, &b)| b && f64::from(t) > options.severe_tmax_s).collect();
    let mut healthy: Vec<f32> = cbf
        .iter()
        .zip(brain)
        .zip(&hyp)
        .filter(|((c, b), h)| **b && !**h && c.is_finite())
        .map(|((c, _), _)| *c)
        .collect();
    let reference = if healthy.len() >= 10 {
        healthy.sort_unstable_by(f32::total_cmp);
        let (lo, hi) = (healthy.len() / 20, healthy.len() - healthy.len() / 20);
        let kept = &healthy[lo..hi];
        Some((kept.iter().map(|&c| f64::from(c)).sum::<f64>() / kept.len() as f64, healthy.len()))
    } else {
        None
    };
    let core = match reference {
        Some((r, _)) if r > 0.0 => {
            cbf.iter().zip(&hyp).map(|(&c, &h)| h && f64::from(c) < options.core_relative_cbf * r).collect()
        }
        _ => vec![false; cbf.len()],
    };
    LesionMasks { core, hypoperfusion: hyp, severe: Some(severe), reference_cbf: reference }
}

/// TTP minus the reference TTP (the earlier of the two brain halves' median TTP, the halves
/// split at the middle column `i` of the brain's extent), and that reference.
pub fn relative_ttp(ttp: &[f32], brain: &[bool], shape: [usize; 3]) -> (Vec<f32>, Option<f64>) {
    let ni = shape[0];
    let columns: Vec<usize> = brain.iter().enumerate().filter(|(_, b)| **b).map(|(v, _)| v % ni).collect();
    let (Some(&lo), Some(&hi)) = (columns.iter().min(), columns.iter().max()) else {
        return (vec![f32::NAN; ttp.len()], None);
    };
    let middle = (lo + hi) as f64 / 2.0;
    let median_of = |left: bool| -> Option<f64> {
        let mut v: Vec<f32> = ttp
            .iter()
            .enumerate()
            .filter(|&(n, t)| brain[n] && t.is_finite() && (((n % ni) as f64) < middle) == left)
            .map(|(_, &t)| t)
            .collect();
        if v.len() < 10 {
            return None;
        }
        let m = v.len() / 2;
        Some(f64::from(*v.select_nth_unstable_by(m, f32::total_cmp).1))
    };
    let reference = match (median_of(true), median_of(false)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    match reference {
        Some(r) => (ttp.iter().map(|&t| t - r as f32).collect(), Some(r)),
        None => (vec![f32::NAN; ttp.len()], None),
    }
}

/// The masks without Tmax: hypoperfusion = relative TTP above
/// `options.hypoperfusion_relative_ttp_s`, core = rCBF below `options.core_relative_cbf` within it.
pub fn lesion_masks_ttp(
    cbf: &[f32],
    ttp: &[f32],
    brain: &[bool],
    shape: [usize; 3],
    options: &ReadoutOptions,
) -> (LesionMasks, Option<f64>) {
    let (relative, reference) = relative_ttp(ttp, brain, shape);
    let as_tmax = ReadoutOptions {
        hypoperfusion_tmax_s: options.hypoperfusion_relative_ttp_s,
        severe_tmax_s: f64::INFINITY,
        ..*options
    };
    let mut masks = lesion_masks(cbf, &relative, brain, &as_tmax);
    masks.severe = None;
    (masks, reference)
}

/// Volumes and ratios, in ml.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Volumes {
    /// Core volume.
    pub core_ml: f64,
    /// Tmax > 6 s volume.
    pub hypoperfusion_ml: f64,
    /// Tmax > 10 s volume (`None` under the TTP rule).
    pub severe_hypoperfusion_ml: Option<f64>,
    /// Hypoperfusion − core.
    pub mismatch_ml: f64,
    /// Hypoperfusion / core (`None` when the core is empty: the ratio is unbounded).
    pub mismatch_ratio: Option<f64>,
    /// Hypoperfusion intensity ratio V(Tmax > 10 s)/V(Tmax > 6 s) (`None` without hypoperfusion).
    pub hypoperfusion_intensity_ratio: Option<f64>,
}

/// Volumes of the masks for voxels of `voxel_ml` millilitres.
pub fn volumes(masks: &LesionMasks, voxel_ml: f64) -> Volumes {
    let ml = |m: &[bool]| m.iter().filter(|&&x| x).count() as f64 * voxel_ml;
    let (core, hyp, severe) = (ml(&masks.core), ml(&masks.hypoperfusion), masks.severe.as_deref().map(ml));
    Volumes {
        core_ml: core,
        hypoperfusion_ml: hyp,
        severe_hypoperfusion_ml: severe,
        mismatch_ml: hyp - core,
        mismatch_ratio: (core > 0.0).then(|| hyp / core),
        hypoperfusion_intensity_ratio: severe.filter(|_| hyp > 0.0).map(|s| s / hyp),
    }
}

/// One trial's imaging criteria.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Criterion {
    /// Whether it could be evaluated.
    pub evaluated: bool,
    /// Whether the imaging criteria are met (`None` when not evaluated).
    pub met: Option<bool>,
    /// What was checked, or why it was not.
    pub detail: String,
}

/// DEFUSE-3 and DAWN.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Criteria {
    /// DEFUSE-3 (6–16 h): core < 70 ml, mismatch ≥ 15 ml, ratio ≥ 1.8.
    pub defuse3: Criterion,
    /// DAWN (6–24 h): clinical-core mismatch by age and NIHSS.
    pub dawn: Criterion,
    /// What the images cannot tell.
    pub note: &'static str,
}

/// Evaluate the criteria on `v` for `patient`.
pub fn criteria(v: &Volumes, patient: &Patient) -> Criteria {
    let ratio_ok = v.mismatch_ratio.is_none_or(|r| r >= 1.8) && v.hypoperfusion_ml > 0.0;
    let defuse_met = v.core_ml < 70.0 && v.mismatch_ml >= 15.0 && ratio_ok;
    let defuse3 = Criterion {
        evaluated: true,
        met: Some(defuse_met),
        detail: format!(
            "core {:.1} ml (< 70), mismatch {:.1} ml (≥ 15), ratio {} (≥ 1.8)",
            v.core_ml,
            v.mismatch_ml,
            v.mismatch_ratio.map_or("unbounded (core 0 ml)".to_string(), |r| format!("{r:.2}"))
        ),
    };
    let dawn = match (patient.age, patient.nihss) {
        (Some(age), Some(nihss)) => {
            let core = v.core_ml;
            let group = if age >= 80.0 && nihss >= 10.0 && core < 21.0 {
                Some("A: age ≥ 80, NIHSS ≥ 10, core < 21 ml")
            } else if age < 80.0 && nihss >= 10.0 && core < 31.0 {
                Some("B: age < 80, NIHSS ≥ 10, core < 31 ml")
            } else if age < 80.0 && nihss >= 20.0 && (31.0..51.0).contains(&core) {
                Some("C: age < 80, NIHSS ≥ 20, core 31 to < 51 ml")
            } else {
                None
            };
            Criterion {
                evaluated: true,
                met: Some(group.is_some()),
                detail: match group {
                    Some(g) => format!("group {g} (age {age}, NIHSS {nihss}, core {core:.1} ml)"),
                    None => format!("no group matches (age {age}, NIHSS {nihss}, core {core:.1} ml)"),
                },
            }
        }
        _ => Criterion { evaluated: false, met: None, detail: "needs age and NIHSS (--age, --nihss)".into() },
    };
    Criteria {
        defuse3,
        dawn,
        note: "imaging criteria only: time from last known well, occlusion site and clinical status are for the treating team",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vols(core: f64, hyp: f64) -> Volumes {
        volumes(
            &LesionMasks {
                core: (0..1000).map(|n| (n as f64) < core).collect(),
                hypoperfusion: (0..1000).map(|n| (n as f64) < hyp).collect(),
                severe: Some(vec![false; 1000]),
                reference_cbf: None,
            },
            1.0,
        )
    }

    #[test]
    fn defuse3_by_hand() {
        assert_eq!(criteria(&vols(20.0, 80.0), &Patient::default()).defuse3.met, Some(true));
        assert_eq!(criteria(&vols(70.0, 200.0), &Patient::default()).defuse3.met, Some(false), "core 70 is not < 70");
        assert_eq!(criteria(&vols(20.0, 30.0), &Patient::default()).defuse3.met, Some(false), "mismatch 10 ml");
        assert_eq!(criteria(&vols(30.0, 50.0), &Patient::default()).defuse3.met, Some(false), "ratio 1.67");
        assert_eq!(criteria(&vols(0.0, 0.0), &Patient::default()).defuse3.met, Some(false), "nothing to save");
    }

    #[test]
    fn dawn_groups_by_hand() {
        let p = |age, nihss| Patient::new(Some(age), Some(nihss));
        assert_eq!(criteria(&vols(20.0, 60.0), &p(85.0, 12.0)).dawn.met, Some(true));
        assert_eq!(criteria(&vols(21.0, 60.0), &p(85.0, 12.0)).dawn.met, Some(false));
        assert_eq!(criteria(&vols(30.0, 60.0), &p(70.0, 12.0)).dawn.met, Some(true));
        assert_eq!(criteria(&vols(40.0, 60.0), &p(70.0, 12.0)).dawn.met, Some(false));
        assert_eq!(criteria(&vols(40.0, 60.0), &p(70.0, 22.0)).dawn.met, Some(true));
        assert_eq!(criteria(&vols(51.0, 90.0), &p(70.0, 22.0)).dawn.met, Some(false));
        assert!(!criteria(&vols(5.0, 60.0), &Patient::default()).dawn.evaluated);
    }

    #[test]
    fn masks_and_reference() {
        let brain = vec![true; 100];
        let tmax: Vec<f32> = (0..100).map(|n| if n < 20 { 9.0 } else { 1.0 }).collect();
        let cbf: Vec<f32> = (0..100)
            .map(|n| {
                if n < 10 {
                    5.0
                } else if n < 20 {
                    30.0
                } else {
                    50.0
                }
            })
            .collect();
        let m = lesion_masks(&cbf, &tmax, &brain, &ReadoutOptions::default());
        assert_eq!(m.reference_cbf, Some((50.0, 80)), "trimmed mean of the healthy voxels");
        assert_eq!(m.core.iter().filter(|&&x| x).count(), 10);
        assert_eq!(m.hypoperfusion.iter().filter(|&&x| x).count(), 20);
        let v = volumes(&m, 0.5);
        assert_eq!((v.core_ml, v.hypoperfusion_ml, v.mismatch_ml, v.mismatch_ratio), (5.0, 10.0, 5.0, Some(2.0)));
    }

    #[test]
    fn ttp_rule_by_hand() {
        // 10 columns × 10 rows: the right half (i ≥ 5) is normal at TTP 20 s; in the left half
        // rows 0–3 peak 6 s late (hypoperfused), the rest at 21 s (left median 21 s).
        let shape = [10, 10, 1];
        let brain = vec![true; 100];
        let ttp: Vec<f32> = (0..100)
            .map(|n| {
                let (i, j) = (n % 10, n / 10);
                if i >= 5 {
                    20.0
                } else if j < 4 {
                    26.0
                } else {
                    21.0
                }
            })
            .collect();
        let cbf: Vec<f32> = (0..100).map(|n| if n % 10 < 5 && n / 10 < 2 { 5.0 } else { 50.0 }).collect();
        let (m, reference) = lesion_masks_ttp(&cbf, &ttp, &brain, shape, &ReadoutOptions::default());
        assert_eq!(reference, Some(20.0), "the earlier half's median");
        assert_eq!(m.hypoperfusion.iter().filter(|&&x| x).count(), 20, "6 s > 4.5 s; 1 s is not");
        assert_eq!(m.core.iter().filter(|&&x| x).count(), 10, "5 < 30 % of 50 within the hypoperfusion");
        let v = volumes(&m, 1.0);
        assert_eq!((v.severe_hypoperfusion_ml, v.hypoperfusion_intensity_ratio), (None, None));
    }
}
