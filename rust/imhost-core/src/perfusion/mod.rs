//! Classical CT-perfusion analysis: the reference method users trust and the ground-truth
//! generator of the CNN (perfusion-cnn-gava2023 §2.2).
//!
//! ## Pipeline order ([`run`])
//! 1. Validate: a 4-D study with ≥ 2 frames and strictly increasing frame times.
//! 2. Motion ([`motion`]): a cheap skull-based estimate per frame; rigid registration of every
//!    frame to the reference only when the estimate is not negligible and a back end is given.
//! 3. Global bolus arrival on the mean curve of the head's soft tissue ([`temporal`]); the
//!    frames before it are the baseline.
//! 4. Brain mask ([`mask`]) from the baseline image and the peak enhancement.
//! 5. Bilateral filter of the brain curves ([`filter`]).
//! 6. Baseline subtraction (ΔHU) and uniform resampling when frame times are not uniform.
//! 7. AIF and VOF ([`aif`]), partial-volume scaling of the AIF by the VOF.
//! 8. Deconvolution ([`deconvolution`]) or box NLR ([`nlr`]) per voxel, in parallel.
//! 9. Read-out ([`readout`]): core, hypoperfusion, volumes, mismatch, trial criteria.
//! 10. QC flags; when any is raised the volumes and criteria are withheld (`null`).
//!
//! Maps are 0 outside the brain mask. Units: CBF ml/100 g/min, CBV ml/100 g, MTT/TTP/Tmax/delay s.

pub mod aif;
pub mod constants;
pub mod curves;
pub mod deconvolution;
pub mod filter;
pub mod mask;
pub mod model;
pub mod motion;
pub mod nlr;
pub mod preview;
pub mod readout;
pub mod temporal;
pub mod validation;

use std::time::Instant;

use ndarray::{Array3, Axis, ShapeBuilder};
use rayon::prelude::*;
use serde::Serialize;

use crate::control::RunControl;
use crate::dtype::Voxel;
use crate::error::{Error, Result};
use crate::phantom::ctp::RigidMotion;
use crate::volume::{AnyVolumeView, Volume, VolumeView};
use crate::with_view;

use aif::{AifOptions, Candidate, VesselCurve, VesselSelection};
use constants::{CBF_SCALE, CBV_SCALE, K_H, RHO};
use deconvolution::{Deconvolver, ResiduePeak, SvdMethod, SvdOptions};
use filter::BilateralOptions;
use mask::MaskOptions;
use motion::{MotionOptions, RigidRegistration};
use nlr::{BoxModel, NlrOptions};
use readout::{Criteria, Patient, ReadoutOptions, Volumes};

/// Deconvolution / fitting method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Truncated SVD of the Toeplitz matrix.
    Ssvd,
    /// Block-circulant truncated SVD (delay-insensitive).
    Bsvd,
    /// Oscillation-index SVD (the default: delay-insensitive, and its per-voxel threshold keeps
    /// noise from inflating low flows, which matters for the core).
    #[default]
    Osvd,
    /// Tikhonov-regularised circulant deconvolution.
    Tikhonov,
    /// Bennink's box-shaped non-linear regression.
    Nlr,
    /// The perfusion-map CNN (perfusion-cnn-gava2023): CBV, CBF and TTP from the filtered,
    /// registered study without an AIF; needs [`PerfusionOptions::model`]. No Tmax: the
    /// read-out uses the relative-TTP rule ([`readout::lesion_masks_ttp`]).
    Cnn,
}

impl Method {
    /// The classical methods (they need no model).
    pub const ALL: [Method; 5] = [Method::Ssvd, Method::Bsvd, Method::Osvd, Method::Tikhonov, Method::Nlr];

    /// Its lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Ssvd => "ssvd",
            Method::Bsvd => "bsvd",
            Method::Osvd => "osvd",
            Method::Tikhonov => "tikhonov",
            Method::Nlr => "nlr",
            Method::Cnn => "cnn",
        }
    }

    /// Parse a name.
    pub fn from_name(name: &str) -> Result<Self> {
        Method::ALL.into_iter().chain([Method::Cnn]).find(|m| m.name() == name).ok_or_else(|| {
            Error::invalid_argument(format!("unknown method {name:?} (ssvd, bsvd, osvd, tikhonov, nlr, cnn)"))
        })
    }
}

/// Options of the pipeline, in pipeline order.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PerfusionOptions {
    /// Motion estimation and correction.
    pub motion: MotionOptions,
    /// Brain mask.
    pub mask: MaskOptions,
    /// Bilateral filter (`None` to skip).
    pub bilateral: Option<BilateralOptions>,
    /// AIF choice.
    pub aif: VesselSelection,
    /// VOF choice.
    pub vof: VesselSelection,
    /// Automatic vessel search.
    pub vessel_search: AifOptions,
    /// Method.
    pub method: Method,
    /// SVD-family options.
    pub svd: SvdOptions,
    /// NLR options.
    pub nlr: NlrOptions,
    /// Read-out thresholds.
    pub readout: ReadoutOptions,
    /// Age and NIHSS for DAWN.
    pub patient: Patient,
    /// Fewer frames than this raise the `too_few_frames` flag (15).
    pub min_frames: usize,
    /// The map model of [`Method::Cnn`].
    pub model: Option<model::ModelHandle>,
}

