//! Perfusion of curves, not heads: one arterial input and N tissue curves in, CBF, CBV, MTT,
//! Tmax and delay per curve out — through the same deconvolution kernels as the image pipeline,
//! with none of its image heuristics (no brain mask, no AIF search, no filter). For researchers,
//! QA phantoms and digital reference objects.
//!
//! The curves are concentrations (or ΔHU, which is proportional) sampled at `times`; a
//! non-uniform grid is resampled linearly onto a uniform one of its smallest step, as the image
//! pipeline does. With `baseline_frames` > 0 the mean of the first frames is subtracted from every
//! curve first (HU in, ΔHU deconvolved). The constants k_H and ρ can be switched off to compare
//! with conventions that omit them (then CBF is in ml/100 ml/min and CBV in ml/100 ml).

use serde::Serialize;

use super::constants::{K_H, RHO};
use super::{Kernel, Method, PerfusionOptions, temporal};
use crate::error::{Error, Result};

/// How curves are analysed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CurveOptions {
    /// The deconvolution method (not the CNN, which needs images).
    pub method: Method,
    /// Multiply by the hematocrit and density constants k_H/ρ (true: as the image pipeline).
    pub constants: bool,
    /// Subtract the mean of this many first samples from every curve (0: the curves are
    /// concentrations already).
    pub baseline_frames: usize,
    /// The SVD family's thresholds and the NLR fit's settings: the image pipeline's defaults.
    pub pipeline: PerfusionOptions,
}

impl Default for CurveOptions {
    fn default() -> Self {
        CurveOptions {
            method: Method::Osvd,
            constants: true,
            baseline_frames: 0,
            pipeline: PerfusionOptions::default(),
        }
    }
}

/// What one tissue curve gives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CurvePerfusion {
    /// Cerebral blood flow, ml/100 g/min (ml/100 ml/min without the constants).
    pub cbf: f64,
    /// Cerebral blood volume, ml/100 g (ml/100 ml without the constants).
    pub cbv: f64,
    /// Mean transit time CBV/CBF, s (NaN where CBF is 0).
    pub mtt: f64,
    /// Time of the residue function's maximum, s.
    pub tmax: f64,
    /// Arrival of the tissue curve after the arterial input's (20 % of peak), s.
    pub delay: f64,
}

