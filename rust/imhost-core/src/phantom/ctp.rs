//! Digital CT-perfusion phantoms with known ground truth.
//!
//! Two phantoms, both written in HU (`i16`, as scanners store them):
//! - [`PhantomKind::Kudo`]: the Kudo-style grid (Kudo et al. 2013, the ASIST-Japan digital
//!   phantom): per slice 7×7 tiles of 32×32 px; columns MTT = 24/k s (k = 1..7), rows delay 0–3 s in
//!   0.5 s steps; one slice per IRF shape (box, exponential, linear) and CBV level (1–5 ml/100 g);
//!   slice 0 holds the AIF and VOF tiles.
//! - [`PhantomKind::Anatomical`]: a head-like slab (skull, CSF rim and ventricles, cortical and deep
//!   grey matter, white matter, two internal carotid arteries carrying the input, a venous sinus)
//!   with a left-MCA territory holding an infarct core inside a penumbra.
//! - [`PhantomKind::Lobular`]: a second, structurally different head ([`lobular`]: another
//!   anatomy model, lesion shape, vessel model, arterial input, noise texture and partial
//!   volume), held out from training to test whether a method learned perfusion or our generator.
//!
//! ## Signal model (indicator dilution, Fieselmann 2011)
//! `ΔHU_tissue(t) = (ρ/k_H)·(CBF/6000)·∫₀ᵗ C_a(s)·R(t−δ−s) ds` with the AIF `C_a` a sum of two
//! gamma variates (first pass and recirculation, integer shape α so that its integral has a
//! closed form) and the residue function `R` a box, exponential or linear IRF whose mean transit
//! time is MTT. The convolution is computed per tissue class by composite 8-point Gauss–Legendre
//! quadrature split at every kink of the integrand, which is exact to rounding (checked against
//! the closed-form box convolution in the tests), never by interpolating a coarse grid.
//!
//! ## Truth conventions
//! - CBF in ml/100 g/min, CBV in ml/100 g, MTT = 60·CBV/CBF in s, delay δ in s.
//! - **Tmax = δ**: the time at which the delayed residue function first reaches its maximum. For
//!   exponential and linear IRFs this is the unique maximum; for a box IRF the maximum is a plateau
//!   from δ to δ+MTT and the truth takes its onset. Lesion classes in the anatomical phantom use the
//!   exponential IRF, so their Tmax has no ambiguity.
//! - Masks: core = the infarct class; hypoperfusion = core ∪ penumbra (truth Tmax > 6 s). The Kudo
//!   grid has no lesion (delays ≤ 3 s), so its masks are empty.
//! - Noise is Gaussian in HU, independent per voxel and frame, drawn from a seeded generator keyed
//!   by (seed, slice, frame): the same seed gives the same bytes on any machine and thread count.

use ndarray::{Array3, Array4, ShapeBuilder};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::geometry::Geometry;
use crate::perfusion::constants::{K_H, RHO};
use crate::volume::{FrameTimes, TimeSource, Volume};

/// Which phantom to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PhantomKind {
    /// The Kudo-style MTT × delay grid.
    Kudo,
    /// The head-like phantom with a lesion.
    Anatomical,
    /// The second, structurally different head family ([`lobular`]).
    Lobular,
}

pub mod lobular;

/// Shape of the residue function R(t) (R(0) = 1, ∫R = MTT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IrfShape {
    /// R = 1 for 0 ≤ t < MTT.
    Box,
    /// R = exp(−t/MTT).
    Exponential,
    /// R = 1 − t/(2·MTT) for 0 ≤ t < 2·MTT.
    Linear,
    /// Gamma-distributed transit times of shape 2 (dispersed): R = (1 + x)·e^(−x), x = 2t/MTT.
    Dispersed,
}

impl IrfShape {
    /// R(u) for a mean transit time `mtt`; zero for u < 0.
    pub fn residue(self, u: f64, mtt: f64) -> f64 {
        if u < 0.0 {
            return 0.0;
        }
        match self {
            IrfShape::Box => f64::from(u < mtt),
            IrfShape::Exponential => (-u / mtt).exp(),
            IrfShape::Linear => (1.0 - u / (2.0 * mtt)).max(0.0),
            IrfShape::Dispersed => {
                let x = 2.0 * u / mtt;
                (1.0 + x) * (-x).exp()
            }
        }
    }

    /// Where R has a kink (the quadrature splits there).
    fn kink(self, mtt: f64) -> Option<f64> {
        match self {
            IrfShape::Box => Some(mtt),
            IrfShape::Exponential | IrfShape::Dispersed => None,
            IrfShape::Linear => Some(2.0 * mtt),
        }
    }
}

/// One gamma variate `amplitude·(x/(α·β))^α·exp(α − x/β)`, `x = t − t0 > 0`, peaking at
/// `amplitude` at `t0 + α·β`. α is an integer so the integral has a closed form.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GammaVariate {
    /// Arrival time in s.
    pub t0: f64,
    /// Peak value (ΔHU).
    pub amplitude: f64,
    /// Integer shape α.
    pub alpha: u32,
    /// Scale β in s.
    pub beta: f64,
}

impl GammaVariate {
    /// Value at `t`.
    pub fn value(&self, t: f64) -> f64 {
        let x = t - self.t0;
        if x <= 0.0 {
            return 0.0;
        }
        let a = f64::from(self.alpha);
        self.amplitude * (x / (a * self.beta)).powi(self.alpha as i32) * (a - x / self.beta).exp()
    }

