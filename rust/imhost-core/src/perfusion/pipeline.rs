//! The classical pipeline as named stages, each a function with explicit inputs and outputs:
//!
//! ```text
//! Study ─validate→ Study ─motion→ Frames ─prepare→ Prepared ─candidates→ Candidates
//!       ─gather_vessels→ vessel curves ─AnalysisGrid→ ΔHU ─vessels→ Vessels ─Deconvolution
//!   classical:  slice_by_slice (per slice: gather → SliceStream filter → grid → kernel) → RowMaps
//!   CNN/train:  gather_brain → Curves ─filter_curves→ ─grid→ Analysis ─model_input→ ─cnn_maps→ RowMaps
//!       ─check_acquisition (brain mean) ─readout→ PerfusionResult
//! ```
//!
//! The classical methods never hold every brain curve: slice by slice, the curves are gathered,
//! filtered (the pass across slices once the slices it reaches are in), put on the analysis
//! grid and deconvolved, so the peak is the input plus a few slices; the arithmetic per voxel
//! is that of one pass over every curve (a test checks it bit for bit).
//!
//! [`super::run`] and [`super::model_input`] chain them in [`run_typed`]; a new consumer (the
//! stroke-lesion model needs maps, the temporal MIP and cropped frames) takes the stages it
//! needs instead of a flag threaded through one body. QC flags and warnings collect in [`Qc`]
//! as the stages find them; stage times in [`Stages`].

use std::time::Instant;

use ndarray::{Array3, Axis, ShapeBuilder};
use rayon::prelude::*;

use super::aif::{self, Candidate, VesselCurve, VesselSelection};
use super::constants::{CBF_SCALE, CBV_SCALE, K_H, RHO};
use super::filter::{Bilateral, RowGrid, SliceStream};
use super::motion::{self, RigidRegistration};
use super::{
    Curves, DISCLAIMER, Kernel, Method, MotionReport, PerfusionMaps, PerfusionOptions, PerfusionResult, QcFlag,
    REPORT_SCHEMA, ReadoutReport, Report, StageTiming, VesselReport, filter, mask, model, nlr, readout, temporal,
};
use crate::control::RunControl;
use crate::dtype::Voxel;
use crate::error::{Error, Result};
use crate::geometry::Geometry;
use crate::volume::{Volume, VolumeView};

/// What the pipeline returns: the whole result, or the CNN's input when asked to stop there.
pub(super) enum Outcome {
    Full(Box<PerfusionResult>),
    Input(model::ModelInput),
}

/// QC flags (the result cannot be trusted as is) and remarks, in the order found.
#[derive(Default)]
pub(super) struct Qc {
    flags: Vec<QcFlag>,
    warnings: Vec<String>,
}

impl Qc {
    fn flag(&mut self, flag: &'static str, message: String) {
        self.flags.push(QcFlag { flag, message });
    }

    fn warn(&mut self, warning: String) {
        self.warnings.push(warning);
    }
}

/// Wall time per stage.
pub(super) struct Stages(Vec<StageTiming>, Instant);

impl Stages {
    fn new() -> Self {
        Stages(Vec::new(), Instant::now())
    }

    fn done(&mut self, stage: &'static str) {
        let seconds = self.1.elapsed().as_secs_f64();
        self.done_with(stage, seconds);
    }

    /// A stage that ran interleaved with others: its own accumulated time.
    fn add(&mut self, stage: &'static str, seconds: f64) {
        tracing::debug!(stage, seconds, "perfusion stage done");
        self.0.push(StageTiming { stage, seconds, peak_memory_mib: peak_memory_mib() });
    }

    /// The last of interleaved stages: its own time, and the clock restarts.
    fn done_with(&mut self, stage: &'static str, seconds: f64) {
        tracing::debug!(stage, seconds, "perfusion stage done");
        self.0.push(StageTiming { stage, seconds, peak_memory_mib: peak_memory_mib() });
        self.1 = Instant::now();
    }
}

/// The process's peak resident set so far (`VmHWM`), where the system tells it.
fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some((kib / 1024.0 * 10.0).round() / 10.0)
}

/// Fill frame `t` of `view` into `out` in linear order, as f32.
fn fill_frame<T: Voxel>(view: &VolumeView<'_, T>, t: usize, out: &mut [f32]) {
    let frame = view.data().index_axis(Axis(3), t);
    let reversed = frame.reversed_axes();
    const CHUNK: usize = 1 << 16;
    match reversed.as_slice() {
        Some(s) => out.par_chunks_mut(CHUNK).zip(s.par_chunks(CHUNK)).for_each(|(o, s)| {
            o.iter_mut().zip(s).for_each(|(o, v)| *o = v.to_f64() as f32);
        }),
        None => out.iter_mut().zip(reversed.iter()).for_each(|(o, v)| *o = v.to_f64() as f32),
    }
}

/// The study, validated: its size, grid, frame times and analysis step count.
pub(super) struct Study<'v, 'a, T: Voxel> {
    view: &'v VolumeView<'a, T>,
    shape: [usize; 3],
    frames: usize,
    geometry: Geometry,
    times: Vec<f64>,
}

impl<T: Voxel> Study<'_, '_, T> {
    fn voxels(&self) -> usize {
        self.shape.iter().product()
    }

    fn index(&self, v: usize) -> [usize; 3] {
        let [ni, nj, _] = self.shape;
        [v % ni, (v / ni) % nj, v / (ni * nj)]
    }
}

/// Stage 1: a 4-D study with ≥ 2 frames and strictly increasing frame times, whose largest
/// allocations fit in memory (checked before any of them).
fn validate<'v, 'a, T: Voxel>(view: &'v VolumeView<'a, T>) -> Result<Study<'v, 'a, T>> {
    let [ni, nj, nk, nt] = view.shape();
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
    // The largest allocations, before any of them: time curves of every voxel once (the CNN
    // holds them all; the classical methods a few slices; f32, at the larger of the frame and
    // sample counts) and about a dozen f32/u8 images (maps, masks, frame buffers).
    let peak = crate::memory::bytes_of(&[ni, nj, nk, nt.max(samples)], 4)
        .and_then(|curves| crate::memory::bytes_of(&[ni, nj, nk], 48).and_then(|images| curves.checked_add(images)));
    crate::memory::check(peak, &format!("perfusion of a {ni}×{nj}×{nk}×{nt} study"))?;
    Ok(Study { view, shape: [ni, nj, nk], frames: nt, geometry: *view.geometry(), times })
}

/// The frames as every later stage reads them: the study's own, or motion-corrected ones
/// (resampled through their transform when read; no corrected copy is held).
pub(super) struct Frames<'s, 'v, 'a, T: Voxel> {
    study: &'s Study<'v, 'a, T>,
    correction: Option<motion::Correction>,
}

/// How [`Frames::gather`] reads one frame.
enum Reading<'c> {
    /// The study's own values.
    Direct,
    /// Interpolated through `ijk ↦ A·ijk + b`.
    Moved([[f64; 3]; 3], [f64; 3]),
    /// A corrected frame held in memory.
    Held(&'c [f32]),
}

