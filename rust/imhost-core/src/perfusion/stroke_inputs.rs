//! The inputs of the stroke-lesion model of Wang et al. §3.1 that come from the raw CTP frames:
//! the temporal MIP `F_l` (eq. 1) and the temporally cropped, down-sampled frames `I*` that the
//! feature extractor Φ_e reads (eq. 2–3: the perfusion window `[T_s, T_e]` found on the
//! accumulated intensity `q(t) = Σ_{x,y,z} I(x, y, z, t)`, then `C_e` frames).
//!
//! Conventions we had to choose (the paper does not say):
//! - `q′(t)` is numpy's `gradient` of `q` (central differences inside, one-sided at both ends),
//!   so it is defined at every frame as eq. 2–3 need; the Heaviside function is 1 for a
//!   positive argument and 0 otherwise (a flat `q` is not rising);
//! - the window is cut at frame indices (the paper's `t` counts time points), and `C_e` frames
//!   are taken at evenly spaced positions from `T_s` to `T_e` inclusive, linearly interpolated
//!   between the two neighbouring frames.
//!
//! A study without a rising run of `K` frames (no bolus), without a falling run after it (the
//! bolus is cut off), or with fewer than `2K` frames is refused with a message that says which.

use crate::error::{Error, Result};

/// The paper's K (eq. 2–3).
pub const K: usize = 5;
/// The paper's C_e.
pub const CE: usize = 6;

/// numpy's `gradient` of `q` with unit spacing.
pub fn gradient(q: &[f64]) -> Vec<f64> {
    let n = q.len();
    match n {
        0 => Vec::new(),
        1 => vec![0.0],
        _ => (0..n)
            .map(|t| match t {
                0 => q[1] - q[0],
                t if t == n - 1 => q[n - 1] - q[n - 2],
                t => (q[t + 1] - q[t - 1]) / 2.0,
            })
            .collect(),
    }
}

/// `[T_s, T_e]` of eq. 2–3 on the accumulated intensity `q` (one value per frame).
pub fn perfusion_window(q: &[f64], k: usize) -> Result<(usize, usize)> {
    let t_count = q.len();
    if k == 0 || t_count < 2 * k {
        return Err(Error::shape(format!(
            "the perfusion window needs at least {} frames (2K with K = {k}); this study has {t_count}",
            2 * k
        )));
    }
    if q.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid_argument("the accumulated intensity holds NaN or infinite values"));
    }
    let d = gradient(q);
    let h = |v: f64| v > 0.0;
    // Eq. 2: the earliest t (0 ≤ t < T − K) followed by K rising frames.
    let ts = (0..t_count - k).find(|&t| (0..k).all(|j| h(d[t + j]))).ok_or_else(|| {
        Error::invalid_argument(format!(
            "no bolus: the summed intensity never rises for {k} frames in a row (eq. 2 finds no start)"
        ))
    })?;
    // Eq. 3: the latest t (K ≤ t < T) preceded by K frames that do not rise.
    let te = (k..t_count).rev().find(|&t| (0..k).all(|j| !h(d[t - j]))).filter(|&te| te > ts + 1).ok_or_else(|| {
        Error::invalid_argument(format!(
            "the bolus is truncated: the summed intensity does not fall for {k} frames in a row after it rises at frame {ts} (eq. 3 finds no end)"
        ))
    })?;
    Ok((ts, te))
}

/// The positions (fractional frame indices) of the `ce` frames taken from `[ts, te]`.
pub fn sample_positions(ts: usize, te: usize, ce: usize) -> Vec<f64> {
    if ce == 1 {
        return vec![ts as f64];
    }
    (0..ce).map(|n| ts as f64 + (te - ts) as f64 * n as f64 / (ce - 1) as f64).collect()
}

