//! Coronary artery calcium (CAC) scoring: the Agatston, volume and mass scores of a calcium
//! mask on a non-contrast CT, per lesion and in total, and the risk category A–E
//! (Gogin et al. 2021, "Automatic coronary artery calcium scoring from unenhanced-ECG-gated CT
//! using deep learning", §2.2; Agatston et al. 1990). docs/CAC.md states every convention.
//!
//! **Agatston** = Σᵢ Σⱼ a_ij · d_ij · Δz/3, over the 2-D connected components j of the axial
//! slices i of `region ∧ HU ≥ 130`:
//! - a component is a lesion when it holds at least [`AgatstonOptions::min_voxels`] pixels (3, the
//!   paper's wording) and covers at least [`AgatstonOptions::min_area_mm2`] (0; Agatston's 1990
//!   paper used 1 mm²); components are 8-connected by default ([`Connectivity2d`]);
//! - a_ij is its area in mm², d_ij the density factor of its **maximum** HU (130–199: 1, 200–299:
//!   2, 300–399: 3, ≥ 400: 4; a real-valued maximum of 199.6 is in the first bin);
//! - Δz is the slice spacing in mm (the increment: for overlapping reconstructions this is what
//!   scanner software uses), so 3 mm slices count as they are and 2.5 mm slices by 2.5/3.
//!
//! **Volume score** = lesion voxels × voxel volume (mm³). **Mass score** = c · Σ V_j · mean HU_j
//! (mg), with c the calibration factor of the scanner (mg hydroxyapatite per ml per HU); without
//! one the mass is not reported.
//!
//! **Category** from the unrounded Agatston score S: A when S = 0 (no lesion), B when 0 < S ≤ 10,
//! C when 10 < S ≤ 100, D when 100 < S ≤ 400, E when S > 400 (the guideline's 0, 1–10, 11–100,
//! 101–400, > 400 for integer scores).

pub mod components;
pub mod preprocess;
pub mod preview;
pub mod qc;
pub mod run;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use components::{Connectivity2d, components_2d, components_3d};

use crate::{Error, Result};

/// How lesions are found and scored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgatstonOptions {
    /// Calcium threshold in HU (130 at 120 kV).
    pub threshold_hu: f64,
    /// Fewest pixels of a lesion in its slice (3).
    pub min_voxels: usize,
    /// Smallest lesion area in mm² (0: only `min_voxels` applies; 1 is Agatston's 1990 rule).
    pub min_area_mm2: f64,
    /// Pixel neighbourhood of a lesion (8).
    pub connectivity: Connectivity2d,
    /// Mass calibration factor, mg hydroxyapatite per ml per HU (`None`: no mass score).
    pub mass_calibration: Option<f64>,
}

impl Default for AgatstonOptions {
    fn default() -> Self {
        AgatstonOptions {
            threshold_hu: THRESHOLD_HU,
            min_voxels: 3,
            min_area_mm2: 0.0,
            connectivity: Connectivity2d::Eight,
            mass_calibration: None,
        }
    }
}

impl AgatstonOptions {
    /// Check the values.
    pub fn validate(&self) -> Result<()> {
        if !self.threshold_hu.is_finite()
            || self.min_voxels == 0
            || self.min_area_mm2.is_nan()
            || self.min_area_mm2 < 0.0
        {
            return Err(Error::invalid_argument(format!(
                "Agatston options need a finite threshold, at least 1 voxel and an area ≥ 0 ({self:?})"
            )));
        }
        if let Some(c) = self.mass_calibration
            && !(c.is_finite() && c > 0.0)
        {
            return Err(Error::invalid_argument(format!("the mass calibration factor must be > 0 (got {c})")));
        }
        Ok(())
    }
}

/// The calcium threshold of the Agatston score at 120 kV, HU.
pub const THRESHOLD_HU: f64 = 130.0;

/// The reference slice thickness of the Agatston score, mm.
pub const REFERENCE_SLICE_MM: f64 = 3.0;

/// The density factor of a lesion whose maximum is `max_hu`: 0 below 130 HU, then 1–4.
pub fn density_factor(max_hu: f64) -> u8 {
    match max_hu {
        h if h >= 400.0 => 4,
        h if h >= 300.0 => 3,
        h if h >= 200.0 => 2,
        h if h >= THRESHOLD_HU => 1,
        _ => 0,
    }
}