impl<T: Voxel> Frames<'_, '_, '_, T> {
    /// Fill frame `t` into `out` (the frame's voxels in linear order).
    fn fill(&self, t: usize, out: &mut [f32]) {
        let view = self.study.view;
        match &self.correction {
            Some(c) => c.frame(t, &|t, o: &mut [f32]| fill_frame(view, t, o), out),
            None => fill_frame(view, t, out),
        }
    }

    /// The time curves of `voxels` (linear indices), row after row, into `out`: the values
    /// [`fill`](Self::fill) gives, bit for bit, but read voxel block by voxel block in parallel
    /// (each block's rows stay in cache while the frames stream past) instead of frame by frame
    /// with a scattered write per voxel.
    fn gather(&self, voxels: &[usize], out: &mut [f32], control: &RunControl<'_>) -> Result<()> {
        let study = self.study;
        let ([ni, nj, _], nt) = (study.shape, study.frames);
        let data = study.view.data();
        let readings: Vec<Reading<'_>> = (0..nt)
            .map(|t| match self.correction.as_ref().map(|c| &c.frames[t]) {
                None | Some(motion::FrameMotion::Still) => Reading::Direct,
                Some(motion::FrameMotion::Transform(transform)) => {
                    let (a, b) = transform.affine(&study.geometry);
                    Reading::Moved(a, b)
                }
                Some(motion::FrameMotion::Resampled(frame)) => Reading::Held(frame),
            })
            .collect();
        const BLOCK: usize = 2048;
        let blocks = voxels.len().div_ceil(BLOCK).max(1);
        let done = std::sync::atomic::AtomicUsize::new(0);
        out.par_chunks_mut(BLOCK * nt).zip(voxels.par_chunks(BLOCK)).try_for_each(|(rows, block)| -> Result<()> {
            control.check()?;
            let ijk: Vec<[usize; 3]> = block.iter().map(|&v| study.index(v)).collect();
            for (t, reading) in readings.iter().enumerate() {
                let frame = data.index_axis(Axis(3), t);
                let at = |i: usize, j: usize, k: usize| frame[[i, j, k]].to_f64() as f32;
                match reading {
                    Reading::Direct => {
                        for (r, &[i, j, k]) in ijk.iter().enumerate() {
                            rows[r * nt + t] = at(i, j, k);
                        }
                    }
                    Reading::Moved(a, b) => {
                        for (r, &v) in ijk.iter().enumerate() {
                            rows[r * nt + t] = motion::interpolate(&at, study.shape, motion::moved_index(a, b, v));
                        }
                    }
                    Reading::Held(frame) => {
                        for (r, &[i, j, k]) in ijk.iter().enumerate() {
                            rows[r * nt + t] = frame[i + ni * (j + nj * k)];
                        }
                    }
                }
            }
            let k = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            control.report("gathering curves", k as f64 / blocks as f64)
        })
    }
}

/// Stage 2: the skull-based motion estimate and, where it finds motion and a back end is given,
/// rigid registration of the moving frames.
fn motion<'s, 'v, 'a, T: Voxel>(
    study: &'s Study<'v, 'a, T>,
    options: &PerfusionOptions,
    registration: Option<&dyn RigidRegistration>,
    control: &RunControl<'_>,
    qc: &mut Qc,
) -> Result<(Frames<'s, 'v, 'a, T>, MotionReport)> {
    let view = study.view;
    let source = |t: usize, out: &mut [f32]| fill_frame(view, t, out);
    let estimated = motion::estimate(study.frames, &source, study.shape, study.geometry.spacing, &options.motion);
    let max_estimate = estimated.iter().copied().fold(0.0, f64::max);
    let mut correction: Option<motion::Correction> = None;
    let mut report = MotionReport {
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
                    study.frames,
                    &source,
                    &report.estimated_mm,
                    study.shape,
                    &study.geometry,
                    reg,
                    &options.motion,
                    &control.sub(0.0..0.3),
                )?;
                let radius = 80.0;
                let mm: Vec<f64> = found.motions.iter().map(|m| m.max_displacement(radius)).collect();
                if mm.iter().any(|&d| d > options.motion.too_much_mm) {
                    qc.flag(
                        "too_much_motion",
                        format!("registration found up to {:.1} mm of motion", mm.iter().copied().fold(0.0, f64::max)),
                    );
                }
                if found.full_size_frames > 0 {
                    qc.warn(format!(
                        "{} frames were registered at full size: the registration's transform did not reproduce its own resampling about the grid's centre",
                        found.full_size_frames
                    ));
                }
                report.corrected = true;
                report.backend = Some(reg.describe());
                report.registered_mm = Some(mm);
                report.registered = Some(found.motions.clone());
                report.registered_frames = Some(found.coarse_frames + found.full_size_frames);
                report.grid_shrink = Some(found.factor);
                correction = Some(found);
            }
            None => {
                if max_estimate > 1.0 {
                    qc.flag(
                        "too_much_motion",
                        format!("the skull moves up to {max_estimate:.1} mm and motion correction did not run"),
                    );
                } else {
                    qc.warn(format!("small motion ({max_estimate:.2} mm) left uncorrected"));
                }
            }
        }
    }
    Ok((Frames { study, correction }, report))
}

/// Per-voxel statistics of the (corrected) frames and the brain mask.
pub(super) struct Prepared {
    /// Mean of the baseline frames (HU).
    baseline: Vec<f32>,
    /// Largest value minus baseline (HU).
    enhancement: Vec<f32>,
    /// Mean over all frames (the bilateral filter's guide).
    temporal_mean: Vec<f32>,
    /// Finite and never below −100 HU in any frame: in view after motion correction and no
    /// corrupt value (the brain and the vessels may only come from these voxels).
    valid: Vec<bool>,
    /// The brain mask.
    brain: Vec<bool>,
    brain_count: usize,
    arrival: temporal::BolusArrival,
    /// The brain's noise in HU per frame: its pooled variance over the baseline frames
    /// (`None` with fewer than two baseline frames).
    noise_hu: Option<f64>,
}

impl Prepared {
    /// The bilateral filter's guide of `voxels`' rows: their temporal mean.
    fn guide(&self, voxels: &[usize]) -> Vec<f32> {
        voxels.iter().map(|&v| self.temporal_mean[v]).collect()
    }
}