/// The cropped and down-sampled frames `I*`: `frames[t]` are the study's 3-D frames (any
/// layout, all the same length); returns `ce` frames at [`sample_positions`], linearly
/// interpolated.
pub fn crop_frames(frames: &[Vec<f32>], ts: usize, te: usize, ce: usize) -> Result<Vec<Vec<f32>>> {
    if te >= frames.len() || ts >= te || ce == 0 {
        return Err(Error::invalid_argument(format!(
            "the window [{ts}, {te}] does not lie in the {} frames or C_e is 0",
            frames.len()
        )));
    }
    let n = frames[0].len();
    if frames.iter().any(|f| f.len() != n) {
        return Err(Error::shape("the frames differ in size"));
    }
    Ok(sample_positions(ts, te, ce)
        .into_iter()
        .map(|p| {
            let lo = p.floor() as usize;
            let hi = (lo + 1).min(te);
            let w = (p - lo as f64) as f32;
            frames[lo].iter().zip(&frames[hi]).map(|(a, b)| a + w * (b - a)).collect()
        })
        .collect())
}

/// What §3.1 takes from a 4-D study: the window, the temporal MIP `F_l` (eq. 1) and `I*`.
#[derive(Debug, Clone)]
pub struct StrokeInputs {
    /// `T_s` (frame index).
    pub t_start: usize,
    /// `T_e` (frame index).
    pub t_end: usize,
    /// `F_l`, `i` fastest.
    pub mip: Vec<f32>,
    /// `I*`: `C_e` frames, `i` fastest.
    pub frames: Vec<Vec<f32>>,
}

