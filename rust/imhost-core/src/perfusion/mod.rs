//! Classical CT-perfusion analysis: the reference method users trust and the ground-truth
//! generator of the CNN (perfusion-cnn-gava2023 §2.2).
//!
//! ## Pipeline stages ([`run`]; each a function in `pipeline.rs` with explicit inputs and outputs)
//! 1. `validate`: a 4-D study with ≥ 2 frames and strictly increasing frame times; memory checked.
//! 2. `motion` → `Frames`: a cheap skull-based estimate per frame ([`motion`]); the frames it
//!    finds moving are registered on a ~2 mm grid and resampled when read.
//! 3. `prepare` → `Prepared`: per-voxel statistics, global bolus arrival on the head's mean curve
//!    ([`temporal`]; the frames before it are the baseline), brain mask ([`mask`]).
//! 4. `candidates`: vessel candidates (automatic, or the caller's voxels).
//! 5. `gather` → `Gathered`: brain and candidate curves; the frames are released.
//! 6. `filter_curves`: bilateral filter of the brain curves ([`filter`]).
//! 7. `analysis_grid` → `Analysis`: ΔHU, uniform resampling when frame times are not uniform.
//! 8. `vessels` → `Vessels`: AIF and VOF ([`aif`]), partial-volume scaling of the AIF.
//! 9. `check_acquisition`: truncated bolus, too few frames.
//! 10. `model_input` (CNN and training only, [`model_input`] stops here).
//! 11. `maps` → `RowMaps`: deconvolution ([`deconvolution`]) or box NLR ([`nlr`]) per voxel in
//!     parallel, or the CNN ([`model`]).
//! 12. `readout`: core, hypoperfusion, volumes, mismatch, trial criteria ([`readout`]); when a QC
//!     flag is raised the volumes and criteria are withheld (`null`).
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
mod pipeline;
pub mod preview;
pub mod readout;
pub mod stroke_inputs;
pub mod temporal;
pub mod validation;

use serde::Serialize;

use crate::control::RunControl;
use crate::error::{Error, Result};
use crate::phantom::ctp::RigidMotion;
use crate::volume::{AnyVolumeView, Volume};
use crate::with_view;

use aif::{AifOptions, VesselSelection};
use constants::{CBF_SCALE, CBV_SCALE};
use deconvolution::{Deconvolver, ResiduePeak, SvdMethod, SvdOptions};
use filter::BilateralOptions;
use mask::MaskOptions;
use motion::{MotionOptions, RigidRegistration};
use nlr::{BoxModel, NlrOptions};
use pipeline::Outcome;
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
    /// The process's peak resident memory so far, in MiB (Linux; absent elsewhere).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_memory_mib: Option<f64>,
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
    match with_view!(input, v => pipeline::run_typed(v, options, registration, control, None))? {
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
    match with_view!(input, v => pipeline::run_typed(v, options, registration, control, Some(spec)))? {
        Outcome::Input(input) => Ok(input),
        Outcome::Full(_) => Err(Error::internal("the pipeline did not stop at the model input")),
    }
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
