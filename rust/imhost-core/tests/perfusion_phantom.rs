//! The perfusion pipeline against the phantoms' ground truth, and its bad-input behaviour.

use imhost_core::perfusion::aif::VesselSelection;
use imhost_core::perfusion::validation::compare;
use imhost_core::perfusion::{self, Method, PerfusionOptions};
use imhost_core::phantom::ctp::{self, PhantomKind, PhantomOptions};
use imhost_core::{AnyVolume, ErrorKind, FrameTimes, Geometry, RunControl, TimeSource, Volume};
use ndarray::{Array4, ShapeBuilder};

fn run(input: &AnyVolume, options: &PerfusionOptions) -> imhost_core::Result<perfusion::PerfusionResult> {
    perfusion::run(&input.view(), options, None, &RunControl::none())
}

#[test]
fn anatomical_phantom_meets_the_lesion_targets_at_5_hu() {
    let phantom = ctp::generate(&PhantomOptions::new(PhantomKind::Anatomical)).unwrap();
    let input = AnyVolume::from(phantom.ctp.clone());
    let result = run(&input, &PerfusionOptions::default()).unwrap();
    let a = compare(&result, &phantom.truth, &|_| true);
    // Targets of the issue: core Dice ≥ 0.85, hypoperfusion Dice ≥ 0.9 (default pipeline, oSVD).
    assert!(a.core_dice.unwrap() >= 0.85, "core Dice {:?}", a.core_dice);
    assert!(a.hypoperfusion_dice.unwrap() >= 0.9, "hypoperfusion Dice {:?}", a.hypoperfusion_dice);
    assert!(a.cbv.pearson_r > 0.9 && a.cbv.median_relative_error < 0.15, "CBV {:?}", a.cbv);
    assert!(a.cbf.pearson_r > 0.9, "CBF {:?}", a.cbf);
    let report = &result.report;
    assert!(report.qc_flags.is_empty(), "{:?}", report.qc_flags);
    assert!(report.research_use_only);
    // The AIF was found in the carotids and scaled by the VOF for their 70 % partial volume.
    let aif = report.aif.as_ref().unwrap();
    assert!(phantom.truth.aif_voxels.contains(&aif.voxels[0]), "AIF at {:?}", aif.voxels[0]);
    let vof = report.vof.as_ref().unwrap();
    assert!(phantom.truth.vof_voxels.contains(&vof.voxels[0]), "VOF at {:?}", vof.voxels[0]);
    let (scale, applied) = report.partial_volume_scale.unwrap();
    assert!(applied && (scale - 1.0 / 0.7).abs() < 0.1, "partial-volume scale {scale}");
    // Volumes against the truth masks (ml).
    let v = report.readout.volumes.unwrap();
    let voxel_ml = phantom.ctp.geometry().spacing.iter().product::<f64>() / 1000.0;
    let truth_ml = |m: &Volume<u8>| m.data().iter().filter(|&&x| x == 1).count() as f64 * voxel_ml;
    assert!((v.core_ml - truth_ml(&phantom.truth.core)).abs() < 0.15 * truth_ml(&phantom.truth.core));
    assert!(
        (v.hypoperfusion_ml - truth_ml(&phantom.truth.hypoperfusion)).abs()
            < 0.1 * truth_ml(&phantom.truth.hypoperfusion)
    );
    let criteria = report.readout.criteria.as_ref().unwrap();
    assert_eq!(criteria.defuse3.met, Some(true), "core ≈ 50 ml, mismatch ≈ 100 ml");
    assert!(!criteria.dawn.evaluated);
}

