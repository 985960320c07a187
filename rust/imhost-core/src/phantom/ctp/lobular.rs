//! The lobular phantom: a second CT-perfusion phantom family, built differently from the
//! anatomical one in every part a method could learn, so that agreement on it says something
//! about perfusion rather than about our own generator. It is never used for training.
//!
//! | part | anatomical | lobular |
//! |---|---|---|
//! | head | ellipsoids | a star-shaped outline (random harmonics), skull 5–8 mm thick around it |
//! | grey matter | a folded band, deep nuclei | a 6 mm ribbon, CSF sulci lined with cortex, basal ganglia |
//! | tissue values | one value per class | per class, scaled cell by cell (20 Voronoi cells: CBF ±15 %, CBV ±10 %, delay 0.3–2.5 s, exponential or dispersed residue) |
//! | lesion | sectors of a vascular territory | a union of 2–4 ellipsoid blobs (core, semi-axes 10–20 mm in plane) inside their 1.9× level set (penumbra) |
//! | arteries | straight tubes along z, a fixed 70 % partial volume | anterior cerebral arteries tilted through the slab and middle cerebral arteries running in plane; partial volume from 3×3×3 sub-samples |
//! | vein | one tube, input ⊗ exponential (5 s, 3 s) | the sagittal sinus front and back, input ⊗ gamma (3 s, mean 6 s) |
//! | arterial input | two gamma variates | two Gaussians and a slowly washing-out plateau (after Parker et al. 2006's population AIF, rescaled to CT) |
//! | residue function | exponential | exponential (k = 1) or dispersed (k = 2 gamma transit times) |
//! | baseline | white ±2 HU texture | a smooth ±3 HU bias field |
//! | noise | white, uniform | correlated in plane ([¼ ½ ¼] kernel), 0.85–1.15× the nominal σ from the centre outwards |
//! | partial volume | none | every voxel mixes its 27 sub-samples |
//!
//! Conventions are the anatomical phantom's: Tmax = δ (every residue function here is largest at
//! its onset), core = rCBF < 30 % and hypoperfusion = Tmax > 6 s hold by construction (lesion
//! classes sit clear of both thresholds). A voxel is tissue, core or hypoperfused in the truth
//! when at least half its sub-samples are; its truth CBF, CBV and delay are the means over its
//! tissue sub-samples.

use ndarray::{Array3, Array4, ShapeBuilder};
use rayon::prelude::*;

use super::{CtpPhantom, IrfShape, PhantomOptions, SplitMix64, TissueParams, Truth, centred_geometry, frame_times};
use crate::error::{Error, Result};
use crate::perfusion::constants::{K_H, RHO};
use crate::volume::Volume;

/// The arterial input: two Gaussians (first pass, recirculation) and a plateau that rises with
/// a sigmoid after the first pass and washes out slowly, in ΔHU.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PopulationInput {
    /// First-pass peak time (s), width σ (s) and peak height (ΔHU).
    pub first: (f64, f64, f64),
    /// Recirculation peak time, width and height.
    pub second: (f64, f64, f64),
    /// Plateau height (ΔHU), washout rate (1/s), sigmoid centre (s) and steepness (1/s).
    pub plateau: (f64, f64, f64, f64),
}

impl PopulationInput {
    /// A bolus drawn from `rng`: first-pass peak at 12–20 s, 2.0–3.2 s wide, 250–500 ΔHU.
    fn draw(rng: &mut SplitMix64) -> Self {
        let mut u = |lo: f64, hi: f64| lo + (hi - lo) * rng.uniform();
        let (t1, s1, a1) = (u(12.0, 20.0), u(2.0, 3.2), u(250.0, 500.0));
        let second = (t1 + u(8.0, 12.0), u(3.5, 5.0), a1 * u(0.15, 0.3));
        let plateau = (a1 * u(0.04, 0.08), u(0.01, 0.03), t1 + u(2.0, 5.0), 1.2);
        PopulationInput { first: (t1, s1, a1), second, plateau }
    }