    /// `∫_{−∞}^{t}` of the variate, in closed form (lower incomplete gamma of integer order).
    pub fn integral(&self, t: f64) -> f64 {
        let x = t - self.t0;
        if x <= 0.0 {
            return 0.0;
        }
        let a = self.alpha;
        let af = f64::from(a);
        // amplitude·e^α/(αβ)^α · ∫₀ˣ s^α e^{−s/β} ds, and ∫₀ˣ s^α e^{−s/β} ds = β^{α+1}·α!·P(α+1, x/β).
        let z = x / self.beta;
        let mut term = 1.0;
        let mut sum = 1.0;
        for k in 1..=a {
            term *= z / f64::from(k);
            sum += term;
        }
        let factorial: f64 = (1..=a).map(f64::from).product();
        let lower = self.beta.powi(a as i32 + 1) * factorial * (1.0 - (-z).exp() * sum);
        self.amplitude * af.exp() / (af * self.beta).powi(a as i32) * lower
    }
}

/// The arterial input: first pass plus recirculation, in ΔHU.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ArterialInput {
    /// The first pass.
    pub first_pass: GammaVariate,
    /// The recirculation hump.
    pub recirculation: GammaVariate,
}

impl ArterialInput {
    /// The anatomical default: peak ≈ 440 ΔHU at 19 s (≈ 480 HU over a 40 HU baseline),
    /// recirculation ≈ 110 ΔHU peaking at 31 s (α = 3, β = 1.5 s: the `pct` toolbox's defaults).
    pub fn standard() -> Self {
        ArterialInput {
            first_pass: GammaVariate { t0: 14.5, amplitude: 440.0, alpha: 3, beta: 1.5 },
            recirculation: GammaVariate { t0: 23.5, amplitude: 110.0, alpha: 3, beta: 2.5 },
        }
    }

    /// C_a(t) in ΔHU.
    pub fn value(&self, t: f64) -> f64 {
        self.first_pass.value(t) + self.recirculation.value(t)
    }

    /// ∫_{−∞}^{t} C_a in ΔHU·s.
    pub fn integral(&self, t: f64) -> f64 {
        self.first_pass.integral(t) + self.recirculation.integral(t)
    }

    /// `(C_a ⊗ R)(t) = ∫₀ᵗ C_a(s)·R(t−s) ds` by composite Gauss–Legendre quadrature, split at the
    /// arrivals and at the IRF's kink so every piece is smooth (exact to rounding).
    pub fn convolve(&self, irf: IrfShape, mtt: f64, t: f64) -> f64 {
        let start = self.first_pass.t0.min(self.recirculation.t0);
        if t <= start {
            return 0.0;
        }
        let mut cuts = vec![start, t, self.first_pass.t0, self.recirculation.t0];
        if let Some(kink) = irf.kink(mtt) {
            cuts.push(t - kink);
        }
        cuts.retain(|c| (start..=t).contains(c));
        cuts.sort_by(f64::total_cmp);
        cuts.dedup();
        let mut total = 0.0;
        for pair in cuts.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let pieces = ((b - a) / 0.25).ceil().max(1.0) as usize;
            let h = (b - a) / pieces as f64;
            for p in 0..pieces {
                let (lo, hi) = (a + p as f64 * h, a + (p + 1) as f64 * h);
                total += gauss_legendre_8(lo, hi, |s| self.value(s) * irf.residue(t - s, mtt));
            }
        }
        total
    }
}

/// ∫ₐᵇ f by 8-point Gauss–Legendre.
fn gauss_legendre_8(a: f64, b: f64, f: impl Fn(f64) -> f64) -> f64 {
    const NODES: [f64; 4] =
        [0.183_434_642_495_649_8, 0.525_532_409_916_329, 0.796_666_477_413_626_7, 0.960_289_856_497_536_3];
    const WEIGHTS: [f64; 4] =
        [0.362_683_783_378_362, 0.313_706_645_877_887_3, 0.222_381_034_453_374_5, 0.101_228_536_290_376_26];
    let (mid, half) = (0.5 * (a + b), 0.5 * (b - a));
    let mut sum = 0.0;
    for (x, w) in NODES.iter().zip(WEIGHTS) {
        sum += w * (f(mid - half * x) + f(mid + half * x));
    }
    sum * half
}

/// The perfusion of one tissue class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TissueParams {
    /// CBF in ml/100 g/min.
    pub cbf: f64,
    /// CBV in ml/100 g.
    pub cbv: f64,
    /// Delay δ of the tissue's input relative to the AIF, in s.
    pub delay: f64,
    /// Residue-function shape.
    pub irf: IrfShape,
}

impl TissueParams {
    /// MTT = 60·CBV/CBF in s.
    pub fn mtt(&self) -> f64 {
        60.0 * self.cbv / self.cbf
    }

    /// The tissue enhancement ΔHU(t) for the input `aif`.
    pub fn enhancement(&self, aif: &ArterialInput, t: f64) -> f64 {
        (RHO / K_H) * (self.cbf / 6000.0) * aif.convolve(self.irf, self.mtt(), t - self.delay)
    }
}