/// Stage 3: one pass over the frames for each voxel's range, sum and finiteness and the head's
/// mean curve; the bolus arrival on that curve and the baseline before it; the brain mask.
fn prepare<T: Voxel>(
    frames: &Frames<'_, '_, '_, T>,
    options: &PerfusionOptions,
    control: &RunControl<'_>,
    qc: &mut Qc,
) -> Result<Prepared> {
    let (study, nt) = (frames.study, frames.study.frames);
    let nvox = study.voxels();
    let mut buffer = vec![0.0f32; nvox];
    frames.fill(0, &mut buffer);
    let head: Vec<bool> = buffer.iter().map(|&v| (-50.0..=150.0).contains(&v)).collect();
    let head_count = head.iter().filter(|&&h| h).count().max(1);
    let mut maximum = buffer.clone();
    let mut minimum = buffer.clone();
    let mut sum = vec![0.0f32; nvox];
    let mut valid = vec![true; nvox];
    let mut q = vec![0.0f64; nt];
    const CHUNK: usize = 65536;
    for (t, q_t) in q.iter_mut().enumerate() {
        control.report("reading frames", t as f64 / nt as f64)?;
        frames.fill(t, &mut buffer);
        // The head's sum in chunks, added in chunk order (deterministic for any thread count).
        let head_sums: Vec<f64> = maximum
            .par_chunks_mut(CHUNK)
            .zip(minimum.par_chunks_mut(CHUNK))
            .zip(sum.par_chunks_mut(CHUNK))
            .zip(valid.par_chunks_mut(CHUNK))
            .zip(buffer.par_chunks(CHUNK).zip(head.par_chunks(CHUNK)))
            .map(|((((mx, mn), s), ok), (b, h))| {
                let mut head_sum = 0.0f64;
                for n in 0..b.len() {
                    let v = b[n];
                    if h[n] {
                        head_sum += f64::from(v);
                    }
                    if !v.is_finite() {
                        ok[n] = false;
                        continue;
                    }
                    mx[n] = mx[n].max(v);
                    mn[n] = mn[n].min(v);
                    s[n] += v;
                }
                head_sum
            })
            .collect();
        *q_t = head_sums.iter().sum::<f64>() / head_count as f64;
    }
    if !valid.iter().any(|&v| v) {
        return Err(Error::invalid_argument("every voxel holds NaN or infinite values"));
    }
    let non_finite = valid.iter().filter(|&&v| !v).count();
    if non_finite > 0 {
        qc.warn(format!("{non_finite} voxels hold NaN or infinite values and were left out"));
    }
    if maximum.iter().zip(&minimum).zip(&valid).all(|((a, b), ok)| !ok || a - b < 1e-3) {
        return Err(Error::invalid_argument("the study is constant over time: no contrast passage to analyse"));
    }
    let arrival = temporal::bolus_arrival(&q, &study.times);
    if arrival.frame == 0 {
        qc.flag("no_baseline", "the bolus is already arriving in the first frame: no pre-contrast baseline".into());
    }
    let nb = arrival.baseline_frames;
    let mut baseline = vec![0.0f32; nvox];
    // Each voxel's baseline variance from its deviations from the first frame (shifted sums:
    // no cancellation in f32).
    let mut first = Vec::new();
    let mut squares = vec![0.0f32; if nb >= 2 { nvox } else { 0 }];
    for t in 0..nb {
        frames.fill(t, &mut buffer);
        if t == 0 && nb >= 2 {
            first = buffer.clone();
        }
        baseline.par_chunks_mut(CHUNK).zip(buffer.par_chunks(CHUNK)).for_each(|(b, f)| {
            b.iter_mut().zip(f).for_each(|(b, &v)| *b += v / nb as f32);
        });
        if nb >= 2 {
            squares.par_chunks_mut(CHUNK).zip(buffer.par_chunks(CHUNK).zip(first.par_chunks(CHUNK))).for_each(
                |(q, (f, f0))| {
                    q.iter_mut().zip(f.iter().zip(f0)).for_each(|(q, (&v, &v0))| *q += (v - v0) * (v - v0));
                },
            );
        }
    }
    let enhancement: Vec<f32> = maximum.iter().zip(&baseline).map(|(m, b)| m - b).collect();
    let temporal_mean: Vec<f32> = sum.iter().map(|s| s / nt as f32).collect();
    // Tissue and blood never read below −100 HU: a voxel that does in some frame left the field
    // of view (after motion correction, resampling writes air there) or is corrupt; it is neither
    // brain nor a vessel (an artery at the slab's edge that leaves it late in the study would
    // otherwise give an AIF that falls to air).
    if frames.correction.is_some() {
        let left =
            (0..nvox).filter(|&v| valid[v] && minimum[v] <= -100.0 && (-50.0..=150.0).contains(&baseline[v])).count();
        if left > 0 {
            qc.warn(format!(
                "{left} head voxels left the field of view in some frame after motion correction and were left out"
            ));
        }
    }
    valid.iter_mut().zip(&minimum).for_each(|(ok, &m)| *ok = *ok && m > -100.0);
    drop(minimum);
    let brain = mask::brain_mask(study.shape, &baseline, &enhancement, &valid, &options.mask);
    let brain_count = brain.iter().filter(|&&b| b).count();
    if brain_count == 0 {
        return Err(Error::invalid_argument(format!(
            "no brain tissue found: no voxel has a baseline within [{}, {}] HU away from vessels",
            options.mask.min_hu, options.mask.max_hu
        )));
    }
    // The noise: the brain's pooled baseline variance (unbiased per voxel, n − 1).
    let noise_hu = (nb >= 2).then(|| {
        let (sum, count) = (0..nvox).filter(|&v| brain[v]).fold((0.0f64, 0usize), |(s, c), v| {
            let n = nb as f64;
            let d = f64::from(baseline[v] - first[v]) * n;
            (s + (f64::from(squares[v]) - d * d / n) / (n - 1.0), c + 1)
        });
        (sum / count.max(1) as f64).max(0.0).sqrt()
    });
    Ok(Prepared { baseline, enhancement, temporal_mean, valid, brain, brain_count, arrival, noise_hu })
}

/// Vessel candidates: the automatic search's and the caller's voxels (linear indices).
pub(super) struct Candidates {
    manual_aif: Option<Vec<usize>>,
    manual_vof: Option<Vec<usize>>,
    /// Enhancing soft-tissue voxels away from bone (at most 20 000, the most enhancing).
    auto: Vec<usize>,
    /// All of them, sorted and unique: the voxels whose curves are gathered.
    all: Vec<usize>,
}

/// Stage 4: the voxels an AIF or VOF may come from.
fn candidates<T: Voxel>(
    study: &Study<'_, '_, T>,
    prepared: &Prepared,
    options: &PerfusionOptions,
) -> Result<Candidates> {
    let [ni, nj, nk] = study.shape;
    let nvox = study.voxels();
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
    let (baseline, enhancement) = (&prepared.baseline, &prepared.enhancement);
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
    let mut auto: Vec<usize> = (0..nvox)
        .filter(|&v| {
            prepared.valid[v]
                && !near_bone[v]
                && (-50.0..=150.0).contains(&baseline[v])
                && f64::from(enhancement[v]) >= options.vessel_search.min_peak_hu
        })
        .collect();
    if auto.len() > 20_000 {
        auto.select_nth_unstable_by(20_000, |&a, &b| enhancement[b].total_cmp(&enhancement[a]));
        auto.truncate(20_000);
    }
    let mut all = auto.clone();
    all.extend(manual_aif.iter().flatten());
    all.extend(manual_vof.iter().flatten());
    all.sort_unstable();
    all.dedup();
    Ok(Candidates { manual_aif, manual_vof, auto, all })
}

/// The brain's rows: brain voxels in increasing order (row → voxel) and the inverse map.
pub(super) struct BrainRows {
    /// Image voxel (linear) → row, `u32::MAX` outside the brain.
    index: Vec<u32>,
    /// Row → image voxel (linear), increasing.
    voxels: Vec<usize>,
}

impl BrainRows {
    fn of(prepared: &Prepared) -> Self {
        let voxels: Vec<usize> = (0..prepared.brain.len()).filter(|&v| prepared.brain[v]).collect();
        let mut index = vec![u32::MAX; prepared.brain.len()];
        for (r, &v) in voxels.iter().enumerate() {
            index[v] = r as u32;
        }
        BrainRows { index, voxels }
    }

    fn rows(&self) -> usize {
        self.voxels.len()
    }
}

/// Stage 5a: the time curves of the vessel candidates, rows in the order of
/// [`Candidates::all`], in HU on the study's frame times.
fn gather_vessels<T: Voxel>(
    frames: &Frames<'_, '_, '_, T>,
    candidates: &Candidates,
    control: &RunControl<'_>,
) -> Result<Vec<f32>> {
    let mut vessels = vec![0.0f32; candidates.all.len() * frames.study.frames];
    frames.gather(&candidates.all, &mut vessels, control)?;
    Ok(vessels)
}