    /// C_a(t) in ΔHU (0 before t = 0).
    pub fn value(&self, t: f64) -> f64 {
        if t < 0.0 {
            return 0.0;
        }
        let g = |(c, s, a): (f64, f64, f64)| a * (-0.5 * ((t - c) / s).powi(2)).exp();
        let (h, rate, centre, steep) = self.plateau;
        g(self.first)
            + g(self.second)
            + h * (-rate * (t - centre).max(0.0)).exp() / (1.0 + (-steep * (t - centre)).exp())
    }

    /// `∫₀ᵗ C_a(s)·R(t−s) ds` by composite 8-point Gauss–Legendre on panels of ≤ 0.25 s, split
    /// at the residue function's kink (none for the shapes used here).
    pub fn convolve(&self, irf: IrfShape, mtt: f64, t: f64) -> f64 {
        if t <= 0.0 {
            return 0.0;
        }
        let pieces = (t / 0.25).ceil() as usize;
        let h = t / pieces as f64;
        (0..pieces)
            .map(|p| {
                super::gauss_legendre_8(p as f64 * h, (p + 1) as f64 * h, |s| self.value(s) * irf.residue(t - s, mtt))
            })
            .sum()
    }

    /// The sinus outflow: the input delayed 3 s and dispersed by a unit-area gamma kernel (shape
    /// 3, mean 6 s), so its area is the input's.
    fn venous(&self, t: f64) -> f64 {
        let (delay, k, theta) = (3.0, 3.0, 2.0);
        let kernel = |u: f64| if u <= 0.0 { 0.0 } else { u.powf(k - 1.0) * (-u / theta).exp() / (2.0 * theta.powi(3)) };
        let t = t - delay;
        if t <= 0.0 {
            return 0.0;
        }
        let pieces = (t / 0.25).ceil() as usize;
        let h = t / pieces as f64;
        (0..pieces)
            .map(|p| super::gauss_legendre_8(p as f64 * h, (p + 1) as f64 * h, |s| self.value(s) * kernel(t - s)))
            .sum()
    }
}

/// The structural classes of one sub-sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Air,
    Bone,
    Csf,
    Artery,
    Vein,
    /// A tissue class (index into [`TISSUES`]) in a Voronoi cell.
    Tissue(u8, u8),
}

/// Tissue classes: name, baseline HU, CBF, CBV, lesion (0 none, 1 penumbra, 2 core).
const TISSUES: [(&str, f64, f64, f64, u8); 7] = [
    ("cortex", 38.0, 60.0, 4.0, 0),
    ("white matter", 31.0, 22.0, 2.0, 0),
    ("basal ganglia", 37.0, 50.0, 3.4, 0),
    ("cortex penumbra", 38.0, 33.0, 4.2, 1),
    ("white matter penumbra", 31.0, 14.0, 2.3, 1),
    ("cortex core", 38.0, 6.0, 1.0, 2),
    ("white matter core", 31.0, 3.0, 0.6, 2),
];
const CELLS: usize = 20;
/// Sub-samples per axis.
const SUB: usize = 3;

/// One drawn head: outline, sulci, cells, lesion, bolus.
struct Head {
    harmonics: [(f64, f64); 4],
    skull: (f64, f64),
    sulci: Vec<f64>,
    cells: Vec<([f64; 2], f64, f64, f64, IrfShape)>,
    side: f64,
    blobs: Vec<([f64; 3], [f64; 3], f64)>,
    penumbra_delay: f64,
    core_delay: f64,
    bias_phase: [f64; 2],
}