/// Coarse sampling and low dose (issue 21): every 2 s at 8 HU and every 1 s at 12 HU, the default
/// pipeline still meets core Dice ≥ 0.85 and CBF r ≥ 0.85 against the truth. It measures the
/// noise, widens its filter and scales oSVD's oscillation limit with the interval; with the
/// fixed 1 s settings these were core Dice 0.78 / 0.78 and CBF r 0.78 / 0.88.
#[test]
fn anatomical_phantom_meets_the_targets_at_2_s_sampling_and_at_12_hu() {
    for (dt, noise) in [(2.0, 8.0), (1.0, 12.0)] {
        let mut options = PhantomOptions::new(PhantomKind::Anatomical);
        options.noise_hu = noise;
        options.frame_times = Some((0..=(60.0 / dt) as usize).map(|n| n as f64 * dt).collect());
        let phantom = ctp::generate(&options).unwrap();
        let result = run(&AnyVolume::from(phantom.ctp.clone()), &PerfusionOptions::default()).unwrap();
        let a = compare(&result, &phantom.truth, &|_| true);
        assert!(a.core_dice.unwrap() >= 0.85, "{dt} s, {noise} HU: core Dice {:?}", a.core_dice);
        assert!(a.cbf.pearson_r >= 0.85, "{dt} s, {noise} HU: CBF {:?}", a.cbf);
        assert!(a.hypoperfusion_dice.unwrap() >= 0.9, "{dt} s, {noise} HU: hypoperfusion {:?}", a.hypoperfusion_dice);
        // The noise the filter was matched to is the phantom's (±5 %), and the filter widened.
        let pre = &result.report.preprocessing;
        let measured = pre["baseline_noise_hu"].as_f64().unwrap();
        assert!((measured / noise - 1.0).abs() < 0.05, "measured noise {measured} HU for {noise} HU");
        let sigma = pre["bilateral"]["sigma_spatial_mm"].as_f64().unwrap();
        assert!(sigma > 3.5 && sigma <= 5.0, "σ {sigma} mm");
    }
}

#[test]
fn kudo_grid_cbv_and_delay_insensitivity() {
    let phantom = ctp::generate(&PhantomOptions::new(PhantomKind::Kudo)).unwrap();
    let input = AnyVolume::from(phantom.ctp.clone());
    for method in [Method::Bsvd, Method::Osvd] {
        let mut options = PerfusionOptions::default();
        options.method = method;
        let result = run(&input, &options).unwrap();
        let a = compare(&result, &phantom.truth, &|_| true);
        assert!(a.cbv.pearson_r > 0.95, "{method:?} CBV r {}", a.cbv.pearson_r);
        // CBF estimate/truth per delay row stays within 10 % of the zero-delay row.
        let (e, t, d, s) =
            (result.maps.cbf.data(), phantom.truth.cbf.data(), phantom.truth.delay.data(), phantom.truth.tissue.data());
        let mut rows = [(0.0f64, 0usize); 7];
        for n in 0..e.len() {
            let idx = [n % 224, (n / 224) % 224, n / (224 * 224), 0];
            if s[idx] == 1 {
                let r = (f64::from(d[idx]) / 0.5).round() as usize;
                rows[r].0 += f64::from(e[idx] / t[idx]);
                rows[r].1 += 1;
            }
        }
        let mean: Vec<f64> = rows.iter().map(|(a, c)| a / *c as f64).collect();
        for (r, m) in mean.iter().enumerate() {
            assert!(
                (m / mean[0] - 1.0).abs() < 0.1,
                "{method:?}: delay {} s changes CBF by {:.1} %",
                r as f64 * 0.5,
                100.0 * (m / mean[0] - 1.0)
            );
        }
    }
}

#[test]
fn nonuniform_times_and_manual_aif() {
    let mut options = PhantomOptions::new(PhantomKind::Anatomical);
    options.frame_times = Some(ctp::nonuniform_frame_times());
    options.shape = Some([96, 96, 4]);
    let phantom = ctp::generate(&options).unwrap();
    let input = AnyVolume::from(phantom.ctp.clone());
    let mut p = PerfusionOptions::default();
    p.aif = VesselSelection::Voxel(phantom.truth.aif_voxels[phantom.truth.aif_voxels.len() / 2]);
    let result = run(&input, &p).unwrap();
    assert!(result.report.warnings.iter().any(|w| w.contains("not uniform")));
    assert_eq!(result.report.aif.as_ref().unwrap().source, "manual");
    let a = compare(&result, &phantom.truth, &|_| true);
    assert!(a.hypoperfusion_dice.unwrap() > 0.85, "{:?}", a.hypoperfusion_dice);
}