/// Risk category of an Agatston score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Category {
    /// 0: no calcium.
    A,
    /// 1–10: minimal.
    B,
    /// 11–100: mild.
    C,
    /// 101–400: moderate.
    D,
    /// > 400: severe.
    E,
}

impl Category {
    /// All five, in order.
    pub const ALL: [Category; 5] = [Category::A, Category::B, Category::C, Category::D, Category::E];

    /// The category of the unrounded score `s` (see the module documentation).
    pub fn of(s: f64) -> Category {
        match s {
            s if s > 400.0 => Category::E,
            s if s > 100.0 => Category::D,
            s if s > 10.0 => Category::C,
            s if s > 0.0 => Category::B,
            _ => Category::A,
        }
    }

    /// `"A"`..`"E"`.
    pub fn letter(self) -> &'static str {
        ["A", "B", "C", "D", "E"][self.index()]
    }

    /// 0..=4.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The score range and its usual name.
    pub fn description(self) -> &'static str {
        match self {
            Category::A => "0, no coronary calcium",
            Category::B => "1–10, minimal",
            Category::C => "11–100, mild",
            Category::D => "101–400, moderate",
            Category::E => "> 400, severe",
        }
    }
}

/// One 2-D lesion: a component of one axial slice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lesion {
    /// The axial slice (`k`).
    pub slice: usize,
    /// Pixels.
    pub voxels: usize,
    /// Area in mm².
    pub area_mm2: f64,
    /// Highest HU.
    pub max_hu: f64,
    /// Mean HU.
    pub mean_hu: f64,
    /// Density factor 1–4.
    pub density_factor: u8,
    /// Its Agatston score (area · density · Δz/3).
    pub agatston: f64,
    /// Its volume in mm³ (voxels · voxel volume).
    pub volume_mm3: f64,
    /// Its mass in mg (with a calibration factor).
    pub mass_mg: Option<f64>,
    /// Centre of its pixels, `[i, j, k]`.
    pub centroid_ijk: [f64; 3],
    /// The most frequent non-zero value of the region under it (the artery of a labelled mask).
    pub region_label: u32,
    /// The 3-D lesion (26-connected component of all lesion pixels) it belongs to, 1-based.
    pub lesion_3d: u32,
}

/// The scores of one CT.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacScore {
    /// Total Agatston score.
    pub agatston: f64,
    /// Total volume score, mm³.
    pub volume_mm3: f64,
    /// Total mass score, mg (with a calibration factor).
    pub mass_mg: Option<f64>,
    /// The risk category.
    pub category: Category,
    /// 3-D lesions (26-connected groups of the 2-D lesions' pixels).
    pub lesions_3d: u32,
    /// The 2-D lesions, by slice then position.
    pub lesions: Vec<Lesion>,
    /// Totals per region label (`[label, agatston, volume_mm3]`), ascending label.
    pub per_region: Vec<RegionTotal>,
    /// Δz/3: the slice factor applied to every area.
    pub slice_factor: f64,
    /// The options used.
    pub options: AgatstonOptions,
}

/// Totals of one region label.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RegionTotal {
    /// The label.
    pub label: u32,
    /// Agatston score.
    pub agatston: f64,
    /// Volume score, mm³.
    pub volume_mm3: f64,
    /// 2-D lesions.
    pub lesions: usize,
}

/// Score the CT `hu` (HU, `i` fastest, `dims`, `spacing` in mm with `k` the axial slice axis)
/// inside `region` (a label per voxel, 0 = not counted; `None`: every voxel counts — a plain
/// threshold score, bone included).
pub fn agatston(
    hu: &[f32],
    dims: [usize; 3],
    spacing: [f64; 3],
    region: Option<&[u32]>,
    options: &AgatstonOptions,
) -> Result<CacScore> {
    Ok(agatston_with_map(hu, dims, spacing, region, options)?.0)
}