impl Head {
    fn draw(seed: u64) -> (Head, PopulationInput) {
        let mut rng = SplitMix64::new(seed ^ 0x006c_6f62_756c_6172);
        let harmonics = std::array::from_fn(|_| (0.02 + 0.03 * rng.uniform(), std::f64::consts::TAU * rng.uniform()));
        let skull = (5.0 + 3.0 * rng.uniform(), std::f64::consts::TAU * rng.uniform());
        let sulci = (0..14).map(|_| std::f64::consts::TAU * rng.uniform()).collect();
        let cells = (0..CELLS)
            .map(|_| {
                let (r, a) = (60.0 * rng.uniform().sqrt(), std::f64::consts::TAU * rng.uniform());
                let irf = if rng.uniform() < 0.5 { IrfShape::Exponential } else { IrfShape::Dispersed };
                (
                    [r * a.cos(), 1.2 * r * a.sin()],
                    0.85 + 0.3 * rng.uniform(),
                    0.9 + 0.2 * rng.uniform(),
                    0.3 + 2.2 * rng.uniform(),
                    irf,
                )
            })
            .collect();
        let side = if rng.uniform() < 0.5 { 1.0 } else { -1.0 };
        // The lesion: 2–4 blobs around a centre 30–45 mm out, within ±40° of the lateral axis.
        let (r, a) = (30.0 + 15.0 * rng.uniform(), (-40.0 + 80.0 * rng.uniform()).to_radians());
        let centre = [side * r * a.cos(), r * a.sin(), -6.0 + 12.0 * rng.uniform()];
        let blobs = (0..2 + (rng.uniform() * 3.0) as usize)
            .map(|_| {
                let c: [f64; 3] =
                    std::array::from_fn(|d| centre[d] + (if d == 2 { 6.0 } else { 12.0 }) * (rng.uniform() - 0.5));
                let axes = [10.0 + 10.0 * rng.uniform(), 10.0 + 10.0 * rng.uniform(), 15.0 + 10.0 * rng.uniform()];
                (c, axes, std::f64::consts::PI * rng.uniform())
            })
            .collect();
        let penumbra_delay = 7.5 + 2.5 * rng.uniform();
        let core_delay = penumbra_delay + 2.0 + 2.0 * rng.uniform();
        let bias_phase = [std::f64::consts::TAU * rng.uniform(), std::f64::consts::TAU * rng.uniform()];
        let bolus = PopulationInput::draw(&mut rng);
        (Head { harmonics, skull, sulci, cells, side, blobs, penumbra_delay, core_delay, bias_phase }, bolus)
    }

    /// The outer head radius (mm) in direction `angle`.
    fn outline(&self, angle: f64) -> f64 {
        let ellipse = 1.0 / ((angle.cos() / 0.82).powi(2) + angle.sin().powi(2)).sqrt();
        let wobble: f64 =
            self.harmonics.iter().enumerate().map(|(n, (a, p))| a * ((n as f64 + 2.0) * angle + p).cos()).sum();
        92.0 * ellipse * (1.0 + wobble)
    }

    /// The lesion's level: below 1 inside a blob (core), below 1.9 in the penumbra.
    fn lesion_level(&self, p: [f64; 3]) -> f64 {
        self.blobs
            .iter()
            .map(|(c, axes, turn)| {
                let (dx, dy, dz) = (p[0] - c[0], p[1] - c[1], p[2] - c[2]);
                let (s, co) = turn.sin_cos();
                let (u, v) = (co * dx + s * dy, -s * dx + co * dy);
                ((u / axes[0]).powi(2) + (v / axes[1]).powi(2) + (dz / axes[2]).powi(2)).sqrt()
            })
            .fold(f64::INFINITY, f64::min)
    }