/// The analysis of `tissue` curves against `aif`, all sampled at `times` (seconds, strictly
/// increasing). Errors (one line each): curves of another length than the times, fewer than 4
/// samples, times that do not increase, values that are not finite, an arterial input without a
/// bolus, the CNN as the method.
pub fn analyse(aif: &[f64], tissue: &[Vec<f64>], times: &[f64], options: &CurveOptions) -> Result<Vec<CurvePerfusion>> {
    let n = times.len();
    if n < 4 {
        return Err(Error::invalid_argument(format!("{n} samples: a perfusion curve needs at least 4")));
    }
    temporal::validate_frame_times(times, n)?;
    let check = |what: &str, c: &[f64]| -> Result<()> {
        if c.len() != n {
            return Err(Error::invalid_argument(format!("{what} has {} samples, the times {n}", c.len())));
        }
        if let Some(m) = c.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid_argument(format!("{what}: sample {m} is not a finite number")));
        }
        Ok(())
    };
    check("the arterial input", aif)?;
    for (m, c) in tissue.iter().enumerate() {
        check(&format!("tissue curve {}", m + 1), c)?;
    }
    if options.method == Method::Cnn {
        return Err(Error::invalid_argument(
            "the CNN maps images, not curves: choose ssvd, bsvd, osvd, tikhonov or nlr",
        ));
    }
    if options.baseline_frames >= n {
        return Err(Error::invalid_argument(format!(
            "{} baseline frames of {n}: the baseline must leave the bolus",
            options.baseline_frames
        )));
    }
    let baseline = |c: &[f64]| -> f64 {
        match options.baseline_frames {
            0 => 0.0,
            b => c[..b].iter().sum::<f64>() / b as f64,
        }
    };
    // Onto a uniform grid of the smallest step (exactly the samples when already uniform).
    let (dt, count) = temporal::uniform_grid(times)?;
    let resample = |c: &[f64]| -> Vec<f32> {
        let b = baseline(c);
        let shifted: Vec<f32> = c.iter().map(|&v| (v - b) as f32).collect();
        let mut out = vec![0.0f32; count];
        temporal::resample_linear(times, &shifted, times[0], dt, count, &mut out);
        out
    };
    let a = resample(aif);
    let peak = a.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let spread = peak - a.iter().copied().fold(f32::INFINITY, f32::min);
    if peak.is_nan() || peak <= 0.0 || f64::from(spread) < 1e-6 * f64::from(peak.abs()).max(1e-9) || a[0] >= 0.5 * peak
    {
        return Err(Error::invalid_argument(
            "the arterial input has no bolus (it does not rise from its first sample to a positive peak)",
        ));
    }
    let aif_area: f64 = a.iter().map(|&x| f64::from(x)).sum::<f64>() * dt;
    let aif_arrival = super::nlr::arrival_time(&a.iter().map(|&x| f64::from(x)).collect::<Vec<_>>(), dt);
    let mut pipeline = options.pipeline.clone();
    pipeline.method = options.method;
    let kernel = Kernel::new(&pipeline, &a, dt)?;
    let rows = tissue.len();
    let curves: Vec<f32> = tissue.iter().flat_map(|c| resample(c)).collect();
    let (mut cbf, mut cbv, mut tmax, mut delay) = (vec![0.0; rows], vec![0.0; rows], vec![0.0; rows], vec![0.0; rows]);
    if rows > 0 {
        kernel.apply(&curves, count, dt, aif_area, aif_arrival, &mut cbf, &mut cbv, &mut tmax, &mut delay);
    }
    // Without the constants: undo k_H/ρ, which both scales carry.
    let unscale = if options.constants { 1.0 } else { RHO / K_H };
    Ok((0..rows)
        .map(|r| {
            let (f, v) = (f64::from(cbf[r]) * unscale, f64::from(cbv[r]) * unscale);
            CurvePerfusion {
                cbf: f,
                cbv: v,
                mtt: if f > 0.0 { 60.0 * v / f } else { f64::NAN },
                tmax: f64::from(tmax[r]),
                delay: f64::from(delay[r]),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gamma-variate arterial input (peak near 8 s after arrival at 10 s).
    fn aif(t: f64) -> f64 {
        let s = t - 10.0;
        if s <= 0.0 { 0.0 } else { 400.0 * (s / 8.0).powi(3) * (3.0 * (1.0 - s / 8.0)).exp() }
    }

    /// Tissue = (flow in 1/s) · (AIF ⊗ R)(t − delay), by fine quadrature.
    fn tissue(times: &[f64], flow: f64, delay: f64, residue: impl Fn(f64) -> f64) -> Vec<f64> {
        let h = 0.01;
        times
            .iter()
            .map(|&t| {
                let steps = ((t - delay).max(0.0) / h) as usize;
                (0..steps).map(|m| aif(m as f64 * h) * residue(t - delay - m as f64 * h)).sum::<f64>() * h * flow
            })
            .collect()
    }

    fn close(got: f64, want: f64, atol: f64, rtol: f64) -> bool {
        (got - want).abs() <= atol + rtol * want.abs()
    }

    #[test]
    fn analytic_curves_give_their_flow_volume_and_transit_time() {
        let times: Vec<f64> = (0..80).map(|m| m as f64).collect();
        let a: Vec<f64> = times.iter().map(|&t| aif(t)).collect();
        // CBF 60 ml/100 ml/min = 0.01 /s; box MTT 4 s (CBV 4 ml/100 ml), exponential MTT 5 s
        // (CBV 5), a box delayed by 2 s.
        let f = 0.01;
        let curves = vec![
            tissue(&times, f, 0.0, |s| if s < 4.0 { 1.0 } else { 0.0 }),
            tissue(&times, f, 0.0, |s| (-s / 5.0).exp()),
            tissue(&times, f, 2.0, |s| if s < 4.0 { 1.0 } else { 0.0 }),
        ];
        let options = CurveOptions { constants: false, ..CurveOptions::default() };
        // Stated tolerances on CBF (|Δ| ≤ rtol·60): the SVD family underestimates flow, more so
        // for a residue with a sharp peak (Østergaard 1996, Wu 2003); noise-free at 1 s sampling
        // these kernels give −17 to −35 % on the box and −39 to −48 % on the exponential. NLR fits
        // a box model: within 10 % on boxes, not applicable to the exponential.
        let cases = [
            (Method::Ssvd, 0.25, 0.45),
            (Method::Bsvd, 0.40, 0.50),
            (Method::Osvd, 0.30, 0.45),
            (Method::Tikhonov, 0.40, 0.55),
            (Method::Nlr, 0.10, f64::NAN),
        ];
        for (method, box_rtol, exp_rtol) in cases {
            let r = analyse(&a, &curves, &times, &CurveOptions { method, ..options.clone() }).unwrap();
            let fitted: &[usize] = if method == Method::Nlr { &[0, 2] } else { &[0, 1, 2] };
            // CBV is an area ratio (the fit's flow × MTT for NLR): within 3 %.
            for &c in fitted {
                let want = [4.0, 5.0, 4.0][c];
                assert!(close(r[c].cbv, want, 0.05, 0.03), "{method:?}: CBV {} for {want}", r[c].cbv);
            }
            assert!(close(r[0].cbf, 60.0, 0.0, box_rtol), "{method:?}: box CBF {}", r[0].cbf);
            if !exp_rtol.is_nan() {
                assert!(close(r[1].cbf, 60.0, 0.0, exp_rtol), "{method:?}: exponential CBF {}", r[1].cbf);
            }
            // Never above the truth by more than 10 %: a scale error would show here.
            assert!(r.iter().all(|x| x.cbf <= 66.0), "{method:?}: {r:?}");
            // The 2 s delay, in the delay map and (but for sSVD, which is delay-sensitive) in Tmax.
            assert!(
                close(r[2].delay - r[0].delay, 2.0, 0.3, 0.0),
                "{method:?}: delay {} vs {}",
                r[2].delay,
                r[0].delay
            );
            if method != Method::Ssvd {
                assert!(close(r[2].tmax - r[0].tmax, 2.0, 0.3, 0.0), "{method:?}: Tmax {} vs {}", r[2].tmax, r[0].tmax);
            }
            for &c in fitted {
                assert!(close(r[c].mtt, 60.0 * r[c].cbv / r[c].cbf, 1e-9, 1e-9), "{method:?}: MTT is CBV/CBF");
            }
        }
        // With the constants, CBF and CBV scale by k_H/ρ.
        let with = analyse(&a, &curves, &times, &CurveOptions::default()).unwrap();
        let without = analyse(&a, &curves, &times, &options).unwrap();
        assert!(close(with[0].cbf, without[0].cbf * K_H / RHO, 1e-9, 1e-6));
        assert!(close(with[0].cbv, without[0].cbv * K_H / RHO, 1e-9, 1e-6));
        assert!(close(with[0].mtt, without[0].mtt, 1e-9, 1e-9));
    }

    /// The median of `values`.
    fn median(mut values: Vec<f64>) -> f64 {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    }

    #[test]
    fn a_gamma_residue_and_noisy_curves_stay_within_stated_tolerances() {
        let times: Vec<f64> = (0..80).map(|m| m as f64).collect();
        let a: Vec<f64> = times.iter().map(|&t| aif(t)).collect();
        let f = 0.01;
        // A gamma (Erlang k = 2, θ = 2 s) transit-time distribution: R(t) = e^(−t/θ)·(1 + t/θ),
        // MTT = kθ = 4 s, CBV 4. The SVD family underestimates its flow about as much as the
        // exponential's (measured −33 % sSVD, −44 % bSVD, −37 % oSVD, −47 % Tikhonov): the same
        // stated tolerances, and never above the truth by more than 10 %.
        let gamma = tissue(&times, f, 0.0, |s| (-s / 2.0).exp() * (1.0 + s / 2.0));
        let options = CurveOptions { constants: false, ..CurveOptions::default() };
        for (method, rtol) in
            [(Method::Ssvd, 0.45), (Method::Bsvd, 0.50), (Method::Osvd, 0.45), (Method::Tikhonov, 0.55)]
        {
            let r =
                analyse(&a, std::slice::from_ref(&gamma), &times, &CurveOptions { method, ..options.clone() }).unwrap();
            assert!(close(r[0].cbv, 4.0, 0.05, 0.03), "{method:?}: gamma CBV {}", r[0].cbv);
            assert!(r[0].cbf <= 66.0 && close(r[0].cbf, 60.0, 0.0, rtol), "{method:?}: gamma CBF {}", r[0].cbf);
        }
        // Noise: 200 box curves (CBF 60, MTT 4 s, peak ≈ 16) with Gaussian noise σ = 1 (≈ 6 % of
        // the peak; about what a bilateral-filtered CT voxel keeps) and a noisy AIF (σ = 2, peak
        // 400). CBV (an area ratio) keeps its median within 3 % and its spread small; the median
        // CBF stays within the method's noise-free tolerance plus 10 % of the truth (measured:
        // −18 % sSVD, −33 % bSVD, −21 % oSVD, −34 % Tikhonov, +9 % NLR).
        let clean = tissue(&times, f, 0.0, |s| if s < 4.0 { 1.0 } else { 0.0 });
        let mut rng = crate::phantom::ctp::SplitMix64::new(20);
        let noisy_aif: Vec<f64> = a.iter().map(|&v| v + 2.0 * rng.gaussian()).collect();
        let curves: Vec<Vec<f64>> = (0..200).map(|_| clean.iter().map(|&v| v + rng.gaussian()).collect()).collect();
        for (method, rtol) in [
            (Method::Ssvd, 0.35),
            (Method::Bsvd, 0.50),
            (Method::Osvd, 0.40),
            (Method::Tikhonov, 0.50),
            (Method::Nlr, 0.20),
        ] {
            let r = analyse(&noisy_aif, &curves, &times, &CurveOptions { method, ..options.clone() }).unwrap();
            let cbv = median(r.iter().map(|x| x.cbv).collect());
            let cbf = median(r.iter().map(|x| x.cbf).collect());
            assert!(close(cbv, 4.0, 0.05, 0.03), "{method:?}: noisy median CBV {cbv}");
            let spread = median(r.iter().map(|x| (x.cbv - cbv).abs()).collect());
            assert!(spread < 0.3, "{method:?}: CBV median |deviation| {spread}");
            assert!(close(cbf, 60.0, 0.0, rtol), "{method:?}: noisy median CBF {cbf}");
            assert!(r.iter().all(|x| x.cbf.is_finite() && x.cbv.is_finite()), "{method:?}");
        }
    }

    #[test]
    fn hu_curves_with_a_baseline_and_non_uniform_times() {
        // Every second sample after 30 s dropped (a 2 s tail), HU with a 40 HU baseline.
        let times: Vec<f64> = (0..30).map(f64::from).chain((15..40).map(|m| f64::from(m) * 2.0)).collect();
        let a: Vec<f64> = times.iter().map(|&t| aif(t) + 40.0).collect();
        let c = tissue(&times, 0.01, 0.0, |s| (-s / 5.0).exp()).iter().map(|v| v + 40.0).collect::<Vec<_>>();
        let options = CurveOptions { constants: false, baseline_frames: 5, ..CurveOptions::default() };
        let r = analyse(&a, &[c], &times, &options).unwrap();
        // The same curves as concentrations on the full 1 s grid: the baseline comes off exactly
        // and the 2 s tail, resampled linearly, changes little.
        let full: Vec<f64> = (0..80).map(f64::from).collect();
        let reference = analyse(
            &full.iter().map(|&t| aif(t)).collect::<Vec<_>>(),
            &[tissue(&full, 0.01, 0.0, |s| (-s / 5.0).exp())],
            &full,
            &CurveOptions { constants: false, ..CurveOptions::default() },
        )
        .unwrap();
        assert!(close(r[0].cbv, 5.0, 0.05, 0.03), "CBV {}", r[0].cbv);
        assert!(close(r[0].cbv, reference[0].cbv, 0.0, 0.03), "CBV {} vs {}", r[0].cbv, reference[0].cbv);
        assert!(close(r[0].cbf, reference[0].cbf, 0.0, 0.03), "CBF {} vs {}", r[0].cbf, reference[0].cbf);
    }

    #[test]
    fn bad_curves_are_refused_with_one_line() {
        let times: Vec<f64> = (0..40).map(f64::from).collect();
        let a: Vec<f64> = times.iter().map(|&t| aif(t)).collect();
        let c = tissue(&times, 0.01, 0.0, |s| (-s / 5.0).exp());
        let o = CurveOptions::default();
        let err = |aif: &[f64], t: &[Vec<f64>], times: &[f64], o: &CurveOptions| {
            let e = analyse(aif, t, times, o).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{e}");
            e
        };
        assert!(err(&a, &[c[..30].to_vec()], &times, &o).contains("tissue curve 1 has 30 samples"));
        let mut back = times.clone();
        back[7] = 3.0;
        assert!(err(&a, std::slice::from_ref(&c), &back, &o).contains("increase"));
        let mut nan = c.clone();
        nan[3] = f64::NAN;
        assert!(err(&a, &[nan], &times, &o).contains("not a finite number"));
        assert!(err(&vec![5.0; 40], std::slice::from_ref(&c), &times, &o).contains("no bolus"));
        assert!(
            err(&a, std::slice::from_ref(&c), &times, &CurveOptions { method: Method::Cnn, ..o.clone() })
                .contains("CNN")
        );
        assert!(err(&a[..3], &[], &times[..3], &o).contains("at least 4"));
    }
}