impl Default for PerfusionOptions {
    fn default() -> Self {
        PerfusionOptions {
            motion: MotionOptions::default(),
            mask: MaskOptions::default(),
            bilateral: Some(BilateralOptions::default()),
            aif: VesselSelection::Auto,
            vof: VesselSelection::Auto,
            vessel_search: AifOptions::default(),
            method: Method::Osvd,
            svd: SvdOptions::default(),
            nlr: NlrOptions::default(),
            readout: ReadoutOptions::default(),
            patient: Patient::default(),
            min_frames: 15,
            model: None,
        }
    }
}

/// Time curves of a set of voxels, one row of `frames` samples per voxel.
#[derive(Debug, Clone)]
pub struct Curves {
    /// Image size.
    pub shape: [usize; 3],
    /// Voxel spacing in mm.
    pub spacing: [f64; 3],
    /// Samples per curve.
    pub frames: usize,
    /// Image voxel (linear) → row, `u32::MAX` for voxels without a curve.
    pub index: Vec<u32>,
    /// Row → image voxel (linear).
    pub voxels: Vec<usize>,
    /// The curves, row after row.
    pub data: Vec<f32>,
}

/// The maps, in the input geometry.
#[derive(Debug, Clone)]
pub struct PerfusionMaps {
    /// CBF (ml/100 g/min).
    pub cbf: Volume<f32>,
    /// CBV (ml/100 g).
    pub cbv: Volume<f32>,
    /// MTT (s).
    pub mtt: Volume<f32>,
    /// Time to peak (s from the first frame).
    pub ttp: Volume<f32>,
    /// Tmax (s).
    pub tmax: Volume<f32>,
    /// Arrival delay relative to the AIF (s).
    pub delay: Volume<f32>,
}

/// Everything the pipeline produces.
#[derive(Debug, Clone)]
pub struct PerfusionResult {
    /// The maps.
    pub maps: PerfusionMaps,
    /// Core mask (0/1).
    pub core: Volume<u8>,
    /// Hypoperfusion mask (Tmax > 6 s; 0/1).
    pub hypoperfusion: Volume<u8>,
    /// Brain mask used (0/1).
    pub brain: Volume<u8>,
    /// The report.
    pub report: Report,
}

/// A QC flag: the result cannot be trusted as is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QcFlag {
    /// Identifier: `no_plausible_aif`, `bolus_truncated`, `too_much_motion`, `too_few_frames`,
    /// `no_baseline`.
    pub flag: &'static str,
    /// What was found.
    pub message: String,
}

/// A vessel curve in the report.
#[derive(Debug, Clone, Serialize)]
pub struct VesselReport {
    /// How it was chosen: `auto` or `manual`.
    pub source: &'static str,
    /// Voxels `[i, j, k]` averaged, best first.
    pub voxels: Vec<[usize; 3]>,
    /// Patient position (LPS mm) of the first voxel.
    pub position_lps_mm: [f64; 3],
    /// Peak ΔHU, TTP, width, area.
    pub features: aif::CurveFeatures,
    /// ΔHU on the analysis grid (`report.analysis_times_s`).
    pub curve_hu: Vec<f32>,
}

/// Motion section of the report.
#[derive(Debug, Clone, Serialize)]
pub struct MotionReport {
    /// Skull-based estimate per frame (mm).
    pub estimated_mm: Vec<f64>,
    /// Whether frames were registered.
    pub corrected: bool,
    /// The registration back end, when one ran.
    pub backend: Option<String>,
    /// Displacement found by registration per frame (mm, at 80 mm from the centre).
    pub registered_mm: Option<Vec<f64>>,
    /// The rigid parameters per frame, when registered (zero for frames left as they are).
    pub registered: Option<Vec<RigidMotion>>,
    /// How many frames were registered (those whose estimate reached
    /// [`MotionOptions::register_mm`]), when registration ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registered_frames: Option<usize>,
    /// The factors frames were shrunk by for registration (`[1, 1, 1]`: full size).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grid_shrink: Option<[usize; 3]>,
}

/// Timing of one stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageTiming {
    /// Stage name.
    pub stage: &'static str,
    /// Wall time in s.
    pub seconds: f64,
}

/// The read-out, withheld (`None`) when a QC flag is raised.
#[derive(Debug, Clone, Serialize)]
pub struct ReadoutReport {
    /// Reference CBF (ml/100 g/min) and the voxels it came from.
    pub reference_cbf: Option<f64>,
    /// How the reference was chosen.
    pub reference_region: &'static str,
    /// The TTP the relative TTP is measured from (TTP rule only; s).
    pub reference_ttp_s: Option<f64>,
    /// Volumes.
    pub volumes: Option<Volumes>,
    /// Trial criteria.
    pub criteria: Option<Criteria>,
    /// Why volumes and criteria are withheld, if they are.
    pub withheld: Option<String>,
}

