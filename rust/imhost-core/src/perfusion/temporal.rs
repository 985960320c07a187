//! Time-axis operations: global bolus arrival and baseline window, uniform resampling, and the
//! temporal crop of Wang et al. (stroke-lesion paper) kept for the CNN pipelines.

use crate::error::{Error, Result};

/// Check frame times: finite, strictly increasing, one per frame.
pub fn validate_frame_times(times: &[f64], frames: usize) -> Result<()> {
    if times.len() != frames {
        return Err(Error::invalid_argument(format!(
            "{} frame times for {frames} frames: give one time per frame",
            times.len()
        )));
    }
    if let Some(n) = times.iter().position(|t| !t.is_finite()) {
        return Err(Error::invalid_argument(format!("frame time {n} is not finite")));
    }
    if let Some(n) = times.windows(2).position(|w| w[1] <= w[0]) {
        return Err(Error::invalid_argument(format!(
            "frame times must increase: frame {} at {} s is not after frame {n} at {} s",
            n + 1,
            times[n + 1],
            times[n]
        )));
    }
    Ok(())
}

/// Where the bolus arrives in a (whole-brain) curve, and the baseline frames before it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BolusArrival {
    /// First frame of the rise (the foot of the curve).
    pub frame: usize,
    /// Its time in s.
    pub time: f64,
    /// Number of baseline frames (`frame`, at least 1).
    pub baseline_frames: usize,
}

/// Bolus arrival of a curve: the first frame above `baseline + 10 %` of the enhancement range,
/// then stepped back to the last frame at or below `baseline + 2 %` (the foot). The baseline level
/// is the median of the first three frames, so an early noisy frame does not move it.
pub fn bolus_arrival(curve: &[f64], times: &[f64]) -> BolusArrival {
    let n = curve.len();
    let mut head: Vec<f64> = curve.iter().take(3).copied().collect();
    head.sort_by(f64::total_cmp);
    let base = head.get(head.len() / 2).copied().unwrap_or(0.0);
    let peak = curve.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let range = peak - base;
    let rise = curve.iter().position(|&v| v > base + 0.1 * range).unwrap_or(0);
    let mut foot = rise;
    while foot > 0 && curve[foot - 1] > base + 0.02 * range {
        foot -= 1;
    }
    let foot = foot.min(n.saturating_sub(1));
    BolusArrival { frame: foot, time: times.get(foot).copied().unwrap_or(0.0), baseline_frames: foot.max(1) }
}

/// The smallest frame interval the pipeline resamples to (10 ms): closer frames are a header
/// error (CT gantries rotate in about 0.3 s), and would make the grid huge.
pub const MIN_RESAMPLE_STEP_S: f64 = 0.01;

/// The most samples a resampled curve may have: far above any perfusion protocol (90 frames at
/// 1 s; 2 h of dynamic PET at 2 s is 3600), far below what would exhaust memory.
pub const MAX_RESAMPLED_FRAMES: usize = 4096;

/// A uniform grid covering `times`: step = the smallest interval (so no sample is lost).
/// Refused (an error naming the frames) when frames are under [`MIN_RESAMPLE_STEP_S`] apart or the
/// grid would hold more than [`MAX_RESAMPLED_FRAMES`] samples: frame times from a sidecar or DICOM
/// header must not decide how much memory the pipeline asks for.
pub fn uniform_grid(times: &[f64]) -> Result<(f64, usize)> {
    if times.len() < 2 {
        return Err(Error::invalid_argument("a time series needs at least two frame times"));
    }
    let (at, step) = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .enumerate()
        .fold((0, f64::INFINITY), |best, (n, d)| if d < best.1 { (n, d) } else { best });
    if step.is_nan() || step < MIN_RESAMPLE_STEP_S {
        return Err(Error::invalid_argument(format!(
            "frames {at} and {} are {step:e} s apart (at {} s and {} s); frames closer than {MIN_RESAMPLE_STEP_S} s are not a CT perfusion series — check the frame times",
            at + 1,
            times[at],
            times[at + 1]
        )));
    }
    let span = times[times.len() - 1] - times[0];
    let samples = (span / step + 1e-6).floor() + 1.0;
    if samples.is_nan() || samples > MAX_RESAMPLED_FRAMES as f64 {
        return Err(Error::invalid_argument(format!(
            "frame times span {span:e} s with a smallest interval of {step} s: a uniform grid would need {samples:e} samples (at most {MAX_RESAMPLED_FRAMES}) — check the frame times"
        )));
    }
    Ok((step, samples as usize))
}

/// Linear interpolation of `(times, values)` at `t0 + n·step`, `n < count`.
pub fn resample_linear(times: &[f64], values: &[f32], t0: f64, step: f64, count: usize, out: &mut [f32]) {
    let mut seg = 0;
    for (n, o) in out.iter_mut().enumerate().take(count) {
        let t = t0 + n as f64 * step;
        while seg + 2 < times.len() && times[seg + 1] < t {
            seg += 1;
        }
        let (ta, tb) = (times[seg], times[seg + 1]);
        let w = ((t - ta) / (tb - ta)).clamp(0.0, 1.0);
        *o = (f64::from(values[seg]) * (1.0 - w) + f64::from(values[seg + 1]) * w) as f32;
    }
}