/// Stage 5b (the CNN and training, which read every curve at once): the brain's curves, in HU
/// on the study's frame times. The frames (and a motion correction's transforms) are released
/// after this stage.
fn gather_brain<T: Voxel>(frames: Frames<'_, '_, '_, T>, brain: BrainRows, control: &RunControl<'_>) -> Result<Curves> {
    let study = frames.study;
    let mut data = vec![0.0f32; brain.rows() * study.frames];
    frames.gather(&brain.voxels, &mut data, control)?;
    Ok(Curves {
        shape: study.shape,
        spacing: study.geometry.spacing,
        frames: study.frames,
        index: brain.index,
        voxels: brain.voxels,
        data,
    })
}

/// Stage 6 (CNN and training): the bilateral filter of the brain curves, guided by the
/// temporal mean.
fn filter_curves(
    curves: &mut Curves,
    prepared: &Prepared,
    options: &PerfusionOptions,
    control: &RunControl<'_>,
) -> Result<()> {
    if let Some(b) = &options.bilateral {
        filter::bilateral(curves, &prepared.guide(&curves.voxels), b, control)?;
    }
    Ok(())
}

/// Stage 7: the uniform analysis grid, and how curves get onto it: each curve's baseline
/// subtracted (ΔHU), then resampled when the frame times are not uniform.
pub(super) struct AnalysisGrid {
    /// Sample times (s).
    grid: Vec<f64>,
    /// Step (s).
    dt: f64,
    times: Vec<f64>,
    baseline_frames: usize,
    uniform: bool,
}

impl AnalysisGrid {
    fn new(times: &[f64], baseline_frames: usize, qc: &mut Qc) -> Result<Self> {
        let uniform = crate::volume::uniform_interval(times).is_some();
        let (dt, count) = temporal::uniform_grid(times)?;
        let grid: Vec<f64> = (0..count).map(|n| times[0] + n as f64 * dt).collect();
        if !uniform {
            qc.warn(format!("frame times are not uniform: curves resampled to every {dt:.3} s ({count} samples)"));
        }
        Ok(AnalysisGrid { grid, dt, times: times.to_vec(), baseline_frames, uniform })
    }

    fn samples(&self) -> usize {
        self.grid.len()
    }

    /// Curves (rows of one sample per frame) as ΔHU on the grid.
    fn apply(&self, mut data: Vec<f32>) -> Vec<f32> {
        let (times, nt, nb) = (&self.times, self.times.len(), self.baseline_frames);
        data.par_chunks_mut(nt).for_each(|c| {
            let b = c[..nb].iter().sum::<f32>() / nb as f32;
            c.iter_mut().for_each(|x| *x -= b);
        });
        if self.uniform {
            return data;
        }
        let (count, dt) = (self.samples(), self.dt);
        let mut out = vec![0.0f32; data.len() / nt * count];
        out.par_chunks_mut(count)
            .zip(data.par_chunks(nt))
            .for_each(|(o, c)| temporal::resample_linear(times, c, times[0], dt, count, o));
        out
    }
}

/// The arterial input and venous output chosen, and what deconvolution uses.
pub(super) struct Vessels {
    aif: Option<VesselCurve>,
    aif_source: &'static str,
    vof: Option<VesselCurve>,
    vof_source: &'static str,
    /// AUC(VOF)/AUC(AIF) and whether the AIF was scaled by it.
    partial_volume: Option<(f64, bool)>,
    /// The AIF after partial-volume scaling.
    for_deconvolution: Option<Vec<f32>>,
    /// Peaks high enough, washes out and has a positive area.
    plausible: bool,
}

/// Stage 8: the AIF and VOF (automatic or the caller's voxels, `curves`: the candidates' curves
/// on the analysis grid) and the AIF's partial-volume scaling by the VOF.
fn vessels<T: Voxel>(
    study: &Study<'_, '_, T>,
    grid: &AnalysisGrid,
    curves: &[f32],
    candidates: &Candidates,
    options: &PerfusionOptions,
    qc: &mut Qc,
) -> Vessels {
    let (n, dt) = (grid.samples(), grid.dt);
    let candidates_of = |voxels: &[usize]| -> Vec<Candidate> {
        voxels
            .iter()
            .filter_map(|v| candidates.all.binary_search(v).ok())
            .map(|r| Candidate { voxel: study.index(candidates.all[r]), curve: curves[r * n..(r + 1) * n].to_vec() })
            .collect()
    };
    let auto = candidates_of(&candidates.auto);
    let (aif_curve, aif_source): (Option<VesselCurve>, &'static str) = match &candidates.manual_aif {
        Some(v) => (aif::manual(&candidates_of(v), dt), "manual"),
        None => (aif::auto_aif(&auto, dt, &options.vessel_search), "auto"),
    };
    let plausible = aif_curve.as_ref().is_some_and(|a| {
        a.features.peak >= options.vessel_search.min_peak_hu && a.features.washes_out && a.features.auc > 0.0
    });
    if !plausible {
        qc.flag(
            "no_plausible_aif",
            match &aif_curve {
                None => format!("no voxel enhances by ≥ {} HU and washes out again", options.vessel_search.min_peak_hu),
                Some(a) => format!(
                    "the chosen AIF peaks at {:.0} HU{}{}",
                    a.features.peak,
                    if a.features.washes_out { "" } else { " and does not wash out" },
                    if a.features.auc > 0.0 {
                        ""
                    } else {
                        " and its area is not positive (it falls below its baseline)"
                    }
                ),
            },
        );
    }
    let vof_curve = match (&candidates.manual_vof, &aif_curve) {
        (Some(v), _) => aif::manual(&candidates_of(v), dt),
        (None, Some(a)) => aif::auto_vof(&auto, dt, a.features.ttp, &options.vessel_search),
        (None, None) => None,
    };
    let vof_source = if candidates.manual_vof.is_some() { "manual" } else { "auto" };
    let mut pv = None;
    let mut for_deconvolution: Option<Vec<f32>> = aif_curve.as_ref().map(|a| a.curve.clone());
    if let (Some(a), Some(v)) = (&aif_curve, &vof_curve) {
        let (ratio, applied) = aif::partial_volume_scale(&a.features, &v.features);
        if applied {
            if let Some(c) = for_deconvolution.as_mut() {
                c.iter_mut().for_each(|x| *x *= ratio as f32);
            }
        } else {
            qc.warn(format!("AUC(VOF)/AUC(AIF) = {ratio:.2} is outside [1, 3]: the AIF was not rescaled"));
        }
        pv = Some((ratio, applied));
    } else if aif_curve.is_some() {
        qc.warn("no venous output found: the AIF was not corrected for partial volume".into());
    }
    Vessels { aif: aif_curve, aif_source, vof: vof_curve, vof_source, partial_volume: pv, for_deconvolution, plausible }
}

/// The mean ΔHU curve of the brain, accumulated row by row in row order.
struct BrainMean {
    sum: Vec<f64>,
    rows: usize,
}

impl BrainMean {
    fn new(samples: usize, rows: usize) -> Self {
        BrainMean { sum: vec![0.0; samples], rows }
    }

    fn add(&mut self, data: &[f32]) {
        let n = self.sum.len();
        for c in data.chunks_exact(n) {
            self.sum.iter_mut().zip(c).for_each(|(m, &v)| *m += f64::from(v) / self.rows as f64);
        }
    }
}

