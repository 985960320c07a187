//! The seam between the classical pipeline and a learned map estimator (perfusion-cnn-gava2023):
//! what the network sees, how its outputs become maps, and the trait a model implements.
//!
//! The core stays free of LibTorch: `imhost-models` implements [`PerfusionMapModel`]; the
//! pipeline only builds the input tensor and scales the outputs back.
//!
//! ## The input ([`ModelInputSpec`])
//! The paper feeds "the filtered registered images" as T time channels. Here: the same motion
//! correction and bilateral filter as the classical methods, baseline-subtracted (ΔHU), on a fixed
//! time grid of `time_points` samples every `interval_s` seconds starting `pre_arrival_s` before
//! the global bolus arrival (linear interpolation; the first and last frame are held beyond the
//! acquisition). That grid maps any acquisition — 1 s, 2 s, non-uniform, every second frame
//! dropped — onto the channels the network was trained on. Voxels outside the brain mask and the
//! enhancing vessels are 0: the network sees tissue and the vessels it infers the input from.
//! Values are ΔHU clipped to `clip_hu` and divided by `scale_hu`.
//!
//! ## The output
//! Three channels in the paper's order CBV, CBF, TTP, each in [0, 1]:
//! `physical = clamp(value, 0, 1) · scale` (TTP: seconds after the grid's start).

use serde::{Deserialize, Serialize};

use crate::control::RunControl;
use crate::error::{Error, Result};

/// How a model wants its input (read from its manifest).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelInputSpec {
    /// Channels: time points of the grid.
    pub time_points: usize,
    /// Grid step (s).
    pub interval_s: f64,
    /// The grid starts this long before the bolus arrival (s).
    pub pre_arrival_s: f64,
    /// ΔHU range kept.
    pub clip_hu: [f64; 2],
    /// ΔHU per input unit.
    pub scale_hu: f64,
}

impl Default for ModelInputSpec {
    /// 32 samples every 1.5 s from 3 s before the arrival (48 s: the first pass and the start
    /// of recirculation), ΔHU in [−20, 600] / 100.
    fn default() -> Self {
        ModelInputSpec {
            time_points: 32,
            interval_s: 1.5,
            pre_arrival_s: 3.0,
            clip_hu: [-20.0, 600.0],
            scale_hu: 100.0,
        }
    }
}

impl ModelInputSpec {
    /// Check the values.
    pub fn validate(&self) -> Result<()> {
        let ok = (2..=1024).contains(&self.time_points)
            && self.interval_s.is_finite()
            && self.interval_s > 0.0
            && self.pre_arrival_s.is_finite()
            && self.clip_hu[0] < self.clip_hu[1]
            && self.scale_hu.is_finite()
            && self.scale_hu > 0.0;
        if ok { Ok(()) } else { Err(Error::invalid_argument(format!("invalid model input specification {self:?}"))) }
    }
}

/// Physical value of a unit output, per channel (CBV ml/100 g, CBF ml/100 g/min, TTP s).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelOutputScale {
    /// CBV at output 1.
    pub cbv: f64,
    /// CBF at output 1.
    pub cbf: f64,
    /// TTP after the grid start at output 1.
    pub ttp_s: f64,
}

impl ModelOutputScale {
    /// CBV 10 ml/100 g, CBF 100 ml/100 g/min, TTP the grid's length.
    pub fn for_input(spec: &ModelInputSpec) -> Self {
        ModelOutputScale { cbv: 10.0, cbf: 100.0, ttp_s: spec.time_points as f64 * spec.interval_s }
    }
}

/// The network's input for a study: slices × time points × rows × columns (C order, the
/// column index `i` fastest), with the brain mask and the grid's start.
#[derive(Debug, Clone)]
pub struct ModelInput {
    /// `[slices, time_points, rows, columns]` = `[nk, T, nj, ni]`.
    pub shape: [usize; 4],
    /// The values.
    pub data: Vec<f32>,
    /// Brain mask `[nk, nj, ni]`.
    pub brain: Vec<bool>,
    /// Time of the grid's first sample (s, on the study's clock).
    pub start_s: f64,
}