/// `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The report's format, [`REPORT_SCHEMA`]: a reader checks it before it trusts a field's
    /// meaning (fields are only added within one version).
    pub schema: &'static str,
    /// Always true.
    pub research_use_only: bool,
    /// The disclaimer.
    pub disclaimer: &'static str,
    /// Software and version.
    pub software: String,
    /// Method.
    pub method: Method,
    /// Units of every map.
    pub units: serde_json::Value,
    /// Constants and method parameters.
    pub constants: serde_json::Value,
    /// Input shape `[ni, nj, nk, frames]`, spacing and frame times.
    pub input: serde_json::Value,
    /// Motion estimate and correction.
    pub motion: MotionReport,
    /// Preprocessing facts (arrival, baseline frames, brain voxels, filter).
    pub preprocessing: serde_json::Value,
    /// Times of the analysis grid (s).
    pub analysis_times_s: Vec<f64>,
    /// The AIF.
    pub aif: Option<VesselReport>,
    /// The VOF.
    pub vof: Option<VesselReport>,
    /// AUC(VOF)/AUC(AIF) and whether the AIF was scaled by it.
    pub partial_volume_scale: Option<(f64, bool)>,
    /// QC flags (empty when none).
    pub qc_flags: Vec<QcFlag>,
    /// Non-blocking remarks.
    pub warnings: Vec<String>,
    /// The clinical read-out.
    pub readout: ReadoutReport,
    /// The model that made the maps ([`Method::Cnn`]).
    pub model: Option<serde_json::Value>,
    /// Wall time per stage.
    pub timings: Vec<StageTiming>,
    /// Worker threads the pipeline ran on (its rayon pool: all cores in the command line, the
    /// context's count through the C ABI).
    pub threads: usize,
}

/// The version of `report.json`'s layout ([`Report::schema`]).
pub const REPORT_SCHEMA: &str = "imhost-perfusion-report/1";

/// The disclaimer every output carries.
pub const DISCLAIMER: &str = "RESEARCH USE ONLY - not for diagnosis or treatment decisions.";

/// Run the whole pipeline on a 4-D study in HU.
pub fn run(
    input: &AnyVolumeView<'_>,
    options: &PerfusionOptions,
    registration: Option<&dyn RigidRegistration>,
    control: &RunControl<'_>,
) -> Result<PerfusionResult> {
    match with_view!(input, v => run_typed(v, options, registration, control, None))? {
        Outcome::Full(result) => Ok(*result),
        Outcome::Input(_) => Err(Error::internal("the pipeline stopped early")),
    }
}

/// Run the pipeline up to the CNN's input (motion, brain mask, filter, ΔHU, the model's time
/// grid): what training pairs and [`Method::Cnn`] feed the network.
pub fn model_input(
    input: &AnyVolumeView<'_>,
    options: &PerfusionOptions,
    spec: &model::ModelInputSpec,
    registration: Option<&dyn RigidRegistration>,
    control: &RunControl<'_>,
) -> Result<model::ModelInput> {
    match with_view!(input, v => run_typed(v, options, registration, control, Some(spec)))? {
        Outcome::Input(input) => Ok(input),
        Outcome::Full(_) => Err(Error::internal("the pipeline did not stop at the model input")),
    }
}

enum Outcome {
    Full(Box<PerfusionResult>),
    Input(model::ModelInput),
}

/// Fill frame `t` of `view` into `out` in linear order, as f32.
fn fill_frame<T: Voxel>(view: &VolumeView<'_, T>, t: usize, out: &mut [f32]) {
    let frame = view.data().index_axis(Axis(3), t);
    let reversed = frame.reversed_axes();
    match reversed.as_slice() {
        Some(s) => out.iter_mut().zip(s).for_each(|(o, v)| *o = v.to_f64() as f32),
        None => out.iter_mut().zip(reversed.iter()).for_each(|(o, v)| *o = v.to_f64() as f32),
    }
}

struct Stages(Vec<StageTiming>, Instant);
impl Stages {
    fn done(&mut self, stage: &'static str) {
        let seconds = self.1.elapsed().as_secs_f64();
        tracing::debug!(stage, seconds, "perfusion stage done");
        self.0.push(StageTiming { stage, seconds });
        self.1 = Instant::now();
    }
}

