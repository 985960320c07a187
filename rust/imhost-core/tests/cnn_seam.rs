//! The seam between the pipeline and a learned map model, isolated with stand-in models (the
//! real network is tested in imhost-models and through the CLI): the input tensor the model is
//! given, how its [0, 1] outputs become maps, and the relative-TTP read-out on the phantom.

use std::sync::{Arc, Mutex};

use imhost_core::perfusion::model::{ModelHandle, ModelInput, ModelInputSpec, ModelOutputScale, PerfusionMapModel};
use imhost_core::perfusion::validation::dice;
use imhost_core::perfusion::{self, Method, PerfusionOptions};
use imhost_core::phantom::ctp::{self, PhantomKind, PhantomOptions};
use imhost_core::{AnyVolume, ErrorKind, Result, RunControl, Volume};

/// Answers with the phantom's truth (normalised as the network's targets are), and remembers
/// the input it was given.
struct Oracle {
    cbv: Vec<f32>,
    cbf: Vec<f32>,
    delay: Vec<f32>,
    seen: Mutex<Option<ModelInput>>,
}

impl PerfusionMapModel for Oracle {
    fn input_spec(&self) -> ModelInputSpec {
        ModelInputSpec::default()
    }
    fn output_scale(&self) -> ModelOutputScale {
        ModelOutputScale::for_input(&self.input_spec())
    }
    fn predict(&self, input: &ModelInput, _: &RunControl<'_>) -> Result<Vec<f32>> {
        let [nk, _, nj, ni] = input.shape;
        let scale = self.output_scale();
        let mut out = vec![0.0f32; nk * 3 * nj * ni];
        for k in 0..nk {
            for p in 0..nj * ni {
                let v = k * nj * ni + p;
                out[(k * 3) * nj * ni + p] = self.cbv[v] / scale.cbv as f32;
                out[(k * 3 + 1) * nj * ni + p] = self.cbf[v] / scale.cbf as f32;
                // TTP ≈ arrival (19 s for the standard AIF) + delay, relative to the grid start.
                out[(k * 3 + 2) * nj * ni + p] =
                    ((19.0 + f64::from(self.delay[v]) - input.start_s) / scale.ttp_s) as f32;
            }
        }
        *self.seen.lock().unwrap() = Some(input.clone());
        Ok(out)
    }
    fn describe(&self) -> serde_json::Value {
        serde_json::json!({"id": "oracle"})
    }
}

fn flat(v: &Volume<f32>) -> Vec<f32> {
    v.data().t().iter().copied().collect()
}

fn mask(v: &Volume<u8>) -> Vec<bool> {
    v.data().t().iter().map(|&x| x == 1).collect()
}

#[test]
fn truth_through_the_seam_gives_the_truths_lesions_by_relative_ttp() {
    let phantom = ctp::generate(&PhantomOptions::new(PhantomKind::Anatomical)).unwrap();
    let t = &phantom.truth;
    let oracle =
        Arc::new(Oracle { cbv: flat(&t.cbv), cbf: flat(&t.cbf), delay: flat(&t.delay), seen: Mutex::new(None) });
    let mut options = PerfusionOptions::default();
    options.method = Method::Cnn;
    options.model = Some(ModelHandle(oracle.clone()));
    let input = AnyVolume::from(phantom.ctp.clone());
    let r = perfusion::run(&input.view(), &options, None, &RunControl::none()).unwrap();
    // Maps come back in physical units inside the brain, Tmax is not estimated.
    let (cbf, truth_cbf, brain) = (flat(&r.maps.cbf), flat(&t.cbf), mask(&r.brain));
    let inside: Vec<usize> = (0..brain.len()).filter(|&n| brain[n] && truth_cbf[n] > 0.0).collect();
    assert!(inside.iter().all(|&n| (cbf[n] - truth_cbf[n]).abs() < 1e-3 * truth_cbf[n].max(1.0)));
    assert!(flat(&r.maps.tmax).iter().all(|x| x.is_nan()));
    assert_eq!(r.report.method, Method::Cnn);
    assert_eq!(r.report.model.as_ref().unwrap()["id"], "oracle");
    // Lesions by relative TTP > 4.5 s and rCBF < 30 % match the truth.
    let core = dice(&mask(&r.core), &mask(&t.core)).unwrap();
    let hyp = dice(&mask(&r.hypoperfusion), &mask(&t.hypoperfusion)).unwrap();
    assert!(core > 0.9 && hyp > 0.9, "core Dice {core}, hypoperfusion Dice {hyp}");
    let v = r.report.readout.volumes.unwrap();
    assert_eq!(v.severe_hypoperfusion_ml, None, "no Tmax > 10 s class under the TTP rule");
    assert!(r.report.readout.reference_ttp_s.is_some());
    // The input: 32 time channels from 3 s before the arrival, ΔHU/100; the carotid carries the
    // bolus (peak ≈ 0.7 × 440 ΔHU = 3.1 units), air is 0.
    let seen = oracle.seen.lock().unwrap().clone().unwrap();
    let [ni, nj, nk, _] = phantom.ctp.shape();
    assert_eq!(seen.shape, [nk, 32, nj, ni]);
    let arrival = r.report.preprocessing["bolus_arrival_s"].as_f64().unwrap();
    assert!((seen.start_s - (arrival - 3.0)).abs() < 1e-9);
    let [ai, aj, ak] = t.aif_voxels[0];
    let artery: Vec<f32> = (0..32).map(|c| seen.data[((ak * 32 + c) * nj + aj) * ni + ai]).collect();
    let peak = artery.iter().copied().fold(f32::MIN, f32::max);
    assert!((2.6..3.4).contains(&peak), "carotid peak {peak} (ΔHU / 100)");
    assert!(artery[0].abs() < 0.2, "baseline ≈ 0 before the arrival");
    assert!((0..32).all(|c| seen.data[(c * nj) * ni] == 0.0), "air corner is 0");
}

#[test]
fn cnn_without_a_model_and_a_model_that_misbehaves_are_errors() {
    let mut small = PhantomOptions::new(PhantomKind::Anatomical);
    small.shape = Some([48, 48, 2]);
    let input = AnyVolume::from(ctp::generate(&small).unwrap().ctp);
    let mut options = PerfusionOptions::default();
    options.method = Method::Cnn;
    let e = perfusion::run(&input.view(), &options, None, &RunControl::none()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.message().contains("needs a model"), "{e}");

    struct Short;
    impl PerfusionMapModel for Short {
        fn input_spec(&self) -> ModelInputSpec {
            ModelInputSpec::default()
        }
        fn output_scale(&self) -> ModelOutputScale {
            ModelOutputScale::for_input(&self.input_spec())
        }
        fn predict(&self, _: &ModelInput, _: &RunControl<'_>) -> Result<Vec<f32>> {
            Ok(vec![0.0; 3])
        }
        fn describe(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
    }
    options.model = Some(ModelHandle(Arc::new(Short)));
    let e = perfusion::run(&input.view(), &options, None, &RunControl::none()).unwrap_err();
    assert!(e.message().contains("returned 3 values"), "{e}");
}