    fn label(&self, p: [f64; 3]) -> Label {
        let [x, y, z] = p;
        let r = x.hypot(y);
        let angle = y.atan2(x);
        let outer = self.outline(angle) * (1.0 - (z / 95.0).powi(2)).max(0.0).sqrt();
        if r > outer {
            return Label::Air;
        }
        let skull = self.skull.0 + 1.5 * (3.0 * angle + self.skull.1).sin();
        let brain_edge = outer - skull - 1.5;
        if r > outer - skull {
            return Label::Bone;
        }
        // The sagittal sinus, front and back on the midline just inside the skull.
        let sinus_y = outer - skull - 4.0;
        if x.powi(2) + (y.abs() - sinus_y * 0.98).powi(2) < 3.5f64.powi(2) && y.abs() > 40.0 {
            return Label::Vein;
        }
        if r > brain_edge {
            return Label::Csf;
        }
        // Anterior cerebral arteries: either side of the midline, tilted forward through the slab.
        if (x.abs() - 3.0).powi(2) + (y + 38.0 - 0.35 * z).powi(2) < 1.5f64.powi(2) {
            return Label::Artery;
        }
        // Middle cerebral arteries: in plane, from 8 to 50 mm lateral, 2 mm above the slab centre.
        if (8.0..50.0).contains(&x.abs()) && (y + 6.0 + 0.08 * x.abs()).powi(2) + (z - 2.0).powi(2) < 1.8f64.powi(2) {
            return Label::Artery;
        }
        // Ventricles: two slanted ellipses either side of the midline.
        let (vx, vy) = (x.abs() - 8.0, y + 4.0);
        let (s, c) = 0.35f64.sin_cos();
        if ((c * vx + s * vy) / 4.5).powi(2) + ((-s * vx + c * vy) / 19.0).powi(2) + (z / 28.0).powi(2) < 1.0 {
            return Label::Csf;
        }
        // Sulci: radial CSF clefts 1.4 mm wide, 14 mm deep, lined with cortex.
        let depth = brain_edge - r;
        let mut near_sulcus = false;
        for &a in &self.sulci {
            let across = r * (angle - a).sin().abs();
            if (angle - a).cos() > 0.0 && depth < 14.0 {
                if across < 0.7 {
                    return Label::Csf;
                }
                near_sulcus |= across < 3.5;
            }
        }
        let basal = ((x.abs() - 20.0) / 8.0).powi(2) + ((y - 2.0) / 13.0).powi(2) + (z / 20.0).powi(2) < 1.0;
        let cortex = depth < 6.0 || near_sulcus;
        let cell = self
            .cells
            .iter()
            .enumerate()
            .map(|(n, (c, ..))| (n, (x - c[0]).powi(2) + (y - c[1]).powi(2)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(0, |(n, _)| n) as u8;
        let lesion = if self.side * x > 2.0 {
            let level = self.lesion_level(p);
            if level < 1.0 {
                2
            } else if level < 1.9 {
                1
            } else {
                0
            }
        } else {
            0
        };
        let class = match (lesion, cortex || basal) {
            (0, _) if basal && !cortex => 2,
            (0, true) => 0,
            (0, false) => 1,
            (1, true) => 3,
            (1, false) => 4,
            (_, true) => 5,
            (_, false) => 6,
        };
        Label::Tissue(class, cell)
    }

    /// The perfusion of tissue class `class` in cell `cell`.
    fn params(&self, class: u8, cell: u8) -> TissueParams {
        let (_, _, cbf, cbv, lesion) = TISSUES[usize::from(class)];
        let (_, f, v, d, irf) = self.cells[usize::from(cell)];
        let delay = match lesion {
            0 => d,
            1 => self.penumbra_delay,
            _ => self.core_delay,
        };
        TissueParams { cbf: cbf * f, cbv: cbv * v, delay, irf: if lesion == 0 { irf } else { IrfShape::Dispersed } }
    }

    fn bias(&self, p: [f64; 3]) -> f64 {
        3.0 * (0.031 * p[0] + self.bias_phase[0]).sin() * (0.023 * p[1] + self.bias_phase[1]).cos()
    }
}

/// What one voxel holds: its sub-samples' mean baseline, and how many fell in each curve.
#[derive(Default, Clone)]
struct Mix {
    baseline: f64,
    /// (curve index, sub-samples) — curve 0 the artery, 1 the vein, 2 + class·CELLS + cell tissue.
    parts: Vec<(u16, u8)>,
}

pub(super) fn generate(options: &PhantomOptions) -> Result<CtpPhantom> {
    if options.motion {
        return Err(Error::unsupported("motion is simulated for the anatomical phantom only"));
    }
    let times = frame_times(options, (0..=50).map(f64::from).collect())?;
    let t = times.as_slice().to_vec();
    let shape = options.shape.unwrap_or([128, 128, 8]);
    if shape[0] < 32 || shape[1] < 32 || shape[2] < 2 || shape.iter().product::<usize>() > 64 << 20 {
        return Err(Error::invalid_argument(format!("lobular phantom shape {shape:?} out of range (≥ 32×32×2)")));
    }
    // 230 mm in plane, 40 mm coverage at the default 8 slices of 5 mm.
    let spacing = [230.0 / shape[0] as f64, 230.0 / shape[1] as f64, 40.0 / shape[2] as f64];
    let geometry = centred_geometry(shape, spacing)?;
    let (head, bolus) = Head::draw(options.seed);
    let [ni, nj, nk] = shape;
    let nvox = ni * nj * nk;
    let to_curve = |label: Label| -> (u16, f64) {
        match label {
            Label::Air => (u16::MAX, -1000.0),
            Label::Bone => (u16::MAX, 1100.0),
            Label::Csf => (u16::MAX, 8.0),
            Label::Artery => (0, 42.0),
            Label::Vein => (1, 42.0),
            Label::Tissue(class, cell) => {
                (2 + u16::from(class) * CELLS as u16 + u16::from(cell), TISSUES[usize::from(class)].1)
            }
        }
    };
    let samples = (SUB * SUB * SUB) as f64;
    // Per voxel: the mix of curves and the truth sums (tissue sub-samples, CBF, CBV, delay, core, lesion).
    let voxels: Vec<(Mix, [f64; 6], u8, u8)> = (0..nvox)
        .into_par_iter()
        .map(|v| {
            let (i, j, k) = (v % ni, (v / ni) % nj, v / (ni * nj));
            let mut mix = Mix::default();
            let mut truth = [0.0f64; 6];
            let (mut arteries, mut veins) = (0u8, 0u8);
            for s in 0..SUB * SUB * SUB {
                let off = |n: usize| (n as f64 + 0.5) / SUB as f64 - 0.5;
                let idx = [i as f64 + off(s % SUB), j as f64 + off((s / SUB) % SUB), k as f64 + off(s / (SUB * SUB))];
                let label = head.label(geometry.index_to_lps(idx));
                let (curve, baseline) = to_curve(label);
                mix.baseline += baseline / samples;
                if curve != u16::MAX {
                    match mix.parts.iter_mut().find(|(c, _)| *c == curve) {
                        Some(part) => part.1 += 1,
                        None => mix.parts.push((curve, 1)),
                    }
                }
                match label {
                    Label::Artery => arteries += 1,
                    Label::Vein => veins += 1,
                    Label::Tissue(class, cell) => {
                        let p = head.params(class, cell);
                        let lesion = TISSUES[usize::from(class)].4;
                        truth[0] += 1.0;
                        truth[1] += p.cbf;
                        truth[2] += p.cbv;
                        truth[3] += p.delay;
                        truth[4] += f64::from(lesion == 2);
                        truth[5] += f64::from(lesion > 0);
                    }
                    _ => {}
                }
            }
            if truth[0] > 0.0 {
                mix.baseline += head.bias(geometry.index_to_lps([i as f64, j as f64, k as f64])) * truth[0] / samples;
            }
            (mix, truth, arteries, veins)
        })
        .collect();
    // Every curve, once.
    let mut curves: Vec<Vec<f64>> =
        vec![t.iter().map(|&s| bolus.value(s)).collect(), t.iter().map(|&s| bolus.venous(s)).collect()];
    let mut classes = vec![
        ("air".to_string(), None),
        ("bone".to_string(), None),
        ("csf".to_string(), None),
        ("artery".to_string(), None),
        ("vein".to_string(), None),
    ];
    let tissue_curves: Vec<Vec<f64>> = (0..TISSUES.len() * CELLS)
        .into_par_iter()
        .map(|n| {
            let p = head.params((n / CELLS) as u8, (n % CELLS) as u8);
            let scale = (RHO / K_H) * (p.cbf / 6000.0);
            t.iter().map(|&s| scale * bolus.convolve(p.irf, p.mtt(), s - p.delay)).collect()
        })
        .collect();
    for n in 0..TISSUES.len() * CELLS {
        classes.push((
            format!("{} / cell {}", TISSUES[n / CELLS].0, n % CELLS),
            Some(head.params((n / CELLS) as u8, (n % CELLS) as u8)),
        ));
    }
    curves.extend(tissue_curves);
    let nt = t.len();
    let mut data = Array4::<i16>::zeros((ni, nj, nk, nt).f());
    // Noise: white per slice and frame, smoothed in plane by [¼ ½ ¼]², rescaled to unit σ and
    // modulated 1.15 → 0.85 from the centre out.
    let kernel_gain = 1.0 / 0.375;
    let modulation: Vec<f64> = (0..ni * nj)
        .map(|n| {
            let p = geometry.index_to_lps([(n % ni) as f64, (n / ni) as f64, 0.0]);
            1.15 - 0.3 * (p[0].hypot(p[1]) / 100.0).min(1.0)
        })
        .collect();
    let planes: Vec<(usize, usize, Vec<i16>)> = (0..nk * nt)
        .into_par_iter()
        .map(|kf| {
            let (k, f) = (kf % nk, kf / nk);
            let mut noise = vec![0.0f64; ni * nj];
            if options.noise_hu > 0.0 {
                let mut rng = SplitMix64::new(
                    options.seed.wrapping_mul(0x2545_f491).wrapping_add((f * 65_537 + k) as u64) ^ 0x006c_6f62,
                );
                let white: Vec<f64> = (0..ni * nj).map(|_| rng.gaussian()).collect();
                let smooth = |src: &[f64], stride: usize, len: usize| -> Vec<f64> {
                    (0..ni * nj)
                        .map(|n| {
                            let pos = (n / stride) % len;
                            let at = |d: isize| {
                                let q = (pos as isize + d).clamp(0, len as isize - 1) as usize;
                                src[n - pos * stride + q * stride]
                            };
                            0.25 * at(-1) + 0.5 * at(0) + 0.25 * at(1)
                        })
                        .collect()
                };
                let along_i = smooth(&white, 1, ni);
                let both = smooth(&along_i, ni, nj);
                for n in 0..ni * nj {
                    noise[n] = options.noise_hu * kernel_gain * both[n] * modulation[n];
                }
            }
            let plane = (0..ni * nj)
                .map(|n| {
                    let (mix, ..) = &voxels[n + ni * nj * k];
                    let signal: f64 =
                        mix.parts.iter().map(|&(c, m)| curves[usize::from(c)][f] * f64::from(m)).sum::<f64>() / samples;
                    (mix.baseline + signal + noise[n]).round().clamp(-1024.0, 3071.0) as i16
                })
                .collect();
            (k, f, plane)
        })
        .collect();
    for (k, f, plane) in planes {
        for j in 0..nj {
            for i in 0..ni {
                data[[i, j, k, f]] = plane[i + ni * j];
            }
        }
    }
    let ctp = Volume::new_4d(data, geometry, times)?;
    let map = |f: &dyn Fn(&[f64; 6]) -> f64| -> Result<Volume<f32>> {
        let a = Array3::from_shape_fn((ni, nj, nk).f(), |(i, j, k)| {
            let truth = &voxels[i + ni * (j + nj * k)].1;
            if truth[0] >= samples / 2.0 { f(truth) as f32 } else { 0.0 }
        });
        Volume::new_3d(a, geometry)
    };
    let mask = |f: &dyn Fn(&[f64; 6]) -> bool| -> Result<Volume<u8>> {
        let a = Array3::from_shape_fn((ni, nj, nk).f(), |(i, j, k)| u8::from(f(&voxels[i + ni * (j + nj * k)].1)));
        Volume::new_3d(a, geometry)
    };
    let half = samples / 2.0;
    let (mut aif_voxels, mut vof_voxels) = (vec![], vec![]);
    for (v, (_, _, arteries, veins)) in voxels.iter().enumerate() {
        let index = [v % ni, (v / ni) % nj, v / (ni * nj)];
        if f64::from(*arteries) >= half {
            aif_voxels.push(index);
        }
        if f64::from(*veins) >= half {
            vof_voxels.push(index);
        }
    }
    let truth = Truth {
        cbf: map(&|s| s[1] / s[0])?,
        cbv: map(&|s| s[2] / s[0])?,
        mtt: map(&|s| 60.0 * s[2] / s[1])?,
        delay: map(&|s| s[3] / s[0])?,
        tmax: map(&|s| s[3] / s[0])?,
        tissue: mask(&|s| s[0] >= half)?,
        core: mask(&|s| s[4] >= half)?,
        hypoperfusion: mask(&|s| s[5] >= half)?,
        aif_voxels,
        vof_voxels,
        aif: None,
        motion: vec![],
        classes,
    };
    Ok(CtpPhantom { ctp, truth })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phantom::ctp::PhantomKind;

    fn bolus() -> PopulationInput {
        PopulationInput::draw(&mut SplitMix64::new(7))
    }

    /// ∫₀ᵀ f by the trapezoid rule on a 1 ms grid (an independent check of the quadrature).
    fn trapezoid(f: impl Fn(f64) -> f64, end: f64) -> f64 {
        let n = (end / 1e-3).round() as usize;
        (0..n).map(|m| 0.5 * (f(m as f64 * 1e-3) + f((m + 1) as f64 * 1e-3)) * 1e-3).sum()
    }

    #[test]
    fn convolution_matches_a_fine_trapezoid() {
        let b = bolus();
        for irf in [IrfShape::Exponential, IrfShape::Dispersed, IrfShape::Box] {
            for &t in &[5.0, 17.3, 30.0, 48.0] {
                let quad = b.convolve(irf, 6.0, t);
                let fine = trapezoid(|s| if s <= t { b.value(s) * irf.residue(t - s, 6.0) } else { 0.0 }, t);
                // The box's jump inside one panel costs the quadrature ~1e-3 of the area.
                let tol = if irf == IrfShape::Box { 2e-3 } else { 1e-6 };
                assert!((quad - fine).abs() <= tol * fine.abs().max(1.0), "{irf:?} t {t}: {quad} vs {fine}");
            }
        }
    }

    #[test]
    fn tissue_and_vein_keep_the_areas_indicator_dilution_requires() {
        // A plateau that washes out within the integration window (the drawn ones take minutes).
        let b = PopulationInput { plateau: (20.0, 0.1, 18.0, 1.2), ..bolus() };
        let (end, step) = (200.0, 0.05);
        let n = (end / step) as usize;
        let area = |f: &dyn Fn(f64) -> f64| -> f64 {
            (0..n).map(|m| 0.5 * (f(m as f64 * step) + f((m + 1) as f64 * step)) * step).sum()
        };
        let input = area(&|s| b.value(s));
        // Vein: the input's area (what partial-volume scaling relies on).
        let vein = area(&|s| b.venous(s));
        assert!((vein / input - 1.0).abs() < 2e-3, "vein {vein} vs input {input}");
        // Tissue: ∫R = MTT for the dispersed residue function, so ∫C_t = (ρ/k_H)·CBV/100·∫C_a.
        let mtt = 60.0 * 3.0 / 40.0;
        let residue = area(&|u| IrfShape::Dispersed.residue(u, mtt));
        assert!((residue / mtt - 1.0).abs() < 1e-4, "∫R {residue} vs MTT {mtt}");
    }

    #[test]
    fn the_truth_holds_together_and_sits_clear_of_the_thresholds() {
        let mut options = PhantomOptions::new(PhantomKind::Lobular);
        options.shape = Some([128, 128, 4]);
        options.noise_hu = 0.0;
        options.frame_times = Some((0..=25).map(|n| 2.0 * f64::from(n)).collect());
        let a = generate(&options).unwrap();
        assert_eq!(a.ctp, generate(&options).unwrap().ctp, "deterministic");
        let t = &a.truth;
        let count = |v: &Volume<u8>| v.data().iter().filter(|&&x| x == 1).count();
        assert!(count(&t.core) > 20 && count(&t.hypoperfusion) > 2 * count(&t.core), "a core inside a penumbra");
        assert!(!t.aif_voxels.is_empty() && !t.vof_voxels.is_empty());
        for ((c, h), s) in t.core.data().iter().zip(t.hypoperfusion.data()).zip(t.tissue.data()) {
            assert!(c <= h && h <= s);
        }
        // Normal tissue arrives within 2.5 s and lesions after 7.5 s (Tmax 6 s between); every
        // core class flows at < 30 % of the mean normal flow (the rCBF reference), every penumbra
        // class at > 30 %.
        let (cbf, hypo, tissue) = (t.cbf.data(), t.hypoperfusion.data(), t.tissue.data());
        let normal: Vec<f64> = (0..cbf.len())
            .filter_map(|n| {
                let at = |v: &ndarray::ArrayView4<'_, u8>| v.as_slice_memory_order().unwrap()[n];
                (at(&tissue.view()) == 1 && at(&hypo.view()) == 0)
                    .then(|| f64::from(cbf.as_slice_memory_order().unwrap()[n]))
            })
            .collect();
        let reference = normal.iter().sum::<f64>() / normal.len() as f64;
        let (mut normal_max_delay, mut lesion_min_delay) = (0.0f64, f64::INFINITY);
        for (name, p) in t.classes.iter().filter_map(|(n, p)| p.map(|p| (n, p))) {
            if name.contains("core") || name.contains("penumbra") {
                lesion_min_delay = lesion_min_delay.min(p.delay);
            } else {
                normal_max_delay = normal_max_delay.max(p.delay);
            }
            if name.contains("core") {
                assert!(p.cbf < 0.3 * reference, "{name}: {} against {reference}", p.cbf);
            }
            if name.contains("penumbra") {
                assert!(p.cbf > 0.3 * reference, "{name}: {} against {reference}", p.cbf);
            }
        }
        assert!(normal_max_delay <= 2.5 && lesion_min_delay >= 7.5, "{normal_max_delay} {lesion_min_delay}");
        // Partial volume: some voxels hold part of an artery.
        let [ni, nj, nk, _] = a.ctp.shape();
        let peak = a.ctp.data().index_axis(ndarray::Axis(3), 10).to_owned();
        let partial = (0..ni * nj * nk)
            .filter(|&v| {
                let hu = f64::from(peak[[v % ni, (v / ni) % nj, v / (ni * nj)]]);
                (120.0..300.0).contains(&hu)
            })
            .count();
        assert!(partial > 0, "no voxel is partly artery");
    }

    #[test]
    fn noise_has_the_nominal_sigma_and_is_correlated_in_plane() {
        let mut options = PhantomOptions::new(PhantomKind::Lobular);
        options.shape = Some([64, 64, 2]);
        options.noise_hu = 10.0;
        options.frame_times = Some((0..8).map(f64::from).collect());
        let noisy = generate(&options).unwrap();
        options.noise_hu = 0.0;
        let clean = generate(&options).unwrap();
        let (a, b) = (noisy.ctp.data(), clean.ctp.data());
        // Inside the brain (truth tissue), before the bolus arrives.
        let tissue = noisy.truth.tissue.data();
        let (mut sum2, mut cross, mut n) = (0.0f64, 0.0f64, 0usize);
        for f in 0..8 {
            for j in 0..64 {
                for i in 0..63 {
                    if tissue[[i, j, 1, 0]] == 1 && tissue[[i + 1, j, 1, 0]] == 1 {
                        let e = f64::from(a[[i, j, 1, f]] - b[[i, j, 1, f]]);
                        let e1 = f64::from(a[[i + 1, j, 1, f]] - b[[i + 1, j, 1, f]]);
                        sum2 += e * e;
                        cross += e * e1;
                        n += 1;
                    }
                }
            }
        }
        let sigma = (sum2 / n as f64).sqrt();
        let correlation = cross / sum2;
        assert!((8.5..11.5).contains(&sigma), "σ {sigma}");
        // [¼ ½ ¼] gives neighbours a correlation of 2/3 along each axis.
        assert!((0.55..0.75).contains(&correlation), "neighbour correlation {correlation}");
    }
}