/// Stage 9: QC of the acquisition: the scan ends before the tissue or the AIF washes out, or
/// has too few frames.
fn check_acquisition(
    brain_mean: &BrainMean,
    grid: &AnalysisGrid,
    vessels: &Vessels,
    frames: usize,
    options: &PerfusionOptions,
    qc: &mut Qc,
) {
    let (brain_mean, n, dt) = (&brain_mean.sum, grid.samples(), grid.dt);
    let brain_peak = brain_mean.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let aif_truncated = vessels.aif.as_ref().is_some_and(|a| {
        let last = f64::from(*a.curve.last().unwrap_or(&0.0));
        last > 0.5 * a.features.peak || a.features.ttp >= (n as f64 - 2.0) * dt
    });
    if brain_mean[n - 1] > 0.5 * brain_peak || aif_truncated {
        qc.flag(
            "bolus_truncated",
            format!(
                "the scan ends before wash-out (tissue at {:.0} % of its peak{} in the last frame)",
                100.0 * brain_mean[n - 1] / brain_peak.max(1e-9),
                if aif_truncated { ", AIF not washed out" } else { "" }
            ),
        );
    }
    if frames < options.min_frames {
        qc.flag(
            "too_few_frames",
            format!("{frames} frames; at least {} are needed for a trustworthy deconvolution", options.min_frames),
        );
    }
}

/// The brain's curves (filtered, on the analysis grid) and the candidates' curves, for the
/// model input.
pub(super) struct Analysis {
    curves: Curves,
    vessels: Vec<f32>,
}

/// Stage 10 (CNN and training only): the network's input, vessels first, then the filtered
/// brain curves, on the model's time grid.
fn model_input<T: Voxel>(
    study: &Study<'_, '_, T>,
    analysis: &Analysis,
    grid: &AnalysisGrid,
    candidates: &Candidates,
    prepared: &Prepared,
    spec: &model::ModelInputSpec,
) -> Result<model::ModelInput> {
    let sets = [
        model::CurveRows { voxels: &candidates.all, data: &analysis.vessels },
        model::CurveRows { voxels: &analysis.curves.voxels, data: &analysis.curves.data },
    ];
    model::build_input(spec, study.shape, &grid.grid, &sets, &analysis.curves.voxels, prepared.arrival.time)
}

/// The maps per brain row (the order of [`BrainRows::voxels`]).
pub(super) struct RowMaps {
    cbf: Vec<f32>,
    cbv: Vec<f32>,
    tmax: Vec<f32>,
    delay: Vec<f32>,
    ttp: Vec<f32>,
}

impl RowMaps {
    fn new(rows: usize) -> Self {
        let zeros = || vec![0.0f32; rows];
        RowMaps { cbf: zeros(), cbv: zeros(), tmax: zeros(), delay: zeros(), ttp: zeros() }
    }

    /// TTP of rows `first..` from their curves on the grid.
    fn set_ttp(&mut self, first: usize, data: &[f32], grid: &AnalysisGrid) {
        for (r, c) in data.chunks_exact(grid.samples()).enumerate() {
            let (mut best, mut at) = (f32::NEG_INFINITY, 0);
            for (m, &v) in c.iter().enumerate() {
                if v > best {
                    best = v;
                    at = m;
                }
            }
            self.ttp[first + r] = grid.grid[at] as f32;
        }
    }

    /// No trustworthy AIF: CBF, CBV, Tmax and delay are NaN.
    fn unknown(&mut self) {
        for m in [&mut self.cbf, &mut self.cbv, &mut self.tmax, &mut self.delay] {
            m.iter_mut().for_each(|x| *x = f32::NAN);
        }
    }
}

/// Stage 11 for the classical methods: the chosen kernel on the deconvolution AIF, applied to
/// rows in parallel.
struct Deconvolution {
    kernel: Kernel,
    n: usize,
    dt: f64,
    aif_area: f64,
    aif_arrival: f64,
}

impl Deconvolution {
    /// Rows per parallel task (even: the SVD methods solve voxels two by two).
    const CHUNK: usize = 4096;

    /// `None` when no plausible AIF was found.
    fn new(vessels: &Vessels, grid: &AnalysisGrid, options: &PerfusionOptions) -> Result<Option<Self>> {
        let Some(a) = vessels.for_deconvolution.as_ref().filter(|_| vessels.plausible) else { return Ok(None) };
        let dt = grid.dt;
        let aif_area: f64 = a.iter().map(|&x| f64::from(x)).sum::<f64>() * dt;
        let a64: Vec<f64> = a.iter().map(|&x| f64::from(x)).collect();
        let aif_arrival = nlr::arrival_time(&a64, dt);
        Ok(Some(Deconvolution { kernel: Kernel::new(options, a, dt)?, n: grid.samples(), dt, aif_area, aif_arrival }))
    }

    /// CBF, CBV, Tmax and delay of rows `first..` (`first` even, so that voxels pair up as
    /// they would in one pass over every row) from their curves.
    fn rows(
        &self,
        first: usize,
        data: &[f32],
        maps: &mut RowMaps,
        check: &(dyn Fn() -> Result<()> + Sync),
    ) -> Result<()> {
        debug_assert!(first % 2 == 0);
        let (n, chunk) = (self.n, Self::CHUNK);
        let end = first + data.len() / n;
        data.par_chunks(chunk * n)
            .zip(maps.cbf[first..end].par_chunks_mut(chunk))
            .zip(maps.cbv[first..end].par_chunks_mut(chunk))
            .zip(maps.tmax[first..end].par_chunks_mut(chunk))
            .zip(maps.delay[first..end].par_chunks_mut(chunk))
            .try_for_each(|((((c, f), v), tm), d)| -> Result<()> {
                check()?;
                self.kernel.apply(c, n, self.dt, self.aif_area, self.aif_arrival, f, v, tm, d);
                tracing::trace!(first_row = first, voxels = f.len(), "deconvolved a chunk");
                Ok(())
            })
    }
}

/// Stage 11 (CNN): TTP per curve, then the maps the network predicts from its input.
fn cnn_maps<T: Voxel>(
    study: &Study<'_, '_, T>,
    analysis: &Analysis,
    grid: &AnalysisGrid,
    (model, input): (&dyn model::PerfusionMapModel, &model::ModelInput),
    control: &RunControl<'_>,
) -> Result<RowMaps> {
    let [ni, nj, nk] = study.shape;
    let mut maps = RowMaps::new(analysis.curves.voxels.len());
    maps.set_ttp(0, &analysis.curves.data, grid);
    let out = model.predict(input, control)?;
    if out.len() != nk * 3 * nj * ni {
        return Err(Error::internal(format!("the model returned {} values for {nk} slices of 3×{nj}×{ni}", out.len())));
    }
    let scale = model.output_scale();
    let unit = |x: f32| if x.is_nan() { x } else { x.clamp(0.0, 1.0) };
    for (r, &v) in analysis.curves.voxels.iter().enumerate() {
        let (i, j, k) = (v % ni, (v / ni) % nj, v / (ni * nj));
        let at = |c: usize| unit(out[((k * 3 + c) * nj + j) * ni + i]);
        maps.cbv[r] = at(0) * scale.cbv as f32;
        maps.cbf[r] = at(1) * scale.cbf as f32;
        maps.ttp[r] = (input.start_s + f64::from(at(2)) * scale.ttp_s) as f32;
        maps.tmax[r] = f32::NAN;
        maps.delay[r] = f32::NAN;
    }
    Ok(maps)
}