/// Options of [`generate`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PhantomOptions {
    /// Which phantom.
    pub kind: PhantomKind,
    /// Standard deviation of the Gaussian noise in HU (0 for none).
    pub noise_hu: f64,
    /// Seed of the noise and motion generator.
    pub seed: u64,
    /// Simulate rigid head motion between frames (anatomical phantom only).
    pub motion: bool,
    /// Frame times in s; `None` takes the phantom's default (Kudo: 30 frames every 2 s;
    /// anatomical: 0–60 s every 1 s).
    pub frame_times: Option<Vec<f64>>,
    /// Override of the image size `[ni, nj, nk]` (anatomical only; default 128×128×10).
    pub shape: Option<[usize; 3]>,
    /// Anatomy, lesion and bolus of the anatomical phantom ([`Anatomy::standard`] when `None`);
    /// [`Anatomy::varied`] draws one per seed for training and held-out validation sets.
    pub anatomy: Option<Anatomy>,
    /// Coverage of the slab in mm (anatomical only; 4–140, default 40): with `shape`'s slice
    /// count it sets the slice thickness.
    pub slab_mm: Option<f64>,
}

impl Default for PhantomOptions {
    fn default() -> Self {
        PhantomOptions {
            kind: PhantomKind::Anatomical,
            noise_hu: 5.0,
            seed: 1,
            motion: false,
            frame_times: None,
            shape: None,
            anatomy: None,
            slab_mm: None,
        }
    }
}

impl PhantomOptions {
    /// Options for `kind` with the defaults.
    pub fn new(kind: PhantomKind) -> Self {
        PhantomOptions { kind, ..PhantomOptions::default() }
    }
}

/// The clinically common schedule with non-uniform times: every 1 s through the first pass
/// (0–40 s), then every 2 s to 60 s.
pub fn nonuniform_frame_times() -> Vec<f64> {
    let mut times: Vec<f64> = (0..=40).map(f64::from).collect();
    times.extend((1..=10).map(|k| 40.0 + 2.0 * f64::from(k)));
    times
}

/// Rigid motion of one frame: rotation angles about the LPS x, y, z axes through the image
/// centre (radians) and translation (mm). Applied to the anatomy: the voxel at patient point p
/// shows the reference anatomy at `Rᵀ·(p − c − t) + c`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct RigidMotion {
    /// Rotation angles (rad).
    pub angles: [f64; 3],
    /// Translation in mm.
    pub translation: [f64; 3],
}

impl RigidMotion {
    /// The rotation matrix R = Rz·Ry·Rx.
    pub fn matrix(&self) -> [[f64; 3]; 3] {
        let [a, b, c] = self.angles;
        let (sa, ca, sb, cb, sc, cc) = (a.sin(), a.cos(), b.sin(), b.cos(), c.sin(), c.cos());
        [
            [cc * cb, cc * sb * sa - sc * ca, cc * sb * ca + sc * sa],
            [sc * cb, sc * sb * sa + cc * ca, sc * sb * ca - cc * sa],
            [-sb, cb * sa, cb * ca],
        ]
    }

    /// The largest displacement (mm) of a point within `radius` mm of the centre.
    pub fn max_displacement(&self, radius: f64) -> f64 {
        let angle = (self.angles.iter().map(|a| a * a).sum::<f64>()).sqrt();
        let shift = self.translation.iter().map(|t| t * t).sum::<f64>().sqrt();
        shift + 2.0 * radius * (angle / 2.0).sin()
    }
}

/// Ground truth of a phantom (3-D maps in the phantom's geometry; zero outside tissue).
#[derive(Debug, Clone)]
pub struct Truth {
    /// CBF (ml/100 g/min).
    pub cbf: Volume<f32>,
    /// CBV (ml/100 g).
    pub cbv: Volume<f32>,
    /// MTT (s).
    pub mtt: Volume<f32>,
    /// Delay δ (s).
    pub delay: Volume<f32>,
    /// Tmax (s) = δ (see the module docs).
    pub tmax: Volume<f32>,
    /// Tissue voxels where the maps are defined (1) — the evaluation mask.
    pub tissue: Volume<u8>,
    /// Infarct core.
    pub core: Volume<u8>,
    /// Hypoperfusion (Tmax > 6 s).
    pub hypoperfusion: Volume<u8>,
    /// Voxels carrying the AIF (full- or partial-volume artery).
    pub aif_voxels: Vec<[usize; 3]>,
    /// Voxels carrying the VOF.
    pub vof_voxels: Vec<[usize; 3]>,
    /// The arterial input without partial volume, in ΔHU (the two gamma variates of the Kudo
    /// and anatomical phantoms; `None` for the lobular one, whose input is a
    /// [`lobular::PopulationInput`]).
    pub aif: Option<ArterialInput>,
    /// Motion of every frame relative to frame 0.
    pub motion: Vec<RigidMotion>,
    /// The tissue classes with their parameters, for the record.
    pub classes: Vec<(String, Option<TissueParams>)>,
}

/// A generated phantom.
#[derive(Debug, Clone)]
pub struct CtpPhantom {
    /// The 4-D study in HU.
    pub ctp: Volume<i16>,
    /// Its ground truth.
    pub truth: Truth,
}