/// [`agatston`], and the lesion map: the region label of every pixel of a counted lesion, 0
/// elsewhere (pixels below the threshold or in components too small are 0).
pub fn agatston_with_map(
    hu: &[f32],
    dims: [usize; 3],
    spacing: [f64; 3],
    region: Option<&[u32]>,
    options: &AgatstonOptions,
) -> Result<(CacScore, Vec<u32>)> {
    options.validate()?;
    let [ni, nj, nk] = dims;
    let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| Error::too_large("grid size"))?;
    if hu.len() != n || region.is_some_and(|r| r.len() != n) {
        return Err(Error::shape(format!("the CT or the region does not fill the {dims:?} grid")));
    }
    if spacing.iter().any(|s| !s.is_finite() || *s <= 0.0) {
        return Err(Error::geometry(format!("spacing {spacing:?} must be finite and > 0")));
    }
    crate::memory::check(crate::memory::bytes_of(&[n], 1 + 1 + 4 + 4), "the calcium masks")?;
    let pixel_area = spacing[0] * spacing[1];
    let voxel_volume = pixel_area * spacing[2];
    let slice_factor = spacing[2] / REFERENCE_SLICE_MM;
    let thr = options.threshold_hu as f32;
    let slab = ni * nj;
    let calcium: Vec<bool> = (0..n).into_par_iter().map(|p| hu[p] >= thr && region.is_none_or(|r| r[p] != 0)).collect();

    let found: Vec<(Lesion, Vec<usize>)> = (0..nk)
        .into_par_iter()
        .flat_map_iter(|k| {
            let set = &calcium[k * slab..(k + 1) * slab];
            let mut out = Vec::new();
            for members in components_2d(set, ni, nj, options.connectivity) {
                let area = members.len() as f64 * pixel_area;
                if members.len() < options.min_voxels || area < options.min_area_mm2 {
                    continue;
                }
                let (mut max, mut sum, mut ci, mut cj) = (f64::NEG_INFINITY, 0.0, 0.0, 0.0);
                let mut labels: Vec<u32> = Vec::new();
                for &p in &members {
                    let h = f64::from(hu[k * slab + p]);
                    max = max.max(h);
                    sum += h;
                    ci += (p % ni) as f64;
                    cj += (p / ni) as f64;
                    if let Some(r) = region {
                        labels.push(r[k * slab + p]);
                    }
                }
                let m = members.len() as f64;
                let mean = sum / m;
                let density = density_factor(max);
                let volume = m * voxel_volume;
                let pixels = members.iter().map(|&p| k * slab + p).collect();
                out.push((
                    Lesion {
                        slice: k,
                        voxels: members.len(),
                        area_mm2: area,
                        max_hu: max,
                        mean_hu: mean,
                        density_factor: density,
                        agatston: area * f64::from(density) * slice_factor,
                        volume_mm3: volume,
                        mass_mg: options.mass_calibration.map(|c| c * volume / 1000.0 * mean),
                        centroid_ijk: [ci / m, cj / m, k as f64],
                        region_label: most_frequent(&mut labels).unwrap_or(1),
                        lesion_3d: 0,
                    },
                    pixels,
                ));
            }
            out
        })
        .collect();

    // Group the kept 2-D lesions into 3-D lesions.
    let mut kept = vec![false; n];
    let mut map = vec![0u32; n];
    for (lesion, pixels) in &found {
        for &p in pixels {
            kept[p] = true;
            map[p] = region.map_or(lesion.region_label, |r| r[p]);
        }
    }
    drop(calcium);
    let (labels3, count3) = components_3d(&kept, dims);
    let lesions: Vec<Lesion> = found
        .into_iter()
        .map(|(mut lesion, pixels)| {
            lesion.lesion_3d = labels3[pixels[0]];
            lesion
        })
        .collect();

    // `+ 0.0`: an empty float sum is −0.0.
    let agatston: f64 = lesions.iter().map(|l| l.agatston).sum::<f64>() + 0.0;
    let volume: f64 = lesions.iter().map(|l| l.volume_mm3).sum::<f64>() + 0.0;
    let mass = options.mass_calibration.map(|_| lesions.iter().filter_map(|l| l.mass_mg).sum::<f64>() + 0.0);
    let mut per_region: Vec<RegionTotal> = Vec::new();
    for l in &lesions {
        match per_region.iter_mut().find(|r| r.label == l.region_label) {
            Some(r) => {
                r.agatston += l.agatston;
                r.volume_mm3 += l.volume_mm3;
                r.lesions += 1;
            }
            None => per_region.push(RegionTotal {
                label: l.region_label,
                agatston: l.agatston,
                volume_mm3: l.volume_mm3,
                lesions: 1,
            }),
        }
    }
    per_region.sort_by_key(|r| r.label);
    let score = CacScore {
        agatston,
        volume_mm3: volume,
        mass_mg: mass,
        category: Category::of(agatston),
        lesions_3d: count3,
        lesions,
        per_region,
        slice_factor,
        options: *options,
    };
    Ok((score, map))
}