/// [`StrokeInputs`] of a 4-D study (any pixel type; values as stored, e.g. HU).
pub fn stroke_inputs(study: &crate::AnyVolumeView<'_>, ce: usize) -> Result<StrokeInputs> {
    use crate::Voxel;
    let [ni, nj, nk, nt] = study.shape();
    if nt < 2 {
        return Err(Error::shape("the stroke-lesion inputs need a 4-D CT perfusion study; this is a 3-D volume"));
    }
    crate::memory::check(crate::memory::bytes_of(&[ni, nj, nk, nt], 4), "the study's frames as float")?;
    fn frames_of<T: Voxel>(v: &crate::VolumeView<'_, T>) -> Vec<Vec<f32>> {
        let [ni, nj, nk, nt] = v.shape();
        let d = v.data();
        (0..nt)
            .map(|t| {
                let mut f = Vec::with_capacity(ni * nj * nk);
                for k in 0..nk {
                    for j in 0..nj {
                        for i in 0..ni {
                            f.push(d[[i, j, k, t]].to_f64() as f32);
                        }
                    }
                }
                f
            })
            .collect()
    }
    let frames = crate::with_view!(study, v => frames_of(v));
    let q: Vec<f64> = frames.iter().map(|f| f.iter().map(|&v| f64::from(v)).sum()).collect();
    let (t_start, t_end) = perfusion_window(&q, K)?;
    let mip = (0..ni * nj * nk).map(|p| frames.iter().map(|f| f[p]).fold(f32::NEG_INFINITY, f32::max)).collect();
    let frames = crop_frames(&frames, t_start, t_end, ce)?;
    Ok(StrokeInputs { t_start, t_end, mip, frames })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A baseline, a gamma-variate bolus from frame 10 (peak near 16) and its wash-out.
    fn bolus_q(frames: usize) -> Vec<f64> {
        (0..frames)
            .map(|t| {
                let s = t as f64 - 10.0;
                1000.0 + if s > 0.0 { 80.0 * s.powi(3) * (-s / 2.0).exp() } else { 0.0 }
            })
            .collect()
    }

    #[test]
    fn gradient_is_numpy_s() {
        // numpy.gradient([1, 2, 4, 7, 11]) = [1, 1.5, 2.5, 3.5, 4].
        assert_eq!(gradient(&[1.0, 2.0, 4.0, 7.0, 11.0]), vec![1.0, 1.5, 2.5, 3.5, 4.0]);
    }

    #[test]
    fn the_window_brackets_the_bolus() {
        let q = bolus_q(48);
        let (ts, te) = perfusion_window(&q, K).unwrap();
        // Rising from frame 10 (q′(10) = half of q(11) − q(9) > 0): T_s = 10. The curve peaks at
        // frame 16 (s = 6) and falls from then on, so the latest t preceded by 5 non-rising
        // frames is the last frame.
        assert_eq!(ts, 10);
        assert_eq!(te, 47);
        // A flat tail after the wash-out (q′ = 0 is not rising) keeps T_e at the end as well.
        let p = sample_positions(ts, te, CE);
        assert_eq!(p.len(), 6);
        assert_eq!((p[0], p[5]), (10.0, 47.0));
        assert!((p[1] - 17.4).abs() < 1e-12);
    }

    #[test]
    fn a_second_rise_ends_the_window_before_it() {
        // Bolus, wash-out, then a recirculation that rises again until the end: T_e is the last
        // frame of the first decline that has 5 non-rising frames before it.
        let mut q = bolus_q(40);
        for (t, v) in q.iter_mut().enumerate().skip(34) {
            *v += 30.0 * (t - 33) as f64;
        }
        let (ts, te) = perfusion_window(&q, K).unwrap();
        assert_eq!(ts, 10);
        assert!(te < 34 && te > 20, "{te}");
    }

    #[test]
    fn no_bolus_truncated_and_too_short_are_refused() {
        let flat = vec![1000.0; 40];
        assert!(perfusion_window(&flat, K).unwrap_err().message().contains("no bolus"));
        // Still rising at the last frame: no end.
        let rising: Vec<f64> = (0..30).map(|t| 1000.0 + (t as f64).powi(2)).collect();
        assert!(perfusion_window(&rising, K).unwrap_err().message().contains("truncated"));
        assert!(perfusion_window(&bolus_q(9), K).unwrap_err().message().contains("at least 10 frames"));
        assert!(perfusion_window(&[f64::NAN; 12], K).is_err());
    }

    #[test]
    fn a_phantom_study_gives_its_window_mip_and_six_frames() {
        use crate::phantom::ctp::{PhantomKind, PhantomOptions, generate};
        let mut o = PhantomOptions::new(PhantomKind::Anatomical);
        o.shape = Some([48, 48, 2]);
        let p = generate(&o).unwrap();
        let v = crate::AnyVolume::from(p.ctp.clone());
        let s = stroke_inputs(&v.view(), CE).unwrap();
        assert_eq!(s.frames.len(), 6);
        assert_eq!(s.mip.len(), 48 * 48 * 2);
        let times = p.ctp.frame_times().unwrap().as_slice().to_vec();
        // The bolus of the default phantom arrives a few seconds in and is over well before the end.
        assert!(times[s.t_start] < 15.0 && s.t_end > s.t_start + 10, "{} {}", s.t_start, s.t_end);
        // The MIP is at least every frame, voxel by voxel, and I* lies within the window's range.
        let d = p.ctp.data();
        assert!((0..48).all(|i| s.mip[i] >= f32::from(d[[i, 0, 0, 0]])));
        // A 3-D volume is refused.
        let frame = crate::AnyVolume::from(
            crate::Volume::new_3d(d.index_axis(ndarray::Axis(3), 0).to_owned(), *p.ctp.geometry()).unwrap(),
        );
        assert!(stroke_inputs(&frame.view(), CE).is_err());
    }

    #[test]
    fn frames_are_interpolated_between_neighbours() {
        let frames: Vec<Vec<f32>> = (0..12).map(|t| vec![t as f32, 2.0 * t as f32]).collect();
        let out = crop_frames(&frames, 2, 11, 4).unwrap();
        // Positions 2, 5, 8, 11: the frames themselves.
        assert_eq!(out, vec![vec![2.0, 4.0], vec![5.0, 10.0], vec![8.0, 16.0], vec![11.0, 22.0]]);
        let out = crop_frames(&frames, 2, 7, 3).unwrap();
        assert_eq!(out[1], vec![4.5, 9.0], "position 4.5: halfway between frames 4 and 5");
        assert!(crop_frames(&frames, 5, 12, 3).is_err());
    }
}