fn run_typed<T: Voxel>(
    view: &VolumeView<'_, T>,
    options: &PerfusionOptions,
    registration: Option<&dyn RigidRegistration>,
    control: &RunControl<'_>,
    input_only: Option<&model::ModelInputSpec>,
) -> Result<Outcome> {
    let [ni, nj, nk, nt] = view.shape();
    let cnn = match (options.method, &options.model) {
        (Method::Cnn, Some(m)) => Some(m.clone()),
        (Method::Cnn, None) => return Err(Error::invalid_argument("method cnn needs a model (load one first)")),
        _ => None,
    };
    if !view.is_4d() {
        return Err(Error::shape(format!("perfusion needs a 4-D study (x, y, z, time); got {ni}×{nj}×{nk}×{nt}")));
    }
    if nt < 2 {
        return Err(Error::shape("perfusion needs more than one frame; the study has a single frame"));
    }
    let times: Vec<f64> =
        view.frame_times().ok_or_else(|| Error::invalid_argument("the study has no frame times"))?.to_vec();
    temporal::validate_frame_times(&times, nt)?;
    // Bounds the resampled grid before any work (see `uniform_grid`).
    let (_, samples) = temporal::uniform_grid(&times)?;
    // The largest allocations, before any of them: time curves of every voxel twice (gathered
    // and filtered or resampled, f32, at the larger of the frame and sample counts) and about a
    // dozen f32/u8 images (maps, masks, frame buffers).
    let peak = crate::memory::bytes_of(&[ni, nj, nk, nt.max(samples), 2], 4)
        .and_then(|curves| crate::memory::bytes_of(&[ni, nj, nk], 48).and_then(|images| curves.checked_add(images)));
    crate::memory::check(peak, &format!("perfusion of a {ni}×{nj}×{nk}×{nt} study"))?;
    let geometry = *view.geometry();
    let shape = [ni, nj, nk];
    let nvox = ni * nj * nk;
    let voxel_ml = geometry.spacing.iter().product::<f64>() / 1000.0;
    let mut stages = Stages(Vec::new(), Instant::now());
    let mut flags: Vec<QcFlag> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();

    // 2. Motion.
    let source = |t: usize, out: &mut [f32]| fill_frame(view, t, out);
    let estimated = motion::estimate(nt, &source, shape, geometry.spacing, &options.motion);
    let max_estimate = estimated.iter().copied().fold(0.0, f64::max);
    let mut correction: Option<motion::Correction> = None;
    let mut motion_report = MotionReport {
        estimated_mm: estimated,
        corrected: false,
        backend: None,
        registered_mm: None,
        registered: None,
        registered_frames: None,
        grid_shrink: None,
    };
    if max_estimate >= options.motion.negligible_mm {
        match registration.filter(|_| options.motion.correct) {
            Some(reg) => {
                let found = motion::correct(
                    nt,
                    &source,
                    &motion_report.estimated_mm,
                    shape,
                    &geometry,
                    reg,
                    &options.motion,
                    &control.sub(0.0..0.3),
                )?;
                let radius = 80.0;
                let mm: Vec<f64> = found.motions.iter().map(|m| m.max_displacement(radius)).collect();
                if mm.iter().any(|&d| d > options.motion.too_much_mm) {
                    flags.push(QcFlag {
                        flag: "too_much_motion",
                        message: format!(
                            "registration found up to {:.1} mm of motion",
                            mm.iter().copied().fold(0.0, f64::max)
                        ),
                    });
                }
                if found.full_size_frames > 0 {
                    warnings.push(format!(
                        "{} frames were registered at full size: the registration's transform did not reproduce its own resampling about the grid's centre",
                        found.full_size_frames
                    ));
                }
                motion_report.corrected = true;
                motion_report.backend = Some(reg.describe());
                motion_report.registered_mm = Some(mm);
                motion_report.registered = Some(found.motions.clone());
                motion_report.registered_frames = Some(found.coarse_frames + found.full_size_frames);
                motion_report.grid_shrink = Some(found.factor);
                correction = Some(found);
            }
            None => {
                if max_estimate > 1.0 {
                    flags.push(QcFlag {
                        flag: "too_much_motion",
                        message: format!(
                            "the skull moves up to {max_estimate:.1} mm and motion correction did not run"
                        ),
                    });
                } else {
                    warnings.push(format!("small motion ({max_estimate:.2} mm) left uncorrected"));
                }
            }
        }
    }
    stages.done("motion");
    let corrected_source;
    let frame: &(dyn Fn(usize, &mut [f32]) + Sync) = match &correction {
        Some(c) => {
            corrected_source = move |t: usize, out: &mut [f32]| c.frame(t, &source, out);
            &corrected_source
        }
        None => &source,
    };
    let base_progress = if correction.is_some() { 0.3 } else { 0.0 };
    let pre = control.sub(base_progress..base_progress + 0.15);

    // 3. Per-voxel statistics and the head's mean curve.
    let mut buffer = vec![0.0f32; nvox];
    frame(0, &mut buffer);
    let head: Vec<bool> = buffer.iter().map(|&v| (-50.0..=150.0).contains(&v)).collect();
    let head_count = head.iter().filter(|&&h| h).count().max(1);
    let mut maximum = buffer.clone();
    let mut minimum = buffer.clone();
    let mut sum = vec![0.0f32; nvox];
    let mut valid = vec![true; nvox];
    let mut q = vec![0.0f64; nt];
    for (t, q_t) in q.iter_mut().enumerate() {
        pre.report("reading frames", t as f64 / nt as f64)?;
        frame(t, &mut buffer);
        *q_t =
            buffer.iter().zip(&head).filter(|(_, h)| **h).map(|(&v, _)| f64::from(v)).sum::<f64>() / head_count as f64;
        maximum
            .par_chunks_mut(65536)
            .zip(minimum.par_chunks_mut(65536))
            .zip(sum.par_chunks_mut(65536))
            .zip(valid.par_chunks_mut(65536))
            .zip(buffer.par_chunks(65536))
            .for_each(|((((mx, mn), s), ok), b)| {
                for n in 0..b.len() {
                    let v = b[n];
                    if !v.is_finite() {
                        ok[n] = false;
                        continue;
                    }
                    mx[n] = mx[n].max(v);
                    mn[n] = mn[n].min(v);
                    s[n] += v;
                }
            });
    }
    if !valid.iter().any(|&v| v) {
        return Err(Error::invalid_argument("every voxel holds NaN or infinite values"));
    }
    let non_finite = valid.iter().filter(|&&v| !v).count();
    if non_finite > 0 {
        warnings.push(format!("{non_finite} voxels hold NaN or infinite values and were left out"));
    }
    if maximum.iter().zip(&minimum).zip(&valid).all(|((a, b), ok)| !ok || a - b < 1e-3) {
        return Err(Error::invalid_argument("the study is constant over time: no contrast passage to analyse"));
    }
    let arrival = temporal::bolus_arrival(&q, &times);
    if arrival.frame == 0 {
        flags.push(QcFlag {
            flag: "no_baseline",
            message: "the bolus is already arriving in the first frame: no pre-contrast baseline".into(),
        });
    }
    let nb = arrival.baseline_frames;
    let mut baseline = vec![0.0f32; nvox];
    for t in 0..nb {
        frame(t, &mut buffer);
        baseline.iter_mut().zip(&buffer).for_each(|(b, &v)| *b += v / nb as f32);
    }
    let enhancement: Vec<f32> = maximum.iter().zip(&baseline).map(|(m, b)| m - b).collect();
    let temporal_mean: Vec<f32> = sum.iter().map(|s| s / nt as f32).collect();
    // Tissue never reads below −100 HU: a voxel that does in some frame left the field of view
    // (after motion correction, resampling writes air there) or is corrupt; it is no brain.
    let valid_tissue: Vec<bool> = valid.iter().zip(&minimum).map(|(&ok, &m)| ok && m > -100.0).collect();
    drop(minimum);

    // 4. Brain mask.
    let brain = mask::brain_mask(shape, &baseline, &enhancement, &valid_tissue, &options.mask);
    let brain_count = brain.iter().filter(|&&b| b).count();
    if brain_count == 0 {
        return Err(Error::invalid_argument(format!(
            "no brain tissue found: no voxel has a baseline within [{}, {}] HU away from vessels",
            options.mask.min_hu, options.mask.max_hu
        )));
    }
    stages.done("statistics and brain mask");

    // Vessel candidates: enhancing soft-tissue voxels (automatic), or the caller's voxels.
    let check_voxel = |v: &[usize; 3]| -> Result<usize> {
        if v[0] >= ni || v[1] >= nj || v[2] >= nk {
            return Err(Error::invalid_argument(format!(
                "vessel voxel {v:?} is outside the image of {ni}×{nj}×{nk} voxels"
            )));
        }
        Ok(v[0] + ni * (v[1] + nj * v[2]))
    };
    let manual_voxels = |sel: &VesselSelection| -> Result<Option<Vec<usize>>> {
        match sel {
            VesselSelection::Auto => Ok(None),
            VesselSelection::Voxel(v) => Ok(Some(vec![check_voxel(v)?])),
            VesselSelection::Voxels(vs) if vs.is_empty() => Err(Error::invalid_argument("the vessel mask is empty")),
            VesselSelection::Voxels(vs) => vs.iter().map(check_voxel).collect::<Result<Vec<_>>>().map(Some),
        }
    };
    let manual_aif = manual_voxels(&options.aif)?;
    let manual_vof = manual_voxels(&options.vof)?;
    // Voxels within two in-plane voxels of bone (baseline > 300 HU) are no AIF candidates: at a
    // skull edge, residual motion (or its correction) swings hundreds of HU that mimic a bolus.
    let mut near_bone = vec![false; nvox];
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                if baseline[i + ni * (j + nj * k)] > 300.0 {
                    for y in j.saturating_sub(2)..(j + 3).min(nj) {
                        for x in i.saturating_sub(2)..(i + 3).min(ni) {
                            near_bone[x + ni * (y + nj * k)] = true;
                        }
                    }
                }
            }
        }
    }
    let mut auto_candidates: Vec<usize> = (0..nvox)
        .filter(|&v| {
            valid[v]
                && !near_bone[v]
                && (-50.0..=150.0).contains(&baseline[v])
                && f64::from(enhancement[v]) >= options.vessel_search.min_peak_hu
        })
        .collect();
    if auto_candidates.len() > 20_000 {
        auto_candidates.select_nth_unstable_by(20_000, |&a, &b| enhancement[b].total_cmp(&enhancement[a]));
        auto_candidates.truncate(20_000);
    }
    let mut vessel_voxels = auto_candidates.clone();
    vessel_voxels.extend(manual_aif.iter().flatten());
    vessel_voxels.extend(manual_vof.iter().flatten());
    vessel_voxels.sort_unstable();
    vessel_voxels.dedup();

    // Gather the curves of brain and vessel voxels.
    let mut curves = Curves {
        shape,
        spacing: geometry.spacing,
        frames: nt,
        index: vec![u32::MAX; nvox],
        voxels: (0..nvox).filter(|&v| brain[v]).collect(),
        data: vec![],
    };
    for (r, &v) in curves.voxels.iter().enumerate() {
        curves.index[v] = r as u32;
    }
    let rows = curves.voxels.len();
    curves.data = vec![0.0; rows * nt];
    let mut vessel_data = vec![0.0f32; vessel_voxels.len() * nt];
    for t in 0..nt {
        pre.report("gathering curves", t as f64 / nt as f64)?;
        frame(t, &mut buffer);
        for (r, &v) in curves.voxels.iter().enumerate() {
            curves.data[r * nt + t] = buffer[v];
        }
        for (r, &v) in vessel_voxels.iter().enumerate() {
            vessel_data[r * nt + t] = buffer[v];
        }
    }
    drop(buffer);
    drop(correction);
    stages.done("gathering curves");

    // 5. Bilateral filter.
    if let Some(b) = &options.bilateral {
        let guide: Vec<f32> = curves.voxels.iter().map(|&v| temporal_mean[v]).collect();
        filter::bilateral(&mut curves, &guide, b, &control.sub(base_progress + 0.15..base_progress + 0.3))?;
    }
    stages.done("bilateral filter");

    // 6. ΔHU and the uniform analysis grid.
    let subtract_baseline = |data: &mut [f32]| {
        data.par_chunks_mut(nt).for_each(|c| {
            let b = c[..nb].iter().sum::<f32>() / nb as f32;
            c.iter_mut().for_each(|x| *x -= b);
        })
    };
    subtract_baseline(&mut curves.data);
    subtract_baseline(&mut vessel_data);
    let uniform = crate::volume::uniform_interval(&times).is_some();
    let (dt, count) = temporal::uniform_grid(&times)?;
    let grid: Vec<f64> = (0..count).map(|n| times[0] + n as f64 * dt).collect();
    let resample = |data: Vec<f32>| -> Vec<f32> {
        if uniform {
            return data;
        }
        let mut out = vec![0.0f32; data.len() / nt * count];
        out.par_chunks_mut(count)
            .zip(data.par_chunks(nt))
            .for_each(|(o, c)| temporal::resample_linear(&times, c, times[0], dt, count, o));
        out
    };
    curves.data = resample(std::mem::take(&mut curves.data));
    curves.frames = count;
    let vessel_data = resample(vessel_data);
    if !uniform {
        warnings.push(format!("frame times are not uniform: curves resampled to every {dt:.3} s ({count} samples)"));
    }
    let n = count;

    // 7. AIF and VOF.
    let candidates_of = |voxels: &[usize]| -> Vec<Candidate> {
        voxels
            .iter()
            .filter_map(|v| vessel_voxels.binary_search(v).ok())
            .map(|r| Candidate {
                voxel: [vessel_voxels[r] % ni, (vessel_voxels[r] / ni) % nj, vessel_voxels[r] / (ni * nj)],
                curve: vessel_data[r * n..(r + 1) * n].to_vec(),
            })
            .collect()
    };
    let auto = candidates_of(&auto_candidates);
    let (aif_curve, aif_source): (Option<VesselCurve>, &str) = match &manual_aif {
        Some(v) => (aif::manual(&candidates_of(v), dt), "manual"),
        None => (aif::auto_aif(&auto, dt, &options.vessel_search), "auto"),
    };
    let plausible = aif_curve
        .as_ref()
        .is_some_and(|a| a.features.peak >= options.vessel_search.min_peak_hu && a.features.washes_out);
    if !plausible {
        flags.push(QcFlag {
            flag: "no_plausible_aif",
            message: match &aif_curve {
                None => format!("no voxel enhances by ≥ {} HU and washes out again", options.vessel_search.min_peak_hu),
                Some(a) => format!(
                    "the chosen AIF peaks at {:.0} HU{}",
                    a.features.peak,
                    if a.features.washes_out { "" } else { " and does not wash out" }
                ),
            },
        });
    }
    let vof_curve = match (&manual_vof, &aif_curve) {
        (Some(v), _) => aif::manual(&candidates_of(v), dt),
        (None, Some(a)) => aif::auto_vof(&auto, dt, a.features.ttp, &options.vessel_search),
        (None, None) => None,
    };
    let (vof_source, mut pv) = ("auto", None);
    let vof_source = if manual_vof.is_some() { "manual" } else { vof_source };
    let mut aif_for_deconvolution: Option<Vec<f32>> = aif_curve.as_ref().map(|a| a.curve.clone());
    if let (Some(a), Some(v)) = (&aif_curve, &vof_curve) {
        let (ratio, applied) = aif::partial_volume_scale(&a.features, &v.features);
        if applied {
            if let Some(c) = aif_for_deconvolution.as_mut() {
                c.iter_mut().for_each(|x| *x *= ratio as f32);
            }
        } else {
            warnings.push(format!("AUC(VOF)/AUC(AIF) = {ratio:.2} is outside [1, 3]: the AIF was not rescaled"));
        }
        pv = Some((ratio, applied));
    } else if aif_curve.is_some() {
        warnings.push("no venous output found: the AIF was not corrected for partial volume".into());
    }
    // Truncation: the tissue or the AIF has not washed out by the last frame.
    let mut brain_mean = vec![0.0f64; n];
    for c in curves.data.chunks_exact(n) {
        brain_mean.iter_mut().zip(c).for_each(|(m, &v)| *m += f64::from(v) / rows as f64);
    }
    let brain_peak = brain_mean.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let aif_truncated = aif_curve.as_ref().is_some_and(|a| {
        let last = f64::from(*a.curve.last().unwrap_or(&0.0));
        last > 0.5 * a.features.peak || a.features.ttp >= (n as f64 - 2.0) * dt
    });
    if brain_mean[n - 1] > 0.5 * brain_peak || aif_truncated {
        flags.push(QcFlag {
            flag: "bolus_truncated",
            message: format!(
                "the scan ends before wash-out (tissue at {:.0} % of its peak{} in the last frame)",
                100.0 * brain_mean[n - 1] / brain_peak.max(1e-9),
                if aif_truncated { ", AIF not washed out" } else { "" }
            ),
        });
    }
    if nt < options.min_frames {
        flags.push(QcFlag {
            flag: "too_few_frames",
            message: format!("{nt} frames; at least {} are needed for a trustworthy deconvolution", options.min_frames),
        });
    }
    stages.done("aif and vof");

    // 8a. The CNN's input: vessels first, then the filtered brain curves.
    let cnn_spec = cnn.as_ref().map(|m| m.0.input_spec());
    let mut model_input = None;
    if let Some(spec) = input_only.or(cnn_spec.as_ref()) {
        let sets = [
            model::CurveRows { voxels: &vessel_voxels, data: &vessel_data },
            model::CurveRows { voxels: &curves.voxels, data: &curves.data },
        ];
        let input = model::build_input(spec, shape, &grid, &sets, &curves.voxels, arrival.time)?;
        if input_only.is_some() {
            return Ok(Outcome::Input(input));
        }
        model_input = Some(input);
        stages.done("model input");
    }

    // 8. Deconvolution.
    let mut cbf = vec![0.0f32; rows];
    let mut cbv = vec![0.0f32; rows];
    let mut tmax = vec![0.0f32; rows];
    let mut delay = vec![0.0f32; rows];
    let mut ttp = vec![0.0f32; rows];
    for (r, c) in curves.data.chunks_exact(n).enumerate() {
        let (mut best, mut at) = (f32::NEG_INFINITY, 0);
        for (m, &v) in c.iter().enumerate() {
            if v > best {
                best = v;
                at = m;
            }
        }
        ttp[r] = grid[at] as f32;
    }
    let decon_control = control.sub(base_progress + 0.3..0.97);
    match aif_for_deconvolution.as_ref().filter(|_| plausible) {
        _ if cnn.is_some() => {
            let (model, input) = (cnn.as_ref().expect("checked").0.as_ref(), model_input.as_ref().expect("built"));
            let out = model.predict(input, &decon_control)?;
            if out.len() != nk * 3 * nj * ni {
                return Err(Error::internal(format!(
                    "the model returned {} values for {nk} slices of 3×{nj}×{ni}",
                    out.len()
                )));
            }
            let scale = model.output_scale();
            let unit = |x: f32| if x.is_nan() { x } else { x.clamp(0.0, 1.0) };
            for (r, &v) in curves.voxels.iter().enumerate() {
                let (i, j, k) = (v % ni, (v / ni) % nj, v / (ni * nj));
                let at = |c: usize| unit(out[((k * 3 + c) * nj + j) * ni + i]);
                cbv[r] = at(0) * scale.cbv as f32;
                cbf[r] = at(1) * scale.cbf as f32;
                ttp[r] = (input.start_s + f64::from(at(2)) * scale.ttp_s) as f32;
                tmax[r] = f32::NAN;
                delay[r] = f32::NAN;
            }
        }
        Some(a) => {
            let aif_area: f64 = a.iter().map(|&x| f64::from(x)).sum::<f64>() * dt;
            let a64: Vec<f64> = a.iter().map(|&x| f64::from(x)).collect();
            let aif_arrival = nlr::arrival_time(&a64, dt);
            let chunk = 4096;
            let total = rows.div_ceil(chunk).max(1);
            let done = std::sync::atomic::AtomicUsize::new(0);
            let kernel = Kernel::new(options, a, dt)?;
            curves
                .data
                .par_chunks(chunk * n)
                .zip(cbf.par_chunks_mut(chunk))
                .zip(cbv.par_chunks_mut(chunk))
                .zip(tmax.par_chunks_mut(chunk))
                .zip(delay.par_chunks_mut(chunk))
                .try_for_each(|((((c, f), v), tm), d)| -> Result<()> {
                    decon_control.check()?;
                    kernel.apply(c, n, dt, aif_area, aif_arrival, f, v, tm, d);
                    let k = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    tracing::trace!(chunk = k, of = total, voxels = f.len(), "deconvolved a chunk");
                    decon_control.report("deconvolution", k as f64 / total as f64)
                })?;
        }
        None => {
            for m in [&mut cbf, &mut cbv, &mut tmax, &mut delay] {
                m.iter_mut().for_each(|x| *x = f32::NAN);
            }
        }
    }
    stages.done(if cnn.is_some() { "cnn inference" } else { "deconvolution" });

    // 9. Maps, masks and read-out.
    let to_image = |values: &[f32]| -> Vec<f32> {
        let mut image = vec![0.0f32; nvox];
        for (r, &v) in curves.voxels.iter().enumerate() {
            image[v] = values[r];
        }
        image
    };
    let mtt: Vec<f32> = cbf
        .iter()
        .zip(&cbv)
        .map(|(&f, &v)| {
            if f > 1e-3 {
                (60.0 * v / f).min(60.0)
            } else if f.is_nan() {
                f32::NAN
            } else {
                0.0
            }
        })
        .collect();
    let (cbf_img, tmax_img, ttp_img) = (to_image(&cbf), to_image(&tmax), to_image(&ttp));
    let (masks, ttp_reference) = if cnn.is_some() {
        readout::lesion_masks_ttp(&cbf_img, &ttp_img, &brain, shape, &options.readout)
    } else {
        (readout::lesion_masks(&cbf_img, &tmax_img, &brain, &options.readout), None)
    };
    let volume3 = |values: Vec<f32>| -> Result<Volume<f32>> {
        Volume::new_3d(
            Array3::from_shape_vec((ni, nj, nk).f(), values).map_err(|e| Error::internal(e.to_string()))?,
            geometry,
        )
    };
    let mask3 = |values: &[bool]| -> Result<Volume<u8>> {
        Volume::new_3d(
            Array3::from_shape_vec((ni, nj, nk).f(), values.iter().map(|&b| u8::from(b)).collect())
                .map_err(|e| Error::internal(e.to_string()))?,
            geometry,
        )
    };
    let maps = PerfusionMaps {
        cbf: volume3(cbf_img)?,
        cbv: volume3(to_image(&cbv))?,
        mtt: volume3(to_image(&mtt))?,
        ttp: volume3(ttp_img)?,
        // The CNN estimates neither: NaN everywhere rather than a 0 that reads as "no delay".
        tmax: volume3(if cnn.is_some() { vec![f32::NAN; nvox] } else { tmax_img })?,
        delay: volume3(if cnn.is_some() { vec![f32::NAN; nvox] } else { to_image(&delay) })?,
    };
    let withheld = (!flags.is_empty()).then(|| {
        format!(
            "QC flags raised ({}): volumes and criteria are not reported",
            flags.iter().map(|f| f.flag).collect::<Vec<_>>().join(", ")
        )
    });
    let (vols, crit) = if withheld.is_none() {
        let v = readout::volumes(&masks, voxel_ml);
        (Some(v), Some(readout::criteria(&v, &options.patient)))
    } else {
        (None, None)
    };
    stages.done("read-out");
    let vessel_report = |c: &Option<VesselCurve>, source: &'static str| {
        c.as_ref().map(|c| VesselReport {
            source,
            voxels: c.voxels.clone(),
            position_lps_mm: geometry.index_to_lps(c.voxels[0].map(|x| x as f64)),
            features: c.features,
            curve_hu: c.curve.clone(),
        })
    };
    let report = Report {
        schema: REPORT_SCHEMA,
        research_use_only: true,
        disclaimer: DISCLAIMER,
        software: format!("imhost {}", env!("CARGO_PKG_VERSION")),
        method: options.method,
        units: serde_json::json!({"cbf": "ml/100 g/min", "cbv": "ml/100 g", "mtt": "s", "ttp": "s", "tmax": "s", "delay": "s", "volumes": "ml"}),
        constants: serde_json::json!({
            "k_h": K_H, "rho_g_per_ml": RHO, "cbf_scale": CBF_SCALE, "cbv_scale": CBV_SCALE,
            "svd": options.svd, "nlr": options.nlr, "readout": options.readout,
            "tmax_convention": "time of the maximum of the flow-scaled residue function relative to the AIF (NLR: the fitted delay, the onset of the box plateau)",
        }),
        input: serde_json::json!({"shape": [ni, nj, nk, nt], "spacing_mm": geometry.spacing, "frame_times_s": times, "voxel_ml": voxel_ml}),
        motion: motion_report,
        preprocessing: serde_json::json!({
            "bolus_arrival_s": arrival.time, "baseline_frames": nb, "brain_voxels": brain_count,
            "brain_ml": brain_count as f64 * voxel_ml, "bilateral": options.bilateral, "mask": options.mask,
            "analysis_step_s": dt,
        }),
        analysis_times_s: grid,
        aif: vessel_report(&aif_curve, if aif_source == "manual" { "manual" } else { "auto" }),
        vof: vessel_report(&vof_curve, vof_source),
        partial_volume_scale: pv,
        qc_flags: flags,
        warnings,
        readout: ReadoutReport {
            reference_cbf: masks.reference_cbf.map(|r| r.0),
            reference_region: if cnn.is_some() {
                "5 %-trimmed mean CBF of brain voxels with relative TTP ≤ the hypoperfusion threshold"
            } else {
                "5 %-trimmed mean CBF of brain voxels with Tmax ≤ the hypoperfusion threshold"
            },
            reference_ttp_s: ttp_reference,
            volumes: vols,
            criteria: crit,
            withheld,
        },
        timings: stages.0,
        threads: rayon::current_num_threads(),
        model: cnn.as_ref().map(|m| m.0.describe()),
    };
    control.report("done", 1.0)?;
    Ok(Outcome::Full(Box::new(PerfusionResult {
        maps,
        core: mask3(&masks.core)?,
        hypoperfusion: mask3(&masks.hypoperfusion)?,
        brain: mask3(&brain)?,
        report,
    })))
}