/// What fills a voxel: a static class (air, bone, CSF) or an enhancing one.
#[derive(Debug, Clone)]
struct Class {
    name: String,
    baseline_hu: f64,
    /// Enhancement per frame (ΔHU); empty for no enhancement.
    curve: Vec<f64>,
    tissue: Option<TissueParams>,
    lesion: Lesion,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lesion {
    None,
    Penumbra,
    Core,
}

/// Venous sinus: the AIF dispersed by a unit-area delayed exponential (delay 5 s, τ 3 s), so its
/// area equals the arterial input's — what partial-volume scaling relies on.
fn vof_value(aif: &ArterialInput, t: f64) -> f64 {
    let (delay, tau) = (5.0, 3.0);
    aif.convolve(IrfShape::Exponential, tau, t - delay) / tau
}

/// Generate a phantom.
pub fn generate(options: &PhantomOptions) -> Result<CtpPhantom> {
    if !(options.noise_hu.is_finite() && options.noise_hu >= 0.0) {
        return Err(Error::invalid_argument(format!("noise must be ≥ 0 HU, got {}", options.noise_hu)));
    }
    match options.kind {
        PhantomKind::Kudo => {
            if options.motion {
                return Err(Error::unsupported("motion is simulated for the anatomical phantom only"));
            }
            kudo(options)
        }
        PhantomKind::Anatomical => anatomical(options),
        PhantomKind::Lobular => lobular::generate(options),
    }
}

fn frame_times(options: &PhantomOptions, default: Vec<f64>) -> Result<FrameTimes> {
    let times = options.frame_times.clone().unwrap_or(default);
    if times.len() < 2 {
        return Err(Error::invalid_argument("a phantom needs at least 2 frames"));
    }
    FrameTimes::new(times, TimeSource::Caller)
}

fn curve(times: &[f64], f: impl Fn(f64) -> f64) -> Vec<f64> {
    times.iter().map(|&t| f(t)).collect()
}

/// Kudo grid geometry.
const TILE: usize = 32;
const GRID: usize = 7;
/// Kudo MTT of column `c` (24/k s) and delay of row `r` (0.5 s steps).
fn kudo_mtt(c: usize) -> f64 {
    24.0 / (c + 1) as f64
}
fn kudo_delay(r: usize) -> f64 {
    0.5 * r as f64
}
const KUDO_IRFS: [IrfShape; 3] = [IrfShape::Box, IrfShape::Exponential, IrfShape::Linear];

/// The tissue parameters of a Kudo voxel `(i, j)` on slice `k ≥ 1`, with the slice's IRF.
pub fn kudo_params(i: usize, j: usize, k: usize) -> Option<TissueParams> {
    if k == 0 || k > 15 || i >= TILE * GRID || j >= TILE * GRID {
        return None;
    }
    let irf = KUDO_IRFS[(k - 1) / 5];
    let cbv = ((k - 1) % 5 + 1) as f64;
    let (c, r) = (i / TILE, j / TILE);
    let mtt = kudo_mtt(c);
    Some(TissueParams { cbf: 60.0 * cbv / mtt, cbv, delay: kudo_delay(r), irf })
}

fn kudo(options: &PhantomOptions) -> Result<CtpPhantom> {
    let times = frame_times(options, (0..30).map(|n| 2.0 * f64::from(n)).collect())?;
    let t = times.as_slice();
    let aif = ArterialInput {
        first_pass: GammaVariate { t0: 8.0, amplitude: 400.0, alpha: 3, beta: 1.5 },
        recirculation: GammaVariate { t0: 17.0, amplitude: 80.0, alpha: 3, beta: 2.5 },
    };
    let n = TILE * GRID;
    let shape = [n, n, 16];
    let mut classes = vec![
        Class { name: "air".into(), baseline_hu: -1000.0, curve: vec![], tissue: None, lesion: Lesion::None },
        Class {
            name: "artery".into(),
            baseline_hu: 40.0,
            curve: curve(t, |s| aif.value(s)),
            tissue: None,
            lesion: Lesion::None,
        },
        Class {
            name: "vein".into(),
            baseline_hu: 40.0,
            curve: curve(t, |s| vof_value(&aif, s)),
            tissue: None,
            lesion: Lesion::None,
        },
    ];
    let mut index = Array3::<u16>::zeros((n, n, 16).f());
    for k in 1..16 {
        for r in 0..GRID {
            for c in 0..GRID {
                let p = kudo_params(c * TILE, r * TILE, k).expect("inside the grid");
                let id = classes.len() as u16;
                classes.push(Class {
                    name: format!("{:?} cbv {} mtt {:.2} delay {}", p.irf, p.cbv, p.mtt(), p.delay).to_lowercase(),
                    baseline_hu: 30.0,
                    curve: curve(t, |s| p.enhancement(&aif, s)),
                    tissue: Some(p),
                    lesion: Lesion::None,
                });
                for j in r * TILE..(r + 1) * TILE {
                    for i in c * TILE..(c + 1) * TILE {
                        index[[i, j, k]] = id;
                    }
                }
            }
        }
    }
    // Slice 0: the AIF tile (column 1, row 1) and the VOF tile (column 5, row 1) in air.
    let (mut aif_voxels, mut vof_voxels) = (vec![], vec![]);
    for j in TILE..2 * TILE {
        for i in TILE..2 * TILE {
            index[[i, j, 0]] = 1;
            aif_voxels.push([i, j, 0]);
            index[[i + 4 * TILE, j, 0]] = 2;
            vof_voxels.push([i + 4 * TILE, j, 0]);
        }
    }
    let geometry = centred_geometry(shape, [1.0, 1.0, 5.0])?;
    let frames = vec![index; t.len()];
    assemble(options, shape, geometry, times, &classes, &frames, aif, aif_voxels, vof_voxels, vec![])
}

fn centred_geometry(shape: [usize; 3], spacing: [f64; 3]) -> Result<Geometry> {
    let origin: [f64; 3] = std::array::from_fn(|a| -0.5 * (shape[a] - 1) as f64 * spacing[a]);
    Geometry::axis_aligned(spacing, origin)
}

/// Anatomical classes (indices into the class table).
mod anat {
    pub const AIR: u16 = 0;
    pub const BONE: u16 = 1;
    pub const CSF: u16 = 2;
    pub const ARTERY: u16 = 3;
    pub const VEIN: u16 = 4;
    pub const GM: u16 = 5;
    pub const WM: u16 = 6;
    pub const GM_PENUMBRA: u16 = 7;
    pub const WM_PENUMBRA: u16 = 8;
    pub const GM_CORE: u16 = 9;
    pub const WM_CORE: u16 = 10;
}

/// Tissue values (CBV ml/100 g, CBF ml/100 g/min) after Riordan et al.'s digital phantom, with
/// the penumbra set to 60 % of normal flow so that no class sits on the 30 % rCBF threshold.
fn anatomical_classes(aif: &ArterialInput, t: &[f64], anatomy: &Anatomy) -> Vec<Class> {
    let tissue = |name: &str, baseline: f64, cbf: f64, cbv: f64, delay: f64, lesion: Lesion| {
        let p = TissueParams { cbf, cbv, delay, irf: IrfShape::Exponential };
        Class {
            name: name.into(),
            baseline_hu: baseline,
            curve: curve(t, |s| p.enhancement(aif, s)),
            tissue: Some(p),
            lesion,
        }
    };
    let still = |name: &str, baseline: f64| Class {
        name: name.into(),
        baseline_hu: baseline,
        curve: vec![],
        tissue: None,
        lesion: Lesion::None,
    };
    vec![
        still("air", -1000.0),
        still("bone", 900.0),
        still("csf", 12.0),
        // Arteries are thin: their voxels carry 70 % of the input (partial volume), which the VOF corrects.
        Class {
            name: "artery".into(),
            baseline_hu: 40.0,
            curve: curve(t, |s| 0.7 * aif.value(s)),
            tissue: None,
            lesion: Lesion::None,
        },
        Class {
            name: "vein".into(),
            baseline_hu: 40.0,
            curve: curve(t, |s| vof_value(aif, s)),
            tissue: None,
            lesion: Lesion::None,
        },
        tissue("grey matter", 35.0, 53.0, 3.3, 1.0, Lesion::None),
        tissue("white matter", 29.0, 25.0, 1.9, 1.5, Lesion::None),
        tissue("grey matter penumbra", 35.0, 32.0, 3.6, anatomy.penumbra_delay_s, Lesion::Penumbra),
        tissue("white matter penumbra", 29.0, 15.0, 2.0, anatomy.penumbra_delay_s, Lesion::Penumbra),
        tissue("grey matter core", 35.0, 5.3, 0.71, anatomy.core_delay_s, Lesion::Core),
        tissue("white matter core", 29.0, 2.5, 0.42, anatomy.core_delay_s, Lesion::Core),
    ]
}

/// Anatomy, lesion and bolus of the anatomical phantom.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Anatomy {
    /// Head size relative to the standard head (1).
    pub head_scale: f64,
    /// Lesion hemisphere: +1 patient left (+x in LPS), −1 patient right.
    pub lesion_side: f64,
    /// Direction of the lesion axis from the lateral axis, degrees (+ posterior).
    pub lesion_axis_deg: f64,
    /// Half-angle of the hypoperfused sector (degrees; 0 for a healthy head).
    pub penumbra_half_angle_deg: f64,
    /// Inner radius of the hypoperfused sector (mm from the centre).
    pub penumbra_inner_mm: f64,
    /// Half-angle of the core sector (degrees; 0 for no core).
    pub core_half_angle_deg: f64,
    /// Inner radius of the core sector (mm).
    pub core_inner_mm: f64,
    /// Arrival delay of the penumbra (s).
    pub penumbra_delay_s: f64,
    /// Arrival delay of the core (s).
    pub core_delay_s: f64,
    /// The arterial input.
    pub aif: ArterialInput,
}