/// The temporal crop of Wang et al.: with `q(t) = Σ_x I(x, t)` (the caller passes q),
/// `T_s` = the first frame from which q′ stays positive for `k` consecutive frames and
/// `T_e` = the last frame at which q′ was negative for the `k` preceding frames. Returns
/// `(T_s, T_e)` as frame indices (inclusive), or `None` when no such window exists.
pub fn wang_crop(q: &[f64], k: usize) -> Option<(usize, usize)> {
    if k == 0 || q.len() < k + 2 {
        return None;
    }
    let d: Vec<f64> = q.windows(2).map(|w| w[1] - w[0]).collect();
    // d[n] = q[n+1] − q[n]
    let start = (0..=d.len() - k).find(|&n| d[n..n + k].iter().all(|&v| v > 0.0))?;
    let end = (k..=d.len()).rev().find(|&n| d[n - k..n].iter().all(|&v| v < 0.0))?;
    (end > start).then_some((start, end))
}

/// Resample frames `[start, end]` of a curve uniformly to `count` samples (Wang et al. use 6),
/// by linear interpolation in time.
pub fn crop_and_resample(times: &[f64], values: &[f32], (start, end): (usize, usize), count: usize) -> Vec<f32> {
    let (t0, t1) = (times[start], times[end]);
    let step = if count > 1 { (t1 - t0) / (count - 1) as f64 } else { 0.0 };
    let mut out = vec![0.0; count];
    resample_linear(&times[start..=end], &values[start..=end], t0, step, count, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_time_errors() {
        assert!(validate_frame_times(&[0.0, 1.0, 2.0], 3).is_ok());
        assert!(validate_frame_times(&[0.0, 1.0], 3).unwrap_err().message().contains("2 frame times for 3"));
        assert!(validate_frame_times(&[0.0, 1.0, 1.0], 3).unwrap_err().message().contains("must increase"));
        assert!(validate_frame_times(&[0.0, f64::NAN, 2.0], 3).is_err());
    }

    #[test]
    fn arrival_of_a_ramp() {
        let times: Vec<f64> = (0..30).map(f64::from).collect();
        let curve: Vec<f64> = times.iter().map(|&t| if t < 10.0 { 5.0 } else { 5.0 + (t - 10.0) * 3.0 }).collect();
        let a = bolus_arrival(&curve, &times);
        // Frame 10 is the last at baseline; frame 11 is the first enhanced one.
        assert_eq!(a.frame, 11);
        assert_eq!(a.baseline_frames, 11);
    }

    #[test]
    fn frame_times_cannot_ask_for_a_huge_grid() {
        // A sidecar ending in 1e300, a last time of 1e12, a 1e-7 s step, DICOM times 1 µs apart.
        let mut times: Vec<f64> = (0..30).map(f64::from).collect();
        for (last, words) in [(1e300, "samples"), (1e12, "samples")] {
            *times.last_mut().unwrap() = last;
            let e = uniform_grid(&times).unwrap_err();
            assert!(e.message().contains(words) && e.message().contains("at most 4096"), "{e}");
        }
        let tiny: Vec<f64> = (0..30).map(|n| n as f64 * 1e-7).collect();
        assert!(uniform_grid(&tiny).unwrap_err().message().contains("not a CT perfusion series"));
        let mut close: Vec<f64> = (0..30).map(f64::from).collect();
        close[5] = 4.000001;
        let e = uniform_grid(&close).unwrap_err();
        assert!(e.message().contains("frames 4 and 5"), "{e}");
        // A real protocol passes: 40 frames at 1 s then 2 s sampling.
        let protocol: Vec<f64> = (0..40).map(f64::from).chain((0..15).map(|n| 40.0 + 2.0 * n as f64)).collect();
        assert_eq!(uniform_grid(&protocol).unwrap(), (1.0, 69));
    }

    #[test]
    fn resampling_is_exact_on_lines() {
        let times = [0.0, 1.0, 3.0, 4.0, 8.0];
        let values: Vec<f32> = times.iter().map(|t| (2.0 * t + 1.0) as f32).collect();
        let (step, count) = uniform_grid(&times).unwrap();
        assert_eq!((step, count), (1.0, 9));
        let mut out = vec![0.0; count];
        resample_linear(&times, &values, 0.0, step, count, &mut out);
        for (n, v) in out.iter().enumerate() {
            assert!((v - (2.0 * n as f32 + 1.0)).abs() < 1e-6);
        }
    }

    #[test]
    fn wang_crop_brackets_the_bolus() {
        // Flat, rise over frames 5..12, fall 12..20, flat.
        let q: Vec<f64> = (0..30)
            .map(|n| match n {
                0..=4 => 100.0 + (n % 2) as f64 * 0.5,
                5..=12 => 100.0 + 10.0 * (n - 4) as f64,
                13..=20 => 180.0 - 9.0 * (n - 12) as f64,
                _ => 108.0 + (n % 2) as f64 * 0.5,
            })
            .collect();
        let (s, e) = wang_crop(&q, 5).unwrap();
        assert_eq!(s, 4);
        assert_eq!(e, 20);
        let times: Vec<f64> = (0..30).map(f64::from).collect();
        let v: Vec<f32> = q.iter().map(|&x| x as f32).collect();
        let r = crop_and_resample(&times, &v, (s, e), 6);
        assert_eq!(r.len(), 6);
        assert!((r[0] - q[4] as f32).abs() < 1e-4 && (r[5] - q[20] as f32).abs() < 1e-4);
        assert!(wang_crop(&[1.0; 30], 5).is_none());
    }
}