fn most_frequent(labels: &mut [u32]) -> Option<u32> {
    labels.sort_unstable();
    let mut best: Option<(u32, usize)> = None;
    let mut i = 0;
    while i < labels.len() {
        let j = labels[i..].iter().position(|&x| x != labels[i]).map_or(labels.len(), |d| i + d);
        if best.is_none_or(|(_, c)| j - i > c) {
            best = Some((labels[i], j - i));
        }
        i = j;
    }
    best.map(|(l, _)| l)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 6×6×2 CT at −50 HU with lesions drawn in.
    fn blank() -> (Vec<f32>, [usize; 3]) {
        (vec![-50.0; 72], [6, 6, 2])
    }

    fn put(hu: &mut [f32], i: usize, j: usize, k: usize, v: f32) {
        hu[i + 6 * j + 36 * k] = v;
    }

    #[test]
    fn hand_computed_lesions_areas_densities_and_slice_factor() {
        let (mut hu, dims) = blank();
        // Slice 0: an L of 4 pixels, max 250 HU → density 2; a pair (too small: 2 pixels).
        for (i, j, v) in [(0, 0, 150.0), (1, 0, 250.0), (0, 1, 140.0), (0, 2, 131.0)] {
            put(&mut hu, i, j, 0, v);
        }
        put(&mut hu, 4, 4, 0, 900.0);
        put(&mut hu, 5, 4, 0, 900.0);
        // Slice 1: a diagonal of 3 pixels, max 420 HU → density 4 (8-connected only); 129.9 HU
        // is not calcium.
        for (i, j, v) in [(2, 2, 200.0), (3, 3, 420.0), (4, 4, 300.0), (5, 5, 129.9)] {
            put(&mut hu, i, j, 1, v);
        }
        let spacing = [0.5, 0.5, 2.5];
        let s = agatston(&hu, dims, spacing, None, &AgatstonOptions::default()).unwrap();
        // By hand: pixel 0.25 mm², Δz/3 = 2.5/3.
        // L: 4 px = 1.0 mm² × 2 × 2.5/3 = 1.6667; diagonal: 3 px = 0.75 mm² × 4 × 2.5/3 = 2.5.
        assert_eq!(s.lesions.len(), 2);
        let (l, d) = (&s.lesions[0], &s.lesions[1]);
        assert_eq!((l.slice, l.voxels, l.density_factor, l.max_hu), (0, 4, 2, 250.0));
        assert!((l.agatston - 1.0 * 2.0 * 2.5 / 3.0).abs() < 1e-12);
        assert!((l.mean_hu - (150.0 + 250.0 + 140.0 + 131.0) / 4.0).abs() < 1e-9);
        assert_eq!((d.slice, d.voxels, d.density_factor), (1, 3, 4));
        assert!((d.agatston - 0.75 * 4.0 * 2.5 / 3.0).abs() < 1e-12);
        assert!((s.agatston - (5.0 / 3.0 + 2.5)).abs() < 1e-12);
        // Volume: 7 voxels × 0.25 × 2.5 mm³.
        assert!((s.volume_mm3 - 7.0 * 0.625).abs() < 1e-12);
        assert_eq!(s.category, Category::B);
        assert_eq!(s.mass_mg, None);
        // The L (slice 0, pixels (0..1, 0..2)) and the diagonal (slice 1, from (2,2)) do not
        // touch: two 3-D lesions.
        assert_eq!(s.lesions_3d, 2);

        // Four-connectivity splits the diagonal into single pixels, all below 3 voxels.
        let four = AgatstonOptions { connectivity: Connectivity2d::Four, ..Default::default() };
        let s4 = agatston(&hu, dims, spacing, None, &four).unwrap();
        assert_eq!(s4.lesions.len(), 1);
        // Agatston's 1 mm² minimum keeps the L (exactly 1.0 mm²) and drops the 0.75 mm² diagonal.
        let area = AgatstonOptions { min_area_mm2: 1.0, ..Default::default() };
        assert_eq!(agatston(&hu, dims, spacing, None, &area).unwrap().lesions.len(), 1);
        // Mass with c = 0.8 mg/(ml·HU): 0.8 × V (ml) × mean HU per lesion.
        let mass = AgatstonOptions { mass_calibration: Some(0.8), ..Default::default() };
        let sm = agatston(&hu, dims, spacing, None, &mass).unwrap();
        let expected = 0.8 * (4.0 * 0.625 / 1000.0 * l.mean_hu + 3.0 * 0.625 / 1000.0 * (920.0 / 3.0));
        assert!((sm.mass_mg.unwrap() - expected).abs() < 1e-12);
    }

    #[test]
    fn region_labels_select_and_total_per_artery() {
        let (mut hu, dims) = blank();
        for i in 0..3 {
            put(&mut hu, i, 0, 0, 500.0); // 3 px, label 2
            put(&mut hu, i, 5, 0, 500.0); // 3 px, label 4
            put(&mut hu, i, 3, 1, 500.0); // 3 px, outside the region
        }
        let mut region = vec![0u32; 72];
        for i in 0..3 {
            region[i] = 2;
            region[i + 30] = 4;
        }
        let s = agatston(&hu, dims, [1.0, 1.0, 3.0], Some(&region), &AgatstonOptions::default()).unwrap();
        assert_eq!(s.lesions.len(), 2);
        assert_eq!(s.per_region.len(), 2);
        assert_eq!((s.per_region[0].label, s.per_region[0].agatston), (2, 12.0));
        assert_eq!((s.per_region[1].label, s.per_region[1].agatston), (4, 12.0));
        assert_eq!(s.agatston, 24.0);
        assert_eq!(s.category, Category::C);
    }

    #[test]
    fn lesions_on_adjacent_slices_are_one_3d_lesion() {
        let (mut hu, dims) = blank();
        for k in 0..2 {
            for i in 1..4 {
                put(&mut hu, i, 2, k, 300.0);
            }
        }
        let s = agatston(&hu, dims, [1.0, 1.0, 3.0], None, &AgatstonOptions::default()).unwrap();
        assert_eq!(s.lesions.len(), 2);
        assert_eq!(s.lesions_3d, 1);
        assert!(s.lesions.iter().all(|l| l.lesion_3d == 1));
        assert_eq!(s.agatston, 2.0 * 3.0 * 3.0);
    }

    #[test]
    fn density_bins_and_category_boundaries() {
        assert_eq!(density_factor(129.99), 0);
        assert_eq!(density_factor(130.0), 1);
        assert_eq!(density_factor(199.6), 1);
        assert_eq!(density_factor(200.0), 2);
        assert_eq!(density_factor(399.9), 3);
        assert_eq!(density_factor(400.0), 4);
        assert_eq!(density_factor(3000.0), 4);
        let cats: Vec<_> =
            [0.0, 0.4, 10.0, 10.01, 100.0, 100.5, 400.0, 400.1].iter().map(|&s| Category::of(s)).collect();
        use Category::*;
        assert_eq!(cats, [A, B, B, C, C, D, D, E]);
        assert!(Category::A < Category::E);
    }

    #[test]
    fn bad_input_is_refused() {
        let (hu, dims) = blank();
        assert!(agatston(&hu[..10], dims, [1.0; 3], None, &AgatstonOptions::default()).is_err());
        assert!(agatston(&hu, dims, [1.0, 0.0, 1.0], None, &AgatstonOptions::default()).is_err());
        let bad = AgatstonOptions { min_voxels: 0, ..Default::default() };
        assert!(agatston(&hu, dims, [1.0; 3], None, &bad).is_err());
        let bad = AgatstonOptions { mass_calibration: Some(-1.0), ..Default::default() };
        assert!(agatston(&hu, dims, [1.0; 3], None, &bad).is_err());
        let empty = agatston(&hu, dims, [1.0; 3], None, &AgatstonOptions::default()).unwrap();
        assert_eq!((empty.agatston, empty.category, empty.lesions_3d), (0.0, Category::A, 0));
    }
}