impl Anatomy {
    /// The standard phantom: a left-MCA territory (±45°, core ±20° beyond 35 mm), penumbra delay
    /// 8 s, core delay 12 s, the standard AIF.
    pub fn standard() -> Self {
        Anatomy {
            head_scale: 1.0,
            lesion_side: 1.0,
            lesion_axis_deg: 0.0,
            penumbra_half_angle_deg: 45.0,
            penumbra_inner_mm: 18.0,
            core_half_angle_deg: 20.0,
            core_inner_mm: 35.0,
            penumbra_delay_s: 8.0,
            core_delay_s: 12.0,
            aif: ArterialInput::standard(),
        }
    }

    /// A random variant drawn from `seed`: head 0.9–1.1×, either hemisphere, lesion axis ±25°,
    /// hypoperfusion 20–55° (10 % of heads healthy), core 0–70 % of that angle (a fifth without
    /// core), delays 6.5–10 s (penumbra) and +2–5 s (core), AIF arrival 10–18 s, peak 300–550
    /// ΔHU, width β 1.1–2.2 s.
    pub fn varied(seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed ^ 0x0061_6e61_746f_6d79);
        let mut u = |lo: f64, hi: f64| lo + (hi - lo) * rng.uniform();
        let head_scale = u(0.9, 1.1);
        let lesion_side = if u(0.0, 1.0) < 0.5 { 1.0 } else { -1.0 };
        let lesion_axis_deg = u(-25.0, 25.0);
        let healthy = u(0.0, 1.0) < 0.1;
        let penumbra_half_angle_deg = if healthy { 0.0 } else { u(20.0, 55.0) };
        let no_core = u(0.0, 1.0) < 0.2;
        let core_half_angle_deg = if no_core { 0.0 } else { penumbra_half_angle_deg * u(0.2, 0.7) };
        let penumbra_inner_mm = u(12.0, 30.0);
        let core_inner_mm = penumbra_inner_mm + u(8.0, 25.0);
        let penumbra_delay_s = u(6.5, 10.0);
        let core_delay_s = penumbra_delay_s + u(2.0, 5.0);
        let t0 = u(10.0, 18.0);
        let amplitude = u(300.0, 550.0);
        let beta = u(1.1, 2.2);
        let aif = ArterialInput {
            first_pass: GammaVariate { t0, amplitude, alpha: 3, beta },
            recirculation: GammaVariate { t0: t0 + 9.0, amplitude: amplitude / 4.0, alpha: 3, beta: beta + 1.0 },
        };
        Anatomy {
            head_scale,
            lesion_side,
            lesion_axis_deg,
            penumbra_half_angle_deg,
            penumbra_inner_mm,
            core_half_angle_deg,
            core_inner_mm,
            penumbra_delay_s,
            core_delay_s,
            aif,
        }
    }
}

