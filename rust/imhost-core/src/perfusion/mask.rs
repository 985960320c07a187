//! Brain mask: tissue by its unenhanced density, without skull, air, CSF and large vessels.

use serde::Serialize;

/// Options of the brain mask.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct MaskOptions {
    /// Lowest baseline HU counted as brain (20: excludes CSF at ≈ 0–15 HU and air).
    pub min_hu: f64,
    /// Highest baseline HU counted as brain (60: excludes bone and calcification).
    pub max_hu: f64,
    /// Peak enhancement (ΔHU) above which a voxel is a vessel (80); vessels and their
    /// in-plane neighbours are excluded.
    pub vessel_enhancement_hu: f64,
    /// Voxels with fewer in-plane mask neighbours (of 8) than this are dropped as specks (3).
    pub min_neighbours: u8,
}

impl Default for MaskOptions {
    fn default() -> Self {
        MaskOptions { min_hu: 20.0, max_hu: 60.0, vessel_enhancement_hu: 80.0, min_neighbours: 3 }
    }
}

/// The brain mask from the per-voxel baseline (HU), peak enhancement (ΔHU) and a validity flag
/// (all samples finite), all in linear order `i + ni·(j + nj·k)`.
pub fn brain_mask(
    shape: [usize; 3],
    baseline: &[f32],
    enhancement: &[f32],
    valid: &[bool],
    options: &MaskOptions,
) -> Vec<bool> {
    let [ni, nj, nk] = shape;
    let vessel: Vec<bool> =
        enhancement.iter().zip(valid).map(|(&e, &ok)| ok && f64::from(e) > options.vessel_enhancement_hu).collect();
    let near_vessel = |i: usize, j: usize, k: usize| {
        for dj in -1i64..=1 {
            for di in -1i64..=1 {
                let (x, y) = (i as i64 + di, j as i64 + dj);
                if x >= 0
                    && y >= 0
                    && (x as usize) < ni
                    && (y as usize) < nj
                    && vessel[x as usize + ni * (y as usize + nj * k)]
                {
                    return true;
                }
            }
        }
        false
    };
    let mut mask = vec![false; ni * nj * nk];
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                let v = i + ni * (j + nj * k);
                let b = f64::from(baseline[v]);
                mask[v] = valid[v] && b >= options.min_hu && b <= options.max_hu && !near_vessel(i, j, k);
            }
        }
    }
    let mut cleaned = mask.clone();
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                let v = i + ni * (j + nj * k);
                if !mask[v] {
                    continue;
                }
                let mut count = 0u8;
                for dj in -1i64..=1 {
                    for di in -1i64..=1 {
                        let (x, y) = (i as i64 + di, j as i64 + dj);
                        if (di, dj) != (0, 0)
                            && x >= 0
                            && y >= 0
                            && (x as usize) < ni
                            && (y as usize) < nj
                            && mask[x as usize + ni * (y as usize + nj * k)]
                        {
                            count += 1;
                        }
                    }
                }
                cleaned[v] = count >= options.min_neighbours;
            }
        }
    }
    cleaned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_csf_bone_and_vessels() {
        let shape = [12, 12, 1];
        let mut baseline = vec![30.0f32; 144];
        let mut enhancement = vec![20.0f32; 144];
        baseline[0] = 10.0; // CSF
        baseline[13] = 900.0; // bone
        enhancement[6 * 12 + 6] = 300.0; // vessel
        let mask = brain_mask(shape, &baseline, &enhancement, &[true; 144], &MaskOptions::default());
        assert!(!mask[0] && !mask[13]);
        assert!(!mask[6 * 12 + 6] && !mask[6 * 12 + 7] && !mask[5 * 12 + 5], "vessel and its neighbours");
        assert!(mask[3 * 12 + 9]);
        assert_eq!(mask.iter().filter(|&&m| m).count(), 144 - 2 - 9);
    }
}