/// Seconds spent in the stages that run slice by slice.
#[derive(Default)]
struct SliceTimes {
    gather: f64,
    filter: f64,
    deconvolution: f64,
}

/// Stages 5b–11 for the classical methods, slice by slice: each slice's brain curves are
/// gathered, filtered (across slices once the slices it reaches are in), put on the analysis
/// grid and deconvolved before the next slice is gathered, so that no stage holds every curve:
/// the peak is the input plus a few slices of curves. Per voxel the arithmetic is that of one
/// pass over every curve (the voxels pair up across slice boundaries as they would).
#[allow(clippy::too_many_arguments)]
fn slice_by_slice<T: Voxel>(
    frames: &Frames<'_, '_, '_, T>,
    prepared: &Prepared,
    brain: &BrainRows,
    grid: &AnalysisGrid,
    deconvolution: Option<&Deconvolution>,
    options: &PerfusionOptions,
    control: &RunControl<'_>,
    times: &mut SliceTimes,
) -> Result<(RowMaps, BrainMean)> {
    let study = frames.study;
    let (nk, nt, n) = (study.shape[2], study.frames, grid.samples());
    let rows = RowGrid::of(study.shape, nt, &brain.index, &brain.voxels)?;
    let filter = options.bilateral.as_ref().map(|b| Bilateral::new(b, study.geometry.spacing)).transpose()?;
    let guide = if filter.is_some() { prepared.guide(&brain.voxels) } else { Vec::new() };
    let mut stream = SliceStream::new(filter, &rows, &guide);
    let mut maps = RowMaps::new(brain.rows());
    if deconvolution.is_none() {
        maps.unknown();
    }
    let mut mean = BrainMean::new(n, brain.rows());
    let check = || control.check();
    // Blocks are solved from an even row on: a slice that ends on an odd row leaves its last
    // row to the next block.
    let mut carried: Vec<f32> = Vec::new();
    let mut consume = |(k, filtered): (usize, Vec<f32>), maps: &mut RowMaps, times: &mut SliceTimes| -> Result<()> {
        let start = Instant::now();
        let range = rows.rows(k);
        let data = grid.apply(filtered);
        mean.add(&data);
        maps.set_ttp(range.start, &data, grid);
        if let (Some(d), false) = (deconvolution, data.is_empty()) {
            let (mut first, mut rest) = (range.start, &data[..]);
            if !carried.is_empty() {
                // The row left by the slice before, with this slice's first.
                let mut pair = std::mem::take(&mut carried);
                pair.extend_from_slice(&rest[..n]);
                d.rows(first - 1, &pair, maps, &check)?;
                (first, rest) = (first + 1, &rest[n..]);
            }
            let keep = (range.end - first) % 2 == 1 && range.end < brain.rows();
            let solve = rest.len() - if keep { n } else { 0 };
            d.rows(first, &rest[..solve], maps, &check)?;
            carried = rest[solve..].to_vec();
        }
        times.deconvolution += start.elapsed().as_secs_f64();
        control.report("deconvolution", (k + 1) as f64 / nk as f64)
    };
    for k in 0..nk {
        let start = Instant::now();
        let range = rows.rows(k);
        let mut curves = vec![0.0f32; range.len() * nt];
        frames.gather(&brain.voxels[range], &mut curves, &RunControl::none())?;
        times.gather += start.elapsed().as_secs_f64();
        let start = Instant::now();
        let filtered = stream.push(k, curves);
        times.filter += start.elapsed().as_secs_f64();
        if let Some(slice) = filtered {
            consume(slice, &mut maps, times)?;
        }
        control.check()?;
    }
    loop {
        let start = Instant::now();
        let filtered = stream.finish_one();
        times.filter += start.elapsed().as_secs_f64();
        match filtered {
            Some(slice) => consume(slice, &mut maps, times)?,
            None => break,
        }
    }
    Ok((maps, mean))
}

/// Everything the read-out reports besides the maps.
struct Record<'r> {
    options: &'r PerfusionOptions,
    motion: MotionReport,
    prepared: &'r Prepared,
    vessels: Vessels,
    model: Option<serde_json::Value>,
}

/// Stage 12: the maps as images (0 outside the brain), MTT by the central volume theorem, the
/// lesion masks (Tmax rule, or the relative-TTP rule for the CNN), volumes and trial criteria
/// (withheld when a QC flag is raised), and the report.
fn readout<T: Voxel>(
    study: &Study<'_, '_, T>,
    voxels: &[usize],
    grid: AnalysisGrid,
    rows: RowMaps,
    record: Record<'_>,
    qc: Qc,
    stages: &mut Stages,
) -> Result<PerfusionResult> {
    let [ni, nj, nk] = study.shape;
    let nvox = study.voxels();
    let (geometry, options, prepared) = (study.geometry, record.options, record.prepared);
    let cnn = record.model.is_some();
    let voxel_ml = geometry.spacing.iter().product::<f64>() / 1000.0;
    let to_image = |values: &[f32]| -> Vec<f32> {
        let mut image = vec![0.0f32; nvox];
        for (r, &v) in voxels.iter().enumerate() {
            image[v] = values[r];
        }
        image
    };
    let RowMaps { cbf, cbv, tmax, delay, ttp } = rows;
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
    let brain = &prepared.brain;
    let (cbf_img, tmax_img, ttp_img) = (to_image(&cbf), to_image(&tmax), to_image(&ttp));
    let (masks, ttp_reference) = if cnn {
        readout::lesion_masks_ttp(&cbf_img, &ttp_img, brain, study.shape, &options.readout)
    } else {
        (readout::lesion_masks(&cbf_img, &tmax_img, brain, &options.readout), None)
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
        tmax: volume3(if cnn { vec![f32::NAN; nvox] } else { tmax_img })?,
        delay: volume3(if cnn { vec![f32::NAN; nvox] } else { to_image(&delay) })?,
    };
    let Qc { flags, warnings } = qc;
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
    let vessels = record.vessels;
    let brain_count = prepared.brain_count;
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
        input: serde_json::json!({"shape": [ni, nj, nk, study.frames], "spacing_mm": geometry.spacing, "frame_times_s": study.times, "voxel_ml": voxel_ml}),
        motion: record.motion,
        preprocessing: serde_json::json!({
            "bolus_arrival_s": prepared.arrival.time, "baseline_frames": prepared.arrival.baseline_frames,
            "brain_voxels": brain_count, "brain_ml": brain_count as f64 * voxel_ml, "bilateral": options.bilateral,
            "baseline_noise_hu": prepared.noise_hu,
            "mask": options.mask, "analysis_step_s": grid.dt,
        }),
        analysis_times_s: grid.grid,
        aif: vessel_report(&vessels.aif, vessels.aif_source),
        vof: vessel_report(&vessels.vof, vessels.vof_source),
        partial_volume_scale: vessels.partial_volume,
        qc_flags: flags,
        warnings,
        readout: ReadoutReport {
            reference_cbf: masks.reference_cbf.map(|r| r.0),
            reference_region: if cnn {
                "5 %-trimmed mean CBF of brain voxels with relative TTP ≤ the hypoperfusion threshold"
            } else {
                "5 %-trimmed mean CBF of brain voxels with Tmax ≤ the hypoperfusion threshold"
            },
            reference_ttp_s: ttp_reference,
            volumes: vols,
            criteria: crit,
            withheld,
        },
        timings: std::mem::take(&mut stages.0),
        threads: rayon::current_num_threads(),
        model: record.model,
    };
    Ok(PerfusionResult {
        maps,
        core: mask3(&masks.core)?,
        hypoperfusion: mask3(&masks.hypoperfusion)?,
        brain: mask3(brain)?,
        report,
    })
}