/// The per-voxel solver for the chosen method.
enum Kernel {
    Svd(Deconvolver),
    Nlr(BoxModel, NlrOptions),
}

impl Kernel {
    fn new(options: &PerfusionOptions, aif: &[f32], dt: f64) -> Result<Self> {
        let svd = |m| Deconvolver::new(m, aif, dt, &options.svd).map(Kernel::Svd);
        match options.method {
            Method::Ssvd => svd(SvdMethod::Standard),
            Method::Bsvd => svd(SvdMethod::BlockCirculant),
            Method::Osvd => svd(SvdMethod::Oscillation),
            Method::Tikhonov => svd(SvdMethod::Tikhonov),
            Method::Nlr => Ok(Kernel::Nlr(BoxModel::new(aif, dt), options.nlr)),
            Method::Cnn => Err(Error::internal("the CNN has no deconvolution kernel")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        curves: &[f32],
        n: usize,
        dt: f64,
        aif_area: f64,
        aif_arrival: f64,
        cbf: &mut [f32],
        cbv: &mut [f32],
        tmax: &mut [f32],
        delay: &mut [f32],
    ) {
        match self {
            Kernel::Svd(d) => {
                let mut peaks = vec![ResiduePeak::default(); cbf.len()];
                d.apply(curves, &mut peaks);
                let mut c64 = vec![0.0f64; n];
                for (r, c) in curves.chunks_exact(n).enumerate() {
                    cbf[r] = (f64::from(peaks[r].max_k) * CBF_SCALE) as f32;
                    tmax[r] = peaks[r].tmax;
                    let area: f64 = c.iter().map(|&x| f64::from(x)).sum::<f64>() * dt;
                    cbv[r] = (CBV_SCALE * area / aif_area).max(0.0) as f32;
                    c64.iter_mut().zip(c).for_each(|(a, &b)| *a = f64::from(b));
                    delay[r] = (nlr::arrival_time(&c64, dt) - aif_arrival) as f32;
                }
            }
            Kernel::Nlr(model, opts) => {
                let mut scratch = Vec::new();
                for (r, c) in curves.chunks_exact(n).enumerate() {
                    let fit = model.fit(c, opts, &mut scratch);
                    cbf[r] = (fit.flow * CBF_SCALE) as f32;
                    cbv[r] = (fit.flow * fit.mtt * CBV_SCALE) as f32;
                    tmax[r] = fit.delay as f32;
                    delay[r] = fit.delay as f32;
                }
            }
        }
    }
}
