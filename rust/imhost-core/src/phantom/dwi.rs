//! A diffusion-weighted image (b = 1000 trace) for a CT-perfusion phantom, on the CTP grid: the
//! training target and ground truth of the stroke-lesion model (Wang et al. synthesise a pseudo
//! DWI from the CTP and segment the lesion on it; ISLES 2018 gives a real DWI per study, we
//! have phantoms). The infarct core is bright with a realistic contrast (signal ×`core_ratio`,
//! ≈ 2 for an acute infarct at b = 1000), penumbra looks normal (DWI shows the core only), grey
//! matter is a little brighter than white matter, CSF dark, bone and air black.
//!
//! The tissue classes come from the phantom's noise-reduced pre-contrast CT (mean of the frames
//! before the bolus arrives, smoothed in-plane with σ = 1 pixel) and its truth tissue mask; the
//! core's edge gets partial volume (the core mask blurred in-plane with σ = 0.8 pixel), and the
//! magnitude image Rician noise of σ `noise` (relative to white matter ≈ 0.3). The image is then
//! scaled to 0…1 between its minimum and its 99th percentile as the paper preprocesses DWI
//! (§4.1). **Truth**: the lesion mask is the phantom's core.

use crate::error::{Error, Result};
use crate::phantom::ctp::{SplitMix64, Truth};
use crate::volume::Volume;

/// Options of [`synthesize`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DwiOptions {
    /// Core signal over healthy tissue's.
    pub core_ratio: f64,
    /// Rician noise σ (white matter ≈ 0.3 before scaling).
    pub noise: f64,
    /// Seed of the noise.
    pub seed: u64,
}

impl Default for DwiOptions {
    fn default() -> Self {
        DwiOptions { core_ratio: 2.0, noise: 0.03, seed: 1 }
    }
}

/// In-plane Gaussian blur of every slice of a `[ni, nj, nk]` volume (i fastest), edges clamped.
fn blur_slices(v: &mut [f64], [ni, nj, _]: [usize; 3], sigma: f64) {
    for plane in v.chunks_mut(ni * nj) {
        crate::phantom::nuclei::blur(plane, ni, nj, sigma);
    }
}

fn flat<T: crate::Voxel>(v: &Volume<T>) -> Vec<T> {
    v.data().t().iter().copied().collect()
}

/// The DWI of the CTP phantom `ctp` with truth `truth`, and the lesion mask (the core).
pub fn synthesize(ctp: &Volume<i16>, truth: &Truth, options: &DwiOptions) -> Result<(Volume<f32>, Volume<u8>)> {
    use ndarray::ShapeBuilder;
    let [ni, nj, nk, nt] = ctp.shape();
    if nt < 2 {
        return Err(Error::shape("the DWI phantom needs the 4-D CTP phantom"));
    }
    if !((1.0..=5.0).contains(&options.core_ratio) && (0.0..=0.5).contains(&options.noise)) {
        return Err(Error::invalid_argument("DWI phantom: core ratio 1–5, noise 0–0.5"));
    }
    let dims = [ni, nj, nk];
    let n = ni * nj * nk;
    // Pre-contrast frames: up to the first frame after which the summed intensity keeps rising.
    let d = ctp.data();
    let times = ctp.frame_times().map(|f| f.as_slice().to_vec()).unwrap_or_default();
    let arrival = truth.aif.as_ref().map_or(3.0, |a| a.first_pass.t0);
    let pre: Vec<usize> = (0..nt).filter(|&t| times.get(t).is_some_and(|&s| s < arrival)).collect();
    let pre = if pre.is_empty() { vec![0] } else { pre };
    let mut base = vec![0.0f64; n];
    for &t in &pre {
        let mut p = 0;
        for k in 0..nk {
            for j in 0..nj {
                for i in 0..ni {
                    base[p] += f64::from(d[[i, j, k, t]]) / pre.len() as f64;
                    p += 1;
                }
            }
        }
    }
    blur_slices(&mut base, dims, 1.0);
    let tissue = flat(&truth.tissue);
    let core = flat(&truth.core);
    let mut pv: Vec<f64> = core.iter().map(|&c| f64::from(c)).collect();
    blur_slices(&mut pv, dims, 0.8);
    let mut rng = SplitMix64::new(options.seed ^ 0xD1FF_05E0);
    let mut signal: Vec<f64> = (0..n)
        .map(|p| {
            let hu = base[p];
            let s = if tissue[p] == 1 {
                // White matter (≈ 29 HU) 0.30 → grey matter (≈ 35 HU) 0.42.
                0.30 + 0.12 * ((hu - 29.0) / 6.0).clamp(0.0, 1.0)
            } else if !(-200.0..=150.0).contains(&hu) {
                0.02
            } else if hu < 22.0 {
                0.10
            } else {
                0.25
            };
            let s = s * (1.0 + (options.core_ratio - 1.0) * pv[p]);
            let (a, b) = (s + options.noise * rng.gaussian(), options.noise * rng.gaussian());
            (a * a + b * b).sqrt()
        })
        .collect();
    // The paper's DWI scaling: minimum → 0, 99th percentile → 1.
    let mut sorted = signal.clone();
    let lo = crate::score::quantile(&mut sorted, 0.0);
    let hi = crate::score::quantile(&mut sorted, 0.99);
    let span = if hi > lo { hi - lo } else { 1.0 };
    for s in &mut signal {
        *s = ((*s - lo) / span).clamp(0.0, 1.0);
    }
    let shape = (ni, nj, nk).f();
    let img = ndarray::Array3::from_shape_vec(shape, signal.iter().map(|&s| s as f32).collect())
        .map_err(|e| Error::internal(e.to_string()))?;
    let lesion = ndarray::Array3::from_shape_vec(shape, core).map_err(|e| Error::internal(e.to_string()))?;
    Ok((Volume::new_3d(img, *ctp.geometry())?, Volume::new_3d(lesion, *ctp.geometry())?))
}