/// A learned estimator of CBV, CBF and TTP.
pub trait PerfusionMapModel: Send + Sync {
    /// The input it expects.
    fn input_spec(&self) -> ModelInputSpec;
    /// The scale of its outputs.
    fn output_scale(&self) -> ModelOutputScale;
    /// Predict `[nk, 3, nj, ni]` (CBV, CBF, TTP in [0, 1]) from `input`.
    fn predict(&self, input: &ModelInput, control: &RunControl<'_>) -> Result<Vec<f32>>;
    /// Identifier, version and device, for the report.
    fn describe(&self) -> serde_json::Value;
}

/// Rows of ΔHU curves on the analysis grid: `voxels[r]` (linear index) owns
/// `data[r·samples .. (r+1)·samples]`.
pub(crate) struct CurveRows<'a> {
    pub voxels: &'a [usize],
    pub data: &'a [f32],
}

/// A shared handle on a loaded model (for [`super::PerfusionOptions::model`]).
#[derive(Clone)]
pub struct ModelHandle(pub std::sync::Arc<dyn PerfusionMapModel>);

impl std::fmt::Debug for ModelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ModelHandle({})", self.0.describe())
    }
}

/// Fill the input tensor from curve rows on the uniform analysis grid `grid` (later rows win
/// where voxels repeat).
pub(crate) fn build_input(
    spec: &ModelInputSpec,
    shape: [usize; 3],
    grid: &[f64],
    sets: &[CurveRows<'_>],
    brain_voxels: &[usize],
    arrival_s: f64,
) -> Result<ModelInput> {
    spec.validate()?;
    let [ni, nj, nk] = shape;
    let t_count = spec.time_points;
    let len =
        nk.checked_mul(t_count).and_then(|n| n.checked_mul(nj * ni)).filter(|&n| n <= 1 << 31).ok_or_else(|| {
            Error::too_large(format!("a model input of {nk}×{t_count}×{nj}×{ni} values is too large"))
        })?;
    let start_s = arrival_s - spec.pre_arrival_s;
    let mut data = vec![0.0f32; len];
    let mut sample = vec![0.0f32; t_count];
    let (lo, hi) = (spec.clip_hu[0] as f32, spec.clip_hu[1] as f32);
    let scale = 1.0 / spec.scale_hu as f32;
    let n = grid.len();
    for set in sets {
        for (r, &v) in set.voxels.iter().enumerate() {
            let row = &set.data[r * n..(r + 1) * n];
            super::temporal::resample_linear(grid, row, start_s, spec.interval_s, t_count, &mut sample);
            let (i, j, k) = (v % ni, (v / ni) % nj, v / (ni * nj));
            for (t, &x) in sample.iter().enumerate() {
                data[((k * t_count + t) * nj + j) * ni + i] = x.clamp(lo, hi) * scale;
            }
        }
    }
    let mut brain = vec![false; ni * nj * nk];
    for &v in brain_voxels {
        brain[v] = true;
    }
    Ok(ModelInput { shape: [nk, t_count, nj, ni], data, brain, start_s })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_layout_and_time_grid_by_hand() {
        // A 3×2×2 image; voxel (2, 1, 1) holds a ramp ΔHU = 10·t on a 1 s grid from t = 0.
        let shape = [3, 2, 2];
        let grid: Vec<f64> = (0..20).map(f64::from).collect();
        let voxel = 2 + 3 * (1 + 2);
        let row: Vec<f32> = grid.iter().map(|&t| 10.0 * t as f32).collect();
        let spec = ModelInputSpec {
            time_points: 4,
            interval_s: 2.0,
            pre_arrival_s: 1.0,
            clip_hu: [-20.0, 100.0],
            scale_hu: 10.0,
        };
        let input =
            build_input(&spec, shape, &grid, &[CurveRows { voxels: &[voxel], data: &row }], &[voxel], 5.0).unwrap();
        assert_eq!(input.shape, [2, 4, 2, 3]);
        assert_eq!(input.start_s, 4.0);
        // Grid 4, 6, 8, 10 s → ΔHU 40, 60, 80, 100 → /10.
        // Slice k = 1 starts at channel row 4 (k · T).
        let at = |t: usize| input.data[((4 + t) * 2 + 1) * 3 + 2];
        assert_eq!([at(0), at(1), at(2), at(3)], [4.0, 6.0, 8.0, 10.0]);
        assert_eq!(input.data.iter().filter(|&&x| x != 0.0).count(), 4, "every other voxel is 0");
        assert!(input.brain[voxel]);
    }
}