fn small(frames: usize, value: impl Fn(usize, usize) -> f32) -> AnyVolume {
    let data = Array4::from_shape_fn((8, 8, 2, frames).f(), |(i, _, _, t)| value(i, t));
    let times = FrameTimes::uniform(frames, 0.0, 1.0, TimeSource::Caller).unwrap();
    AnyVolume::from(Volume::new_4d(data, Geometry::axis_aligned([1.0; 3], [0.0; 3]).unwrap(), times).unwrap())
}

#[test]
fn bad_inputs_give_clear_errors() {
    let o = PerfusionOptions::default();
    let e = run(&small(1, |_, _| 30.0), &o).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
    assert!(e.message().contains("single frame") || e.message().contains("4-D"), "{e}");
    let e = run(&small(20, |_, _| 30.0), &o).unwrap_err();
    assert!(e.message().contains("constant"), "{e}");
    let e = run(&small(20, |_, _| f32::NAN), &o).unwrap_err();
    assert!(e.message().contains("NaN"), "{e}");
    let e = run(&small(20, |_, t| if t > 5 { 2000.0 } else { 900.0 }), &o).unwrap_err();
    assert!(e.message().contains("no brain tissue"), "{e}");
    let mut manual = PerfusionOptions::default();
    manual.aif = VesselSelection::Voxel([8, 0, 0]);
    let e = run(&small(20, |i, t| 30.0 + (i * t) as f32), &manual).unwrap_err();
    assert!(e.message().contains("outside the image"), "{e}");
    let three_d =
        AnyVolume::from(Volume::new_3d(ndarray::Array3::<f32>::zeros((4, 4, 4).f()), Geometry::default()).unwrap());
    assert_eq!(run(&three_d, &o).unwrap_err().kind(), ErrorKind::Shape);
}

#[test]
fn untrustworthy_studies_raise_flags_and_withhold_volumes() {
    // A scan that ends at the bolus peak: truncated, too few frames.
    let mut options = PhantomOptions::new(PhantomKind::Anatomical);
    options.shape = Some([64, 64, 3]);
    options.frame_times = Some((0..12).map(|n| 2.0 * f64::from(n)).collect());
    let phantom = ctp::generate(&options).unwrap();
    let result = run(&AnyVolume::from(phantom.ctp), &PerfusionOptions::default()).unwrap();
    let flags: Vec<&str> = result.report.qc_flags.iter().map(|f| f.flag).collect();
    assert!(flags.contains(&"bolus_truncated") && flags.contains(&"too_few_frames"), "{flags:?}");
    assert!(result.report.readout.volumes.is_none() && result.report.readout.withheld.is_some());
    // Tissue without any artery: no plausible AIF, maps not computed (NaN), volumes withheld.
    let flat = small(30, |i, t| 30.0 + if t > 10 && t < 20 { (i as f32) * 0.5 } else { 0.0 });
    let result = run(&flat, &PerfusionOptions::default()).unwrap();
    assert!(result.report.qc_flags.iter().any(|f| f.flag == "no_plausible_aif"));
    assert!(result.maps.cbf.data().iter().any(|v| v.is_nan()));
    assert!(result.report.readout.volumes.is_none());
}

#[test]
fn uncorrected_motion_is_flagged() {
    let mut options = PhantomOptions::new(PhantomKind::Anatomical);
    options.shape = Some([64, 64, 6]);
    options.motion = true;
    let phantom = ctp::generate(&options).unwrap();
    let result = run(&AnyVolume::from(phantom.ctp), &PerfusionOptions::default()).unwrap();
    let m = &result.report.motion;
    assert!(
        m.estimated_mm[0] == 0.0 && m.estimated_mm.iter().copied().fold(0.0, f64::max) > 1.0,
        "{:?}",
        m.estimated_mm
    );
    assert!(result.report.qc_flags.iter().any(|f| f.flag == "too_much_motion"));
}