/// The pipeline: the stages above in order, with the progress ranges and stage times of the
/// report. `input_only` stops after the model input (training pairs).
pub(super) fn run_typed<T: Voxel>(
    view: &VolumeView<'_, T>,
    options: &PerfusionOptions,
    registration: Option<&dyn RigidRegistration>,
    control: &RunControl<'_>,
    input_only: Option<&model::ModelInputSpec>,
) -> Result<Outcome> {
    let cnn = match (options.method, &options.model) {
        (Method::Cnn, Some(m)) => Some(m.clone()),
        (Method::Cnn, None) => return Err(Error::invalid_argument("method cnn needs a model (load one first)")),
        _ => None,
    };
    let study = validate(view)?;
    let mut stages = Stages::new();
    let mut qc = Qc::default();

    let (frames, motion_report) = motion(&study, options, registration, control, &mut qc)?;
    stages.done("motion");
    let base = if frames.correction.is_some() { 0.3 } else { 0.0 };

    let prepared = prepare(&frames, options, &control.sub(base..base + 0.15), &mut qc)?;
    stages.done("statistics and brain mask");

    let candidates = candidates(&study, &prepared, options)?;
    let vessel_curves = gather_vessels(&frames, &candidates, &control.sub(base..base + 0.02))?;
    let grid = AnalysisGrid::new(&study.times, prepared.arrival.baseline_frames, &mut qc)?;
    // The classical methods filter as hard as the measured noise needs; the CNN (and its
    // training pairs) keeps the filter it was trained with.
    let matched;
    let options = match (&options.bilateral, cnn.is_none() && input_only.is_none()) {
        (Some(b), true) => {
            matched =
                PerfusionOptions { bilateral: Some(b.matched_to_noise(prepared.noise_hu, grid.dt)), ..options.clone() };
            &matched
        }
        _ => options,
    };
    let vessel_curves = grid.apply(vessel_curves);
    let vessels = vessels(&study, &grid, &vessel_curves, &candidates, options, &mut qc);
    let brain = BrainRows::of(&prepared);

    let cnn_spec = cnn.as_ref().map(|m| m.0.input_spec());
    let (voxels, rows) = match input_only.or(cnn_spec.as_ref()) {
        None => {
            // The classical methods: slice by slice, never every curve at once.
            stages.done("aif and vof");
            let deconvolution = Deconvolution::new(&vessels, &grid, options)?;
            let mut times = SliceTimes::default();
            let (rows, mean) = slice_by_slice(
                &frames,
                &prepared,
                &brain,
                &grid,
                deconvolution.as_ref(),
                options,
                &control.sub(base + 0.02..0.97),
                &mut times,
            )?;
            check_acquisition(&mean, &grid, &vessels, study.frames, options, &mut qc);
            stages.add("gathering curves", times.gather);
            stages.add("bilateral filter", times.filter);
            stages.done_with("deconvolution", times.deconvolution);
            (brain.voxels, rows)
        }
        Some(spec) => {
            // The CNN (and its training pairs) reads every curve at once.
            let mut curves = gather_brain(frames, brain, &control.sub(base + 0.02..base + 0.15))?;
            stages.done("gathering curves");
            filter_curves(&mut curves, &prepared, options, &control.sub(base + 0.15..base + 0.3))?;
            stages.done("bilateral filter");
            curves.data = grid.apply(std::mem::take(&mut curves.data));
            curves.frames = grid.samples();
            let mut mean = BrainMean::new(grid.samples(), curves.voxels.len());
            mean.add(&curves.data);
            check_acquisition(&mean, &grid, &vessels, study.frames, options, &mut qc);
            stages.done("aif and vof");
            let analysis = Analysis { curves, vessels: vessel_curves };
            let input = model_input(&study, &analysis, &grid, &candidates, &prepared, spec)?;
            if input_only.is_some() {
                return Ok(Outcome::Input(input));
            }
            stages.done("model input");
            let model = cnn.as_ref().expect("a model input is built for the CNN or for training");
            let rows = cnn_maps(&study, &analysis, &grid, (model.0.as_ref(), &input), &control.sub(base + 0.3..0.97))?;
            stages.done("cnn inference");
            (analysis.curves.voxels, rows)
        }
    };

    let record = Record {
        options,
        motion: motion_report,
        prepared: &prepared,
        vessels,
        model: cnn.as_ref().map(|m| m.0.describe()),
    };
    let result = readout(&study, &voxels, grid, rows, record, qc, &mut stages)?;
    control.report("done", 1.0)?;
    Ok(Outcome::Full(Box::new(result)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phantom::ctp::RigidMotion;

    /// A registration that reports a fixed motion and resamples through it itself (about the
    /// grid's centre, so the pipeline's check accepts it).
    struct Fixed(RigidMotion);

    impl RigidRegistration for Fixed {
        fn register(
            &self,
            _fixed: &[f32],
            moving: &[f32],
            shape: [usize; 3],
            geometry: &Geometry,
        ) -> Result<(RigidMotion, Vec<f32>)> {
            let grid = motion::CoarseGrid::new(shape, geometry, 0.0);
            let transform = motion::RigidTransform { motion: self.0, centre: grid.centre() };
            let mut out = vec![0.0f32; moving.len()];
            transform.resample(moving, shape, geometry, &mut out);
            Ok((self.0, out))
        }

        fn describe(&self) -> String {
            "fixed".into()
        }
    }

    #[test]
    fn gathered_curves_equal_the_frames_as_filled_with_and_without_motion() {
        let (ni, nj, nk, nt) = (37, 29, 5, 6);
        let mut seed = 0x1234_5678_u64;
        let data = ndarray::Array4::from_shape_fn((ni, nj, nk, nt).f(), |_| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) % 2000) as i16 - 1000
        });
        let geometry = Geometry { spacing: [0.9, 1.1, 3.0], origin: [-10.0, 5.0, 2.0], ..Geometry::identity() };
        let times: Vec<f64> = (0..nt).map(|t| t as f64).collect();
        let times = crate::volume::FrameTimes::new(times, crate::volume::TimeSource::Caller).unwrap();
        let volume = Volume::new_4d(data, geometry, times).unwrap();
        let view = volume.view();
        let study = validate(&view).unwrap();
        let motion = RigidMotion { angles: [0.01, -0.02, 0.05], translation: [0.7, -1.3, 0.4] };
        let control = RunControl::new(None, None);
        let options = motion::MotionOptions::default();
        let source = |t: usize, out: &mut [f32]| fill_frame(&view, t, out);
        let correction = motion::correct(
            nt,
            &source,
            &[0.0, 1.0, 0.0, 1.0, 1.0, 1.0],
            study.shape,
            &geometry,
            &Fixed(motion),
            &options,
            &control,
        )
        .unwrap();
        assert_eq!((correction.coarse_frames, correction.full_size_frames), (4, 0));
        let voxels: Vec<usize> = (0..ni * nj * nk).filter(|v| v % 3 != 1).collect();
        for frames in
            [Frames { study: &study, correction: None }, Frames { study: &study, correction: Some(correction) }]
        {
            let mut gathered = vec![0.0f32; voxels.len() * nt];
            frames.gather(&voxels, &mut gathered, &control).unwrap();
            let mut frame = vec![0.0f32; ni * nj * nk];
            for t in 0..nt {
                frames.fill(t, &mut frame);
                for (r, &v) in voxels.iter().enumerate() {
                    assert_eq!(gathered[r * nt + t].to_bits(), frame[v].to_bits(), "voxel {v} frame {t}");
                }
            }
        }
    }

    #[test]
    fn an_artery_that_leaves_the_field_of_view_gives_no_aif() {
        // After motion correction a voxel at the slab's edge can leave the field of view late in
        // the study: resampling writes air (−1024 HU) there. The arteries in the upper half of the
        // slab read air from two thirds of the study on: none of them may feed the AIF (a curve falling to air
        // has a negative area and no AIF scale); the AIF comes from the arteries still in view.
        let mut options = crate::phantom::ctp::PhantomOptions::new(crate::phantom::ctp::PhantomKind::Anatomical);
        options.shape = Some([48, 44, 10]);
        let mut phantom = crate::phantom::ctp::generate(&options).unwrap();
        let [_, _, nk, nt] = phantom.ctp.shape();
        // The arteries in the upper half of the slab (the lower half keeps its own).
        let arteries: Vec<[usize; 3]> = phantom.truth.aif_voxels.iter().copied().filter(|v| v[2] >= nk / 2).collect();
        assert!(!arteries.is_empty() && arteries.len() < phantom.truth.aif_voxels.len());
        for &[i, j, k] in &arteries {
            for t in 2 * nt / 3..nt {
                phantom.ctp.data_mut()[[i, j, k, t]] = -1024;
            }
        }
        let view = phantom.ctp.view();
        let control = RunControl::none();
        let options = PerfusionOptions::default();
        let mut qc = Qc::default();
        let study = validate(&view).unwrap();
        let (frames, _) = motion(&study, &options, None, &control, &mut qc).unwrap();
        let prepared = prepare(&frames, &options, &control, &mut qc).unwrap();
        let [ni, nj, _] = study.shape;
        assert!(arteries.iter().all(|&[i, j, k]| !prepared.valid[i + ni * (j + nj * k)]));
        let candidates = candidates(&study, &prepared, &options).unwrap();
        let grid = AnalysisGrid::new(&study.times, prepared.arrival.baseline_frames, &mut qc).unwrap();
        let vessel_curves = grid.apply(gather_vessels(&frames, &candidates, &control).unwrap());
        let vessels = vessels(&study, &grid, &vessel_curves, &candidates, &options, &mut qc);
        let aif = vessels.aif.expect("an AIF from the arteries in view");
        assert!(aif.voxels.iter().all(|v| !arteries.contains(v)), "AIF voxels {:?}", aif.voxels);
        assert!(aif.curve.iter().all(|&x| x > -100.0) && aif.features.auc > 0.0, "{:?}", aif.features);
        assert!(vessels.plausible && qc.flags.is_empty());

        // Chosen by hand, such an artery is used as asked, but flagged and no maps come of it.
        let [i, j, k] = arteries[0];
        let by_hand = PerfusionOptions { aif: VesselSelection::Voxel([i, j, k]), ..PerfusionOptions::default() };
        let chosen = super::candidates(&study, &prepared, &by_hand).unwrap();
        let chosen_curves = grid.apply(gather_vessels(&frames, &chosen, &control).unwrap());
        let found = super::vessels(&study, &grid, &chosen_curves, &chosen, &by_hand, &mut qc);
        assert!(found.aif.as_ref().is_some_and(|a| a.features.auc < 0.0) && !found.plausible);
        assert!(qc.flags.iter().any(|f| f.flag == "no_plausible_aif" && f.message.contains("area is not positive")));
        assert!(Deconvolution::new(&found, &grid, &by_hand).unwrap().is_none());
    }

    #[test]
    fn slice_by_slice_maps_equal_one_pass_over_every_curve() {
        // 4 mm slices (40 mm in 10): the filter reaches one slice on each side; the brain's
        // slices hold odd and even row counts, so voxels pair up across slice boundaries.
        let mut options = crate::phantom::ctp::PhantomOptions::new(crate::phantom::ctp::PhantomKind::Anatomical);
        options.shape = Some([48, 44, 10]);
        let phantom = crate::phantom::ctp::generate(&options).unwrap();
        let view = phantom.ctp.view();
        let control = RunControl::none();
        for method in [Method::Osvd, Method::Bsvd, Method::Nlr] {
            let options = PerfusionOptions { method, ..PerfusionOptions::default() };
            let mut qc = Qc::default();
            let study = validate(&view).unwrap();
            let (frames, _) = motion(&study, &options, None, &control, &mut qc).unwrap();
            let prepared = prepare(&frames, &options, &control, &mut qc).unwrap();
            let candidates = candidates(&study, &prepared, &options).unwrap();
            let grid = AnalysisGrid::new(&study.times, prepared.arrival.baseline_frames, &mut qc).unwrap();
            let vessel_curves = grid.apply(gather_vessels(&frames, &candidates, &control).unwrap());
            let vessels = vessels(&study, &grid, &vessel_curves, &candidates, &options, &mut qc);
            let deconvolution = Deconvolution::new(&vessels, &grid, &options).unwrap().expect("a plausible AIF");
            let brain = BrainRows::of(&prepared);
            let reach = Bilateral::new(options.bilateral.as_ref().unwrap(), study.geometry.spacing).unwrap();
            assert!(reach.across.is_some(), "the filter reaches across slices");
            let rows = RowGrid::of(study.shape, study.frames, &brain.index, &brain.voxels).unwrap();
            let counts: Vec<usize> = (0..study.shape[2]).map(|k| rows.rows(k).len()).collect();
            assert!(counts.iter().any(|c| c % 2 == 1) && counts.iter().any(|c| c % 2 == 0), "{counts:?}");
            let (sliced, mean) = slice_by_slice(
                &frames,
                &prepared,
                &brain,
                &grid,
                Some(&deconvolution),
                &options,
                &control,
                &mut SliceTimes::default(),
            )
            .unwrap();

            let mut curves = gather_brain(frames, BrainRows::of(&prepared), &control).unwrap();
            filter_curves(&mut curves, &prepared, &options, &control).unwrap();
            let data = grid.apply(curves.data);
            let mut whole = RowMaps::new(brain.rows());
            whole.set_ttp(0, &data, &grid);
            deconvolution.rows(0, &data, &mut whole, &|| Ok(())).unwrap();
            let mut whole_mean = BrainMean::new(grid.samples(), brain.rows());
            whole_mean.add(&data);

            let same =
                |a: &[f32], b: &[f32]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same(&sliced.cbf, &whole.cbf), "{method:?} CBF");
            assert!(same(&sliced.cbv, &whole.cbv), "{method:?} CBV");
            assert!(same(&sliced.tmax, &whole.tmax), "{method:?} Tmax");
            assert!(same(&sliced.delay, &whole.delay), "{method:?} delay");
            assert!(same(&sliced.ttp, &whole.ttp), "{method:?} TTP");
            assert_eq!(mean.sum, whole_mean.sum, "{method:?} brain mean");
        }
    }
}