/// The protocol of study `seed` of a stroke-lesion training or validation set, drawn to cover
/// what ISLES 2018 holds (Wang et al. §4.1): `in_plane`² pixels over 230 mm, 2–22 slices (70 %
/// of studies 2–8, as ISLES' mean of 5.3) of 4–12 mm (thinner where many slices would leave
/// the head: the slab stays within 120 mm), 43–64 frames 1–2 s apart, noise 3–8 HU, and the
/// varied anatomy of [`crate::phantom::ctp::Anatomy::varied`] (lesion side, extent and delays;
/// a tenth healthy, a fifth without core) with a third of the cores narrowed to a small cortical
/// wedge, so that small (< 10 ml), medium (10–50 ml) and large (> 50 ml) lesions all occur.
pub fn stroke_study_options(seed: u64, in_plane: usize) -> crate::phantom::ctp::PhantomOptions {
    use crate::phantom::ctp::{Anatomy, PhantomKind, PhantomOptions};
    let mut rng = SplitMix64::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x15_1E5);
    let mut u = |lo: f64, hi: f64| lo + (hi - lo) * rng.uniform();
    let slices = if u(0.0, 1.0) < 0.7 { u(2.0, 9.0) as usize } else { u(9.0, 23.0) as usize }.clamp(2, 22);
    let thickness = u(4.0, 12.0).min(120.0 / slices as f64).max(4.0);
    let frames = (u(43.0, 65.0) as usize).clamp(43, 64);
    let interval = u(1.0, 2.0);
    let mut o = PhantomOptions::new(PhantomKind::Anatomical);
    o.seed = seed;
    o.noise_hu = u(3.0, 8.0);
    o.shape = Some([in_plane, in_plane, slices]);
    o.slab_mm = Some(thickness * slices as f64);
    o.frame_times = Some((0..frames).map(|n| n as f64 * interval).collect());
    let mut anatomy = Anatomy::varied(seed);
    // A third of the studies get a small core (a narrow wedge near the cortex): the varied
    // anatomy alone gives few lesions under 10 ml.
    if u(0.0, 1.0) < 0.33 {
        anatomy.penumbra_half_angle_deg = anatomy.penumbra_half_angle_deg.max(u(20.0, 40.0));
        anatomy.core_half_angle_deg = u(3.0, 8.0);
        anatomy.core_inner_mm = anatomy.penumbra_inner_mm.max(u(50.0, 62.0));
    }
    o.anatomy = Some(anatomy);
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phantom::ctp::{PhantomKind, PhantomOptions, generate};

    #[test]
    fn the_study_protocols_cover_isles_and_every_lesion_size_group() {
        let (mut slices, mut thick, mut frames) = (Vec::new(), Vec::new(), Vec::new());
        for seed in 0..400 {
            let o = stroke_study_options(seed, 64);
            let nk = o.shape.unwrap()[2];
            slices.push(nk);
            thick.push(o.slab_mm.unwrap() / nk as f64);
            frames.push(o.frame_times.as_ref().unwrap().len());
        }
        let range =
            |v: &[f64]| (v.iter().copied().fold(f64::INFINITY, f64::min), v.iter().copied().fold(0.0, f64::max));
        let as_f = |v: &[usize]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        assert_eq!(range(&as_f(&slices)), (2.0, 22.0));
        assert_eq!(range(&as_f(&frames)), (43.0, 64.0));
        let (lo, hi) = range(&thick);
        assert!((4.0..4.5).contains(&lo) && hi <= 12.0 && hi > 11.5, "{lo} {hi}");
        let mean_slices = slices.iter().sum::<usize>() as f64 / slices.len() as f64;
        assert!((5.0..=9.0).contains(&mean_slices), "{mean_slices}");
        // Lesion (core) volumes of 30 small studies: every size group occurs.
        let mut groups = [0usize; 4];
        for seed in 0..30 {
            let p = generate(&stroke_study_options(seed, 48)).unwrap();
            let voxel_ml = p.ctp.geometry().spacing.iter().product::<f64>() / 1000.0;
            let ml = p.truth.core.data().iter().filter(|&&c| c == 1).count() as f64 * voxel_ml;
            groups[if ml == 0.0 {
                0
            } else if ml < 10.0 {
                1
            } else if ml <= 50.0 {
                2
            } else {
                3
            }] += 1;
        }
        assert!(groups[1..].iter().all(|&g| g > 0), "none / small / medium / large: {groups:?}");
    }

    #[test]
    fn the_core_is_bright_and_the_rest_is_as_described() {
        let mut o = PhantomOptions::new(PhantomKind::Anatomical);
        o.shape = Some([64, 64, 4]);
        let p = generate(&o).unwrap();
        let (dwi, lesion) = synthesize(&p.ctp, &p.truth, &DwiOptions::default()).unwrap();
        let img = flat(&dwi);
        let les = flat(&lesion);
        let tissue = flat(&p.truth.tissue);
        let hyp = flat(&p.truth.hypoperfusion);
        assert_eq!(les, flat(&p.truth.core), "the lesion truth is the core");
        assert!(img.iter().all(|v| (0.0..=1.0).contains(v)));
        let mean = |pick: &dyn Fn(usize) -> bool| {
            let v: Vec<f64> = (0..img.len()).filter(|&q| pick(q)).map(|q| f64::from(img[q])).collect();
            assert!(!v.is_empty());
            v.iter().sum::<f64>() / v.len() as f64
        };
        // Deep inside the core (not at its blurred edge) against healthy tissue: about ×2.
        let core_mean = mean(&|q| les[q] == 1);
        let healthy = mean(&|q| tissue[q] == 1 && hyp[q] == 0);
        let penumbra = mean(&|q| hyp[q] == 1 && les[q] == 0);
        assert!(core_mean / healthy > 1.6 && core_mean / healthy < 2.3, "core {core_mean} healthy {healthy}");
        assert!((penumbra / healthy - 1.0).abs() < 0.2, "penumbra looks normal on DWI: {penumbra} vs {healthy}");
        // Outside the brain: darker than tissue.
        assert!(mean(&|q| tissue[q] == 0) < healthy);
        // The same seed gives the same image; another seed other noise.
        let (again, _) = synthesize(&p.ctp, &p.truth, &DwiOptions::default()).unwrap();
        assert_eq!(flat(&again), img);
        let (other, _) = synthesize(&p.ctp, &p.truth, &DwiOptions { seed: 2, ..Default::default() }).unwrap();
        assert_ne!(flat(&other), img);
        assert!(synthesize(&p.ctp, &p.truth, &DwiOptions { core_ratio: 0.5, ..Default::default() }).is_err());
    }
}