/// The anatomical label at patient point `p` (mm, LPS, head centred on the origin).
fn anatomical_label(p: [f64; 3], anatomy: &Anatomy) -> u16 {
    use anat::*;
    let s = anatomy.head_scale;
    let [x, y, z] = [p[0] / s, p[1] / s, p[2] / s];
    let ell = |a: f64, b: f64, c: f64| ((x / a).powi(2) + (y / b).powi(2) + (z / c).powi(2)).sqrt();
    let outer = ell(78.0, 95.0, 75.0);
    if outer > 1.0 {
        return AIR;
    }
    let inner = ell(72.0, 89.0, 69.0);
    if inner > 1.0 {
        return BONE;
    }
    // Venous sinus: posterior midline, just inside the skull (a tube along z).
    if x.powi(2) + (y - 80.0).powi(2) < 4.5f64.powi(2) {
        return VEIN;
    }
    // Internal carotid arteries: tubes along z either side of the midline, anterior to centre.
    if (x.abs() - 14.0).powi(2) + (y + 22.0).powi(2) < 2.6f64.powi(2) {
        return ARTERY;
    }
    let brain = ell(70.0, 87.0, 67.0);
    if brain > 1.0 {
        return CSF;
    }
    // Lateral ventricles.
    if ((x.abs() - 9.0) / 5.0).powi(2) + (y / 22.0).powi(2) + (z / 30.0).powi(2) < 1.0 {
        return CSF;
    }
    // Cortex: an outer band with a folded (sinusoidal) inner border, thick enough that grey
    // matter is ≈ 40 % of the brain as in adults; deep grey nuclei.
    let angle = y.atan2(x);
    let fold = 0.14 + 0.05 * (9.0 * angle).sin() * (0.12 * z).cos();
    let deep_grey = ((x.abs() - 23.0) / 9.0).powi(2) + ((y + 2.0) / 16.0).powi(2) < 1.0;
    let grey = brain > 1.0 - fold || deep_grey;
    // Vascular territory: a sector around the lesion axis in the lesion hemisphere (standard:
    // left MCA, patient left = +x in LPS, penumbra within ±45° beyond 18 mm, core within ±20°
    // beyond 35 mm).
    let radius = (x * x + y * y).sqrt();
    let lesion = if anatomy.lesion_side * x > 0.0 {
        let from_axis = (y.atan2(x * anatomy.lesion_side).to_degrees() - anatomy.lesion_axis_deg).abs();
        if from_axis <= anatomy.core_half_angle_deg && radius > anatomy.core_inner_mm {
            2
        } else if from_axis <= anatomy.penumbra_half_angle_deg && radius > anatomy.penumbra_inner_mm {
            1
        } else {
            0
        }
    } else {
        0
    };
    match (grey, lesion) {
        (true, 0) => GM,
        (false, 0) => WM,
        (true, 1) => GM_PENUMBRA,
        (false, 1) => WM_PENUMBRA,
        (true, _) => GM_CORE,
        (false, _) => WM_CORE,
    }
}

fn anatomical(options: &PhantomOptions) -> Result<CtpPhantom> {
    let times = frame_times(options, (0..=60).map(f64::from).collect())?;
    let t = times.as_slice();
    let shape = options.shape.unwrap_or([128, 128, 10]);
    if shape[0] < 32 || shape[1] < 32 || shape[2] < 2 || shape.iter().product::<usize>() > 64 << 20 {
        return Err(Error::invalid_argument(format!("anatomical phantom shape {shape:?} out of range (≥ 32×32×2)")));
    }
    // Field of view 230 × 230 mm in plane, 40 mm coverage by default.
    let slab = options.slab_mm.unwrap_or(40.0);
    if !(4.0..=140.0).contains(&slab) {
        return Err(Error::invalid_argument(format!("anatomical phantom slab {slab} mm out of range (4 to 140 mm)")));
    }
    let spacing = [230.0 / shape[0] as f64, 230.0 / shape[1] as f64, slab / shape[2] as f64];
    let geometry = centred_geometry(shape, spacing)?;
    let anatomy = options.anatomy.unwrap_or_else(Anatomy::standard);
    let aif = anatomy.aif;
    let classes = anatomical_classes(&aif, t, &anatomy);
    let motion = simulate_motion(options, t.len());
    let label_frame = |m: &RigidMotion| -> Array3<u16> {
        let r = m.matrix();
        let mut out = Array3::<u16>::zeros((shape[0], shape[1], shape[2]).f());
        for k in 0..shape[2] {
            for j in 0..shape[1] {
                for i in 0..shape[0] {
                    let p = geometry.index_to_lps([i as f64, j as f64, k as f64]);
                    let d: [f64; 3] = std::array::from_fn(|a| p[a] - m.translation[a]);
                    // Rᵀ·d: where this point was in the reference anatomy.
                    let q: [f64; 3] = std::array::from_fn(|a| r[0][a] * d[0] + r[1][a] * d[1] + r[2][a] * d[2]);
                    out[[i, j, k]] = anatomical_label(q, &anatomy);
                }
            }
        }
        out
    };
    let reference = label_frame(&RigidMotion::default());
    let frames: Vec<Array3<u16>> =
        if options.motion { motion.iter().map(label_frame).collect() } else { vec![reference.clone(); t.len()] };
    let (mut aif_voxels, mut vof_voxels) = (vec![], vec![]);
    for ((i, j, k), &label) in reference.indexed_iter() {
        match label {
            anat::ARTERY => aif_voxels.push([i, j, k]),
            anat::VEIN => vof_voxels.push([i, j, k]),
            _ => {}
        }
    }
    assemble(options, shape, geometry, times, &classes, &frames, aif, aif_voxels, vof_voxels, motion)
}