/// Absolute CBF and CBV on a study built here from the indicator-dilution equations with the
/// constants taken from the literature (not from the pipeline or the phantom module, which share
/// theirs): k_H = 0.55/0.75 ≈ 0.73 (large/small-vessel haematocrit, Rempp et al. 1994) and brain
/// density ρ = 1.04 g/ml. A box residue function of MTT 8 s and CBF 30 ml/100 g/min, so
/// CBV = CBF·MTT = 4 ml/100 g: tissue(t) = (ρ/k_H)·(CBF/6000)·∫_{t−MTT}^{t} AIF(τ) dτ.
#[test]
fn absolute_cbf_and_cbv_match_a_hand_computed_study() {
    const K_H: f64 = 0.55 / 0.75;
    const RHO: f64 = 1.04;
    let (cbf, mtt) = (30.0, 8.0);
    let cbv = cbf * mtt / 60.0;
    let aif = |t: f64| -> f64 {
        let x = (t - 8.0) / 4.5;
        if t <= 8.0 { 0.0 } else { 400.0 * x.powi(3) * (3.0 * (1.0 - x)).exp() }
    };
    // ∫_{t−MTT}^{t} AIF by the midpoint rule at 1 ms.
    let integral = |t: f64| -> f64 {
        let h = 1e-3;
        let n = (mtt / h) as usize;
        (0..n).map(|m| aif(t - mtt + (m as f64 + 0.5) * h)).sum::<f64>() * h
    };
    let (ni, nj, nk, nt) = (24, 24, 2, 60);
    let times: Vec<f64> = (0..nt).map(|t| t as f64).collect();
    let tissue: Vec<f64> = times.iter().map(|&t| (RHO / K_H) * (cbf / 6000.0) * integral(t)).collect();
    let data = Array4::from_shape_fn((ni, nj, nk, nt).f(), |(i, j, _, t)| {
        let artery = (4..8).contains(&i) && (4..8).contains(&j);
        (if artery { 40.0 + aif(times[t]) } else { 30.0 + tissue[t] }) as f32
    });
    let geometry = Geometry { spacing: [1.0, 1.0, 5.0], ..Geometry::identity() };
    let study = Volume::from_parts(data, geometry, Some(FrameTimes::new(times, TimeSource::Header).unwrap())).unwrap();
    let study = AnyVolume::from(study);
    for method in [Method::Bsvd, Method::Nlr] {
        let mut options = PerfusionOptions::default();
        options.method = method;
        options.bilateral = None;
        options.aif = VesselSelection::Voxel([5, 5, 0]);
        options.vof = VesselSelection::Voxel([5, 5, 1]);
        let result = run(&study, &options).unwrap();
        let at = |m: &Volume<f32>| f64::from(m.data()[[18, 18, 1, 0]]);
        let (got_cbv, got_cbf) = (at(&result.maps.cbv), at(&result.maps.cbf));
        eprintln!(
            "hand-computed study, {method:?}: CBV {got_cbv:.3} (truth {cbv:.3}), CBF {got_cbf:.2} (truth {cbf:.2})"
        );
        assert!(
            (got_cbv - cbv).abs() < 0.03 * cbv,
            "{method:?}: CBV {got_cbv:.3}, the equations give {cbv:.3} ml/100 g"
        );
        // The box model fits a box residue exactly; truncated SVD rings at the box's edges and
        // reads its peak high (Wu et al. 2003), by 12 % here.
        let tolerance = if method == Method::Nlr { 0.03 } else { 0.15 };
        assert!(
            (got_cbf - cbf).abs() < tolerance * cbf,
            "{method:?}: CBF {got_cbf:.2}, the equations give {cbf:.2} ml/100 g/min"
        );
    }
}