/// Motion of each frame relative to frame 0: still for the first 12 frames, then a smooth drift
/// with a jerk in the middle (rotations up to ≈ 2°, translations up to ≈ 3 mm).
fn simulate_motion(options: &PhantomOptions, frames: usize) -> Vec<RigidMotion> {
    if !options.motion {
        return vec![RigidMotion::default(); frames];
    }
    let mut rng = SplitMix64::new(options.seed ^ 0x6d6f_7469_6f6e);
    let amplitude_angle = 0.035 * (0.5 + 0.5 * rng.uniform());
    let amplitude_shift = 3.0 * (0.5 + 0.5 * rng.uniform());
    let phases: [f64; 6] = std::array::from_fn(|_| rng.uniform() * std::f64::consts::TAU);
    (0..frames)
        .map(|f| {
            if f < 12 {
                return RigidMotion::default();
            }
            let s = ((f - 12) as f64 / frames.max(13) as f64).min(1.0);
            let jerk = if f >= frames / 2 { 1.0 } else { 0.4 };
            RigidMotion {
                angles: std::array::from_fn(|a| amplitude_angle * jerk * s * (phases[a] + s).sin()),
                translation: std::array::from_fn(|a| amplitude_shift * jerk * s * (phases[a + 3] + s).cos()),
            }
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn assemble(
    options: &PhantomOptions,
    shape: [usize; 3],
    geometry: Geometry,
    times: FrameTimes,
    classes: &[Class],
    frames: &[Array3<u16>],
    aif: ArterialInput,
    aif_voxels: Vec<[usize; 3]>,
    vof_voxels: Vec<[usize; 3]>,
    motion: Vec<RigidMotion>,
) -> Result<CtpPhantom> {
    let nt = times.as_slice().len();
    let [ni, nj, nk] = shape;
    let mut data = Array4::<i16>::zeros((ni, nj, nk, nt).f());
    // A static baseline texture (±2 HU) over the tissue classes, the same in every frame.
    let mut texture_rng = SplitMix64::new(options.seed ^ 0x7465_7874);
    let texture: Vec<f32> = (0..ni * nj * nk).map(|_| (2.0 * texture_rng.gaussian()) as f32).collect();
    for (f, labels) in frames.iter().enumerate() {
        for k in 0..nk {
            let mut rng = SplitMix64::new(options.seed.wrapping_mul(0x9e37_79b9).wrapping_add((f * 65_537 + k) as u64));
            for j in 0..nj {
                for i in 0..ni {
                    let class = &classes[usize::from(labels[[i, j, k]])];
                    let mut hu = class.baseline_hu + class.curve.get(f).copied().unwrap_or(0.0);
                    if class.tissue.is_some() {
                        hu += f64::from(texture[i + ni * (j + nj * k)]);
                    }
                    if options.noise_hu > 0.0 {
                        hu += options.noise_hu * rng.gaussian();
                    }
                    data[[i, j, k, f]] = hu.round().clamp(-1024.0, 3071.0) as i16;
                }
            }
        }
    }
    let ctp = Volume::new_4d(data, geometry, times)?;
    let reference = &frames[0];
    let map = |f: &dyn Fn(&TissueParams) -> f64| -> Result<Volume<f32>> {
        let a = reference.mapv(|l| classes[usize::from(l)].tissue.as_ref().map_or(0.0, |p| f(p) as f32));
        Volume::new_3d(a, geometry)
    };
    let mask = |f: &dyn Fn(&Class) -> bool| -> Result<Volume<u8>> {
        Volume::new_3d(reference.mapv(|l| u8::from(f(&classes[usize::from(l)]))), geometry)
    };
    let truth = Truth {
        cbf: map(&|p| p.cbf)?,
        cbv: map(&|p| p.cbv)?,
        mtt: map(&|p| p.mtt())?,
        delay: map(&|p| p.delay)?,
        tmax: map(&|p| p.delay)?,
        tissue: mask(&|c| c.tissue.is_some())?,
        core: mask(&|c| c.lesion == Lesion::Core)?,
        hypoperfusion: mask(&|c| c.lesion != Lesion::None)?,
        aif_voxels,
        vof_voxels,
        aif: Some(aif),
        motion,
        classes: classes.iter().map(|c| (c.name.clone(), c.tissue)).collect(),
    };
    Ok(CtpPhantom { ctp, truth })
}

/// SplitMix64 (Steele et al. 2014): tiny, fast and stable across platforms and versions.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
    spare: Option<f64>,
}

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed, spare: None }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller, both values used).
    pub fn gaussian(&mut self) -> f64 {
        if let Some(v) = self.spare.take() {
            return v;
        }
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        self.spare = Some(r * s);
        r * c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_integral_matches_quadrature() {
        let g = GammaVariate { t0: 3.0, amplitude: 100.0, alpha: 3, beta: 1.5 };
        for &t in &[2.0f64, 4.0, 7.5, 12.0, 40.0] {
            let span = (t - 3.0).max(0.0);
            let fine: f64 = (0..2000)
                .map(|n| {
                    gauss_legendre_8(3.0 + span * n as f64 / 2000.0, 3.0 + span * (n + 1) as f64 / 2000.0, |s| {
                        g.value(s)
                    })
                })
                .sum();
            assert!((g.integral(t) - fine).abs() < 1e-9 * fine.max(1.0), "t {t}: {} vs {fine}", g.integral(t));
        }
        // Total area: amplitude·e^α·α!/α^α·β.
        let total = 100.0 * 3f64.exp() * 6.0 / 27.0 * 1.5;
        assert!((g.integral(1e4) - total).abs() < 1e-9);
    }

    #[test]
    fn box_convolution_is_exact() {
        // (C_a ⊗ box)(t) = A(t) − A(t − MTT) in closed form.
        let aif = ArterialInput::standard();
        for &mtt in &[1.3, 3.7, 8.0, 24.0] {
            for n in 0..120 {
                let t = 0.5 * n as f64;
                let exact = aif.integral(t) - aif.integral(t - mtt);
                let quad = aif.convolve(IrfShape::Box, mtt, t);
                assert!((quad - exact).abs() < 1e-9 * exact.abs().max(1.0), "mtt {mtt} t {t}: {quad} vs {exact}");
            }
        }
    }

    #[test]
    fn tissue_area_obeys_central_volume_theorem() {
        // ∫ΔHU_tissue = (ρ/k_H)·CBV/100·∫C_a for every IRF shape.
        let aif = ArterialInput::standard();
        for irf in KUDO_IRFS {
            let p = TissueParams { cbf: 40.0, cbv: 4.0, delay: 2.0, irf };
            let area: f64 = (0..4000).map(|n| p.enhancement(&aif, 0.05 * n as f64) * 0.05).sum();
            let expected = RHO / K_H * 4.0 / 100.0 * aif.integral(1e4);
            assert!((area - expected).abs() < 1e-3 * expected, "{irf:?}: {area} vs {expected}");
        }
    }

    #[test]
    fn vof_keeps_the_arterial_area() {
        let aif = ArterialInput::standard();
        let area: f64 = (0..6000).map(|n| vof_value(&aif, 0.05 * n as f64) * 0.05).sum();
        assert!((area / aif.integral(1e4) - 1.0).abs() < 1e-3);
    }

    #[test]
    fn phantoms_are_deterministic_and_hold_their_classes() {
        let mut options = PhantomOptions::new(PhantomKind::Anatomical);
        options.shape = Some([48, 48, 3]);
        options.frame_times = Some((0..20).map(|n| 3.0 * f64::from(n)).collect());
        let a = generate(&options).unwrap();
        let b = generate(&options).unwrap();
        assert_eq!(a.ctp, b.ctp);
        options.seed = 2;
        assert_ne!(generate(&options).unwrap().ctp, a.ctp);
        let t = &a.truth;
        let count = |v: &Volume<u8>| v.data().iter().filter(|&&x| x == 1).count();
        assert!(count(&t.core) > 20 && count(&t.hypoperfusion) > count(&t.core));
        assert!(!t.aif_voxels.is_empty() && !t.vof_voxels.is_empty());
        // Core lies inside hypoperfusion, hypoperfusion inside tissue.
        for ((c, h), s) in t.core.data().iter().zip(t.hypoperfusion.data()).zip(t.tissue.data()) {
            assert!(c <= h && h <= s);
        }
    }

    #[test]
    fn kudo_grid_values() {
        let p = kudo_params(3 * TILE + 5, 6 * TILE, 6).unwrap();
        assert_eq!(p.irf, IrfShape::Exponential);
        assert_eq!(p.cbv, 1.0);
        assert!((p.mtt() - 6.0).abs() < 1e-12 && (p.delay - 3.0).abs() < 1e-12);
        assert!(kudo_params(0, 0, 0).is_none());
    }

    #[test]
    fn motion_moves_the_anatomy() {
        let mut options = PhantomOptions::new(PhantomKind::Anatomical);
        options.shape = Some([48, 48, 4]);
        options.motion = true;
        options.noise_hu = 0.0;
        options.frame_times = Some((0..30).map(f64::from).collect());
        let p = generate(&options).unwrap();
        assert_eq!(p.truth.motion[0], RigidMotion::default());
        assert!(p.truth.motion[29].max_displacement(80.0) > 1.0);
        options.motion = false;
        let still = generate(&options).unwrap();
        let (a, b) = (p.ctp.data(), still.ctp.data());
        assert!(
            (0..48 * 48).all(|n| a[[n % 48, n / 48, 1, 0]] == b[[n % 48, n / 48, 1, 0]]),
            "frame 0 is the reference"
        );
        let differs = (0..48 * 48).filter(|n| a[[n % 48, n / 48, 1, 29]] != b[[n % 48, n / 48, 1, 29]]).count();
        assert!(differs > 50, "{differs} voxels moved");
    }
}
