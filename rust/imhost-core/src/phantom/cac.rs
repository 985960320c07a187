//! A non-contrast, ECG-gated cardiac CT phantom for calcium scoring, with known truth.
//!
//! Patient frame: LPS millimetres centred on the volume, `i` → patient left, `j` → posterior,
//! `k` → superior (axial slices, identity direction). The anatomy, in HU at 120 kV:
//! - body (subcutaneous fat −100, muscle/soft tissue 50), lungs (−850) cut by the mediastinum;
//! - the heart: myocardium 45 HU, four chambers and the aorta filled with blood (40 HU; 350 HU
//!   with `contrast`, for the contrast check), wrapped in epicardial fat (−90 HU);
//! - the coronary tree as tubes in the epicardial fat, projected onto the heart's surface: the
//!   left main (LM) from the aortic root, the LAD down the anterior interventricular groove, the
//!   LCx round the left atrioventricular groove, the RCA round the right one;
//! - **calcified plaques** on the vessel walls: ellipsoids elongated along the vessel, of known
//!   radius, length and peak HU, across the four density bins, drawn so that the exam lands in a
//!   requested risk category A–E (zero plaques for A); small low-density plaques (140–190 HU,
//!   under 1 mm) appear in every category as the hard cases;
//! - the distractors that fool real methods: vertebrae (cortex 700, marrow 220 HU) separated by
//!   discs, the spinous process, the sternum, ribs cut obliquely by the axial slices, and
//!   calcification of the **mitral annulus**, the aortic valve/root and the descending aorta wall;
//! - partial volume (every calcified or bony voxel's occupancy is supersampled 4×4×4) and white
//!   Gaussian noise of `noise_hu`.
//!
//! Truth follows the paper's ground-truth rule (§2.3: the voxels above 130 HU of the components
//! at the annotated positions): the label map marks, per artery, the voxels of each plaque's
//! footprint whose final HU is ≥ 130 (1 LM, 2 LAD, 3 LCx, 4 RCA), and the calcified distractors
//! (5 aortic, 6 mitral); the truth scores are [`crate::cac::agatston`] on labels 1–4.

use ndarray::{Array4, ShapeBuilder};
use rayon::prelude::*;
use serde::Serialize;

use super::ctp::SplitMix64;
use crate::cac::{self, AgatstonOptions, CacScore, Category};
use crate::error::{Error, Result};
use crate::geometry::Geometry;
use crate::volume::Volume;

/// Options of [`generate`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CacPhantomOptions {
    /// Grid `[ni, nj, nk]`.
    pub shape: [usize; 3],
    /// Spacing in mm (`[0.78, 0.78, 3.0]`: a 200 mm cardiac field of view at 3 mm slices).
    pub spacing: [f64; 3],
    /// Seed of anatomy, plaques and noise.
    pub seed: u64,
    /// The risk category to aim at (`None`: drawn from the seed).
    pub category: Option<Category>,
    /// Noise standard deviation, HU.
    pub noise_hu: f64,
    /// Contrast medium in the blood (a CT the score is not defined on).
    pub contrast: bool,
    /// Mitral annulus and aortic calcification (drawn from the seed when true).
    pub distractors: bool,
}

impl Default for CacPhantomOptions {
    fn default() -> Self {
        CacPhantomOptions {
            shape: [256, 256, 40],
            spacing: [0.78, 0.78, 3.0],
            seed: 1,
            category: None,
            noise_hu: 12.0,
            contrast: false,
            distractors: true,
        }
    }
}

/// Truth label of the left main.
pub const LABEL_LM: u8 = 1;
/// Left anterior descending.
pub const LABEL_LAD: u8 = 2;
/// Left circumflex.
pub const LABEL_LCX: u8 = 3;
/// Right coronary artery.
pub const LABEL_RCA: u8 = 4;
/// Aortic (valve, root, wall) calcium: not coronary.
pub const LABEL_AORTIC: u8 = 5;
/// Mitral annulus calcium: not coronary.
pub const LABEL_MITRAL: u8 = 6;

/// Names of the truth labels 1–6.
pub const LABEL_NAMES: [&str; 6] = ["LM", "LAD", "LCx", "RCA", "aortic", "mitral annulus"];

/// One calcified plaque.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Plaque {
    /// Truth label (1–4 coronary, 5–6 distractor).
    pub label: u8,
    /// Centre, LPS mm.
    pub centre_mm: [f64; 3],
    /// Unit axis (along the vessel).
    pub axis: [f64; 3],
    /// Half-length along the axis, mm.
    pub half_length_mm: f64,
    /// Radius across, mm.
    pub radius_mm: f64,
    /// Attenuation of the calcium, HU (before partial volume and noise).
    pub peak_hu: f64,
}

/// A generated exam.
#[derive(Debug)]
pub struct CacPhantom {
    /// The CT in HU.
    pub ct: Volume<i16>,
    /// Truth labels (see the `LABEL_*` constants).
    pub labels: Volume<u8>,
    /// Every calcified plaque drawn, coronary and distractor.
    pub plaques: Vec<Plaque>,
    /// Truth scores of the coronary calcium (labels 1–4).
    pub truth: CacScore,
    /// The category aimed at.
    pub target: Category,
}

type V3 = [f64; 3];

fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
fn add(a: V3, b: V3) -> V3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
fn scale(a: V3, s: f64) -> V3 {
    [a[0] * s, a[1] * s, a[2] * s]
}
fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
fn norm(a: V3) -> f64 {
    dot(a, a).sqrt()
}
fn unit(a: V3) -> V3 {
    scale(a, 1.0 / norm(a).max(1e-12))
}
fn cross(a: V3, b: V3) -> V3 {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

/// An axis-aligned ellipsoid.
#[derive(Debug, Clone, Copy)]
struct Ellipsoid {
    c: V3,
    r: V3,
}

impl Ellipsoid {
    /// (x/a)² + (y/b)² + (z/c)² at `p`.
    fn q(&self, p: V3) -> f64 {
        let d = sub(p, self.c);
        (d[0] / self.r[0]).powi(2) + (d[1] / self.r[1]).powi(2) + (d[2] / self.r[2]).powi(2)
    }
    fn inside(&self, p: V3) -> bool {
        self.q(p) <= 1.0
    }
}

/// The fixed anatomy (varied a little by the seed).
#[derive(Debug, Clone)]
struct Anatomy {
    heart: Ellipsoid,
    chambers: [Ellipsoid; 4],
    aorta_root: V3,
    aorta_radius: f64,
    descending: [f64; 2],
    descending_radius: f64,
    arteries: Vec<(u8, Vec<V3>, f64)>,
    blood_hu: f64,
}

const FAT_SHELL_MM: f64 = 9.0;

impl Anatomy {
    fn new(rng: &mut SplitMix64, contrast: bool) -> Self {
        let j = |rng: &mut SplitMix64, s: f64| (rng.uniform() - 0.5) * 2.0 * s;
        let h = [15.0 + j(rng, 4.0), -10.0 + j(rng, 4.0), -5.0 + j(rng, 4.0)];
        let size = 1.0 + j(rng, 0.08);
        let heart = Ellipsoid { c: h, r: [62.0 * size, 52.0 * size, 55.0 * size] };
        let at = |d: V3, r: V3| Ellipsoid { c: add(h, scale(d, size)), r: scale(r, size) };
        let chambers = [
            at([20.0, 5.0, -8.0], [24.0, 22.0, 34.0]),    // LV
            at([-20.0, -18.0, -8.0], [24.0, 16.0, 34.0]), // RV
            at([6.0, 28.0, 26.0], [22.0, 16.0, 17.0]),    // LA
            at([-30.0, 8.0, 20.0], [18.0, 18.0, 20.0]),   // RA
        ];
        let aorta_root = add(h, scale([-8.0, 2.0, 36.0], size));
        // Points on the surface (projected at build time); LM starts at the root's left side.
        let p = |d: V3| add(h, scale(d, size));
        let lm_end = p([22.0, -38.0, 34.0]);
        let raw: Vec<(u8, Vec<V3>, f64)> = vec![
            (LABEL_LM, vec![add(aorta_root, [12.0, -6.0, -4.0]), lm_end], 2.2),
            (
                LABEL_LAD,
                vec![
                    lm_end,
                    p([28.0, -50.0, 15.0]),
                    p([32.0, -50.0, -10.0]),
                    p([38.0, -40.0, -38.0]),
                    p([40.0, -20.0, -52.0]),
                ],
                1.8,
            ),
            (
                LABEL_LCX,
                vec![lm_end, p([48.0, -20.0, 30.0]), p([60.0, 5.0, 22.0]), p([48.0, 30.0, 14.0]), p([25.0, 42.0, 5.0])],
                1.7,
            ),
            (
                LABEL_RCA,
                vec![
                    add(aorta_root, [-12.0, -8.0, -4.0]),
                    p([-30.0, -42.0, 22.0]),
                    p([-52.0, -22.0, 5.0]),
                    p([-55.0, 5.0, -15.0]),
                    p([-35.0, 32.0, -30.0]),
                ],
                1.9,
            ),
        ];
        let surface = Ellipsoid { c: h, r: heart.r };
        let arteries = raw
            .into_iter()
            .map(|(label, pts, r)| {
                let n = pts.len();
                let pts = pts
                    .into_iter()
                    .enumerate()
                    .map(|(i, q)| {
                        if i == 0 && (label == LABEL_LM || label == LABEL_RCA) {
                            q
                        } else {
                            project(&surface, q, 1.0 + 0.55 * FAT_SHELL_MM / 55.0)
                        }
                    })
                    .collect::<Vec<_>>();
                debug_assert_eq!(pts.len(), n);
                (label, densify(&pts, 1.0), r)
            })
            .collect();
        Anatomy {
            heart,
            chambers,
            aorta_root,
            aorta_radius: 14.0 * size,
            descending: [22.0 + j(rng, 3.0), 58.0 + j(rng, 3.0)],
            descending_radius: 12.0,
            arteries,
            blood_hu: if contrast { 350.0 } else { 40.0 },
        }
    }

    /// The epicardial fat around the heart, where the coronaries run.
    fn shell(&self) -> Ellipsoid {
        Ellipsoid { c: self.heart.c, r: self.heart.r.map(|a| a + FAT_SHELL_MM) }
    }

    /// Whether `p` is in the aorta (ascending or descending).
    fn in_aorta(&self, p: V3) -> bool {
        let [x, y, z] = p;
        let d = self.descending;
        let r = self.aorta_root;
        ((x - d[0]).powi(2) + (y - d[1]).powi(2)).sqrt() <= self.descending_radius
            || (z >= r[2] - 8.0 && ((x - r[0]).powi(2) + (y - r[1]).powi(2)).sqrt() <= self.aorta_radius)
    }

    /// Draw the coronary tubes (blood, in the heart or its fat, never over bone or the aorta)
    /// into `hu`, segment by segment over each segment's bounding box.
    fn draw_arteries(&self, hu: &mut [f32], shape: [usize; 3], sp: V3, origin: V3) {
        let shell = self.shell();
        for (_, pts, radius) in &self.arteries {
            for w in pts.windows(2) {
                let lo = [0, 1, 2]
                    .map(|a| (((w[0][a].min(w[1][a]) - radius - origin[a]) / sp[a]).floor().max(0.0)) as usize);
                let hi =
                    [0, 1, 2].map(|a| (((w[0][a].max(w[1][a]) + radius - origin[a]) / sp[a]).ceil().max(0.0)) as usize);
                for k in lo[2]..=hi[2].min(shape[2] - 1) {
                    for j in lo[1]..=hi[1].min(shape[1] - 1) {
                        for i in lo[0]..=hi[0].min(shape[0] - 1) {
                            let c = [
                                origin[0] + i as f64 * sp[0],
                                origin[1] + j as f64 * sp[1],
                                origin[2] + k as f64 * sp[2],
                            ];
                            if distance_to_polyline(c, w) <= *radius
                                && (self.heart.inside(c) || shell.inside(c))
                                && bone(c).is_none()
                                && !self.in_aorta(c)
                            {
                                hu[i + shape[0] * (j + shape[1] * k)] = self.blood_hu as f32;
                            }
                        }
                    }
                }
            }
        }
    }

    /// HU of the anatomy without coronaries, calcified plaques and noise, and the bone occupancy handled by
    /// supersampling in [`render`].
    fn hu(&self, p: V3) -> f64 {
        let [x, y, z] = p;
        // Bone first: it is drawn over everything.
        if let Some(b) = bone(p) {
            return b;
        }
        let body = ((x / 175.0).powi(2) + ((y - 10.0) / 125.0).powi(2)).sqrt();
        if body > 1.0 {
            return -1000.0;
        }
        if body > 0.91 {
            return -100.0;
        }
        // Aorta: ascending from the root up, descending beside the spine.
        let d = self.descending;
        if ((x - d[0]).powi(2) + (y - d[1]).powi(2)).sqrt() <= self.descending_radius {
            return self.blood_hu;
        }
        let r = self.aorta_root;
        if z >= r[2] - 8.0 && ((x - r[0]).powi(2) + (y - r[1]).powi(2)).sqrt() <= self.aorta_radius {
            return self.blood_hu;
        }
        let q = self.heart.q(p);
        let shell = self.shell();
        if q <= 1.0 {
            if self.chambers.iter().any(|c| c.inside(p)) {
                return self.blood_hu;
            }
            return 45.0;
        }
        if shell.inside(p) {
            return -90.0;
        }
        // Lungs either side of the mediastinum.
        let lung = |cx: f64| Ellipsoid { c: [cx, 12.0, 0.0], r: [62.0, 88.0, 140.0] };
        if (lung(-78.0).inside(p) || lung(85.0).inside(p)) && x.abs() > 25.0 {
            return -850.0;
        }
        50.0
    }
}

/// Bone HU at `p`, if any: vertebrae with discs, spinous process, sternum, ribs.
fn bone(p: V3) -> Option<f64> {
    let [x, y, z] = p;
    // Vertebral bodies: 24 mm tall, 6 mm discs.
    let r = (x * x + (y - 88.0).powi(2)).sqrt();
    if r <= 18.0 {
        let phase = (z + 300.0).rem_euclid(30.0);
        if phase < 6.0 {
            return Some(80.0);
        }
        return Some(if r > 16.0 || !(7.5..=28.5).contains(&phase) { 700.0 } else { 220.0 });
    }
    // Spinous process and laminae.
    if x.abs() <= 4.0 && (108.0..=128.0).contains(&y) && (z + 300.0).rem_euclid(30.0) > 8.0 {
        return Some(500.0);
    }
    // Sternum.
    let s = ((x / 16.0).powi(2) + ((y + 98.0) / 7.0).powi(2)).sqrt();
    if s <= 1.0 {
        return Some(if s > 0.7 { 650.0 } else { 250.0 });
    }
    // Ribs: bands along the chest wall, sloping down anteriorly, every 25 mm.
    let e = ((x / 150.0).powi(2) + ((y - 10.0) / 108.0).powi(2)).sqrt();
    if (e - 1.0).abs() * 120.0 <= 4.5 && !(x.abs() < 28.0 && y < -60.0) {
        let slope = 18.0 * (-(y - 10.0) / 108.0);
        let phase = (z + slope + 300.0).rem_euclid(25.0);
        if phase <= 7.0 {
            return Some(if (e - 1.0).abs() * 120.0 > 2.5 || !(1.5..=5.5).contains(&phase) { 650.0 } else { 260.0 });
        }
    }
    None
}

/// `q` moved along the ray from the ellipsoid's centre onto its surface scaled by `s`.
fn project(e: &Ellipsoid, q: V3, s: f64) -> V3 {
    let d = sub(q, e.c);
    let k = e.q(q).sqrt();
    add(e.c, scale(d, s / k.max(1e-9)))
}

/// Points every `step` mm along the polyline.
fn densify(pts: &[V3], step: f64) -> Vec<V3> {
    let mut out = vec![pts[0]];
    for w in pts.windows(2) {
        let n = (norm(sub(w[1], w[0])) / step).ceil().max(1.0) as usize;
        for s in 1..=n {
            out.push(add(w[0], scale(sub(w[1], w[0]), s as f64 / n as f64)));
        }
    }
    out
}

fn distance_to_polyline(p: V3, pts: &[V3]) -> f64 {
    let mut best = f64::INFINITY;
    for w in pts.windows(2) {
        let seg = sub(w[1], w[0]);
        let t = (dot(sub(p, w[0]), seg) / dot(seg, seg).max(1e-12)).clamp(0.0, 1.0);
        best = best.min(norm(sub(p, add(w[0], scale(seg, t)))));
    }
    best
}

impl Plaque {
    /// Inside test: the ellipsoid with semi-axes (half_length, radius, radius) along `axis`.
    fn inside(&self, p: V3) -> bool {
        let d = sub(p, self.centre_mm);
        let along = dot(d, self.axis);
        let across2 = (dot(d, d) - along * along).max(0.0);
        (along / self.half_length_mm).powi(2) + across2 / self.radius_mm.powi(2) <= 1.0
    }

    fn extent(&self) -> f64 {
        self.half_length_mm.max(self.radius_mm)
    }
}

/// The coronary plaques of a category: how many (`count` inclusive range), their radius,
/// half-length (mm) and peak HU ranges, scaled in size by the retry multiplier.
struct Plan {
    count: (usize, usize),
    radius: (f64, f64),
    half_length: (f64, f64),
    peak_hu: (f64, f64),
}

fn plan(category: Category) -> Plan {
    let p = |count, radius, half_length, peak_hu| Plan { count, radius, half_length, peak_hu };
    match category {
        Category::A => p((0, 0), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0)),
        Category::B => p((1, 2), (0.55, 0.9), (0.8, 1.5), (170.0, 320.0)),
        Category::C => p((2, 4), (0.9, 1.5), (1.0, 3.0), (200.0, 600.0)),
        Category::D => p((3, 6), (1.4, 2.2), (2.0, 5.0), (300.0, 850.0)),
        Category::E => p((6, 12), (1.9, 2.8), (3.0, 7.0), (420.0, 1100.0)),
    }
}

fn draw_coronary_plaques(anatomy: &Anatomy, rng: &mut SplitMix64, category: Category, m: f64) -> Vec<Plaque> {
    let Plan { count: (lo, hi), radius: r, half_length: l, peak_hu: hu } = plan(category);
    let count = lo + (rng.uniform() * (hi - lo + 1) as f64) as usize;
    let mut out = Vec::new();
    let between = |rng: &mut SplitMix64, (a, b): (f64, f64)| a + (b - a) * rng.uniform();
    for _ in 0..count {
        let (radius, half, peak) = (between(rng, r) * m, between(rng, l) * m, between(rng, hu));
        out.push(place_on_artery(anatomy, rng, radius, half, peak));
    }
    // Small low-density plaques, the hard cases, in every category but A.
    if category != Category::A && rng.uniform() < 0.35 {
        let (radius, half, peak) =
            (0.6 + 0.25 * rng.uniform(), 0.9 + 0.6 * rng.uniform(), 150.0 + 40.0 * rng.uniform());
        out.push(place_on_artery(anatomy, rng, radius, half, peak));
    }
    out
}

fn place_on_artery(anatomy: &Anatomy, rng: &mut SplitMix64, radius: f64, half: f64, peak: f64) -> Plaque {
    // Proximal segments calcify more often: LAD and RCA most, LM least.
    let weights = [0.12, 0.38, 0.2, 0.3];
    let mut u = rng.uniform();
    let mut a = 0;
    while a < 3 && u > weights[a] {
        u -= weights[a];
        a += 1;
    }
    let (label, pts, vessel_r) = &anatomy.arteries[a];
    // Proximal two thirds, never the first or last 3 mm.
    let n = pts.len();
    let idx = (3 + (rng.uniform() * ((2 * n / 3).saturating_sub(3)).max(1) as f64) as usize).min(n - 2);
    let axis = unit(sub(pts[idx + 1], pts[idx]));
    let helper = if axis[2].abs() < 0.9 { [0.0, 0.0, 1.0] } else { [1.0, 0.0, 0.0] };
    let u1 = unit(cross(axis, helper));
    let u2 = cross(axis, u1);
    let angle = std::f64::consts::TAU * rng.uniform();
    let off = add(scale(u1, angle.cos()), scale(u2, angle.sin()));
    let centre = add(pts[idx], scale(off, vessel_r * 0.7));
    Plaque {
        label: *label,
        centre_mm: centre,
        axis,
        half_length_mm: half.max(radius * 0.8),
        radius_mm: radius,
        peak_hu: peak,
    }
}

fn draw_distractors(anatomy: &Anatomy, rng: &mut SplitMix64) -> Vec<Plaque> {
    let mut out = Vec::new();
    let h = anatomy.heart.c;
    // Mitral annulus: an arc of beads round the LA–LV junction.
    if rng.uniform() < 0.5 {
        let centre = add(h, [14.0, 17.0, 12.0]);
        let normal = unit([0.3, -0.6, -0.75]);
        let u1 = unit(cross(normal, [1.0, 0.0, 0.0]));
        let u2 = cross(normal, u1);
        let start = std::f64::consts::TAU * rng.uniform();
        let span = 1.0 + 3.0 * rng.uniform();
        let beads = 4 + (rng.uniform() * 8.0) as usize;
        let peak = 350.0 + 600.0 * rng.uniform();
        for b in 0..beads {
            let a = start + span * b as f64 / beads as f64;
            let dir = add(scale(u1, a.cos()), scale(u2, a.sin()));
            let tangent = add(scale(u1, -a.sin()), scale(u2, a.cos()));
            out.push(Plaque {
                label: LABEL_MITRAL,
                centre_mm: add(centre, scale(dir, 15.0)),
                axis: tangent,
                half_length_mm: 2.5,
                radius_mm: 1.4 + rng.uniform(),
                peak_hu: peak,
            });
        }
    }
    // Aortic valve / root.
    if rng.uniform() < 0.45 {
        for _ in 0..1 + (rng.uniform() * 3.0) as usize {
            let a = std::f64::consts::TAU * rng.uniform();
            let r = anatomy.aorta_root;
            out.push(Plaque {
                label: LABEL_AORTIC,
                centre_mm: add(r, [10.0 * a.cos(), 10.0 * a.sin(), -6.0 + 6.0 * rng.uniform()]),
                axis: [0.0, 0.0, 1.0],
                half_length_mm: 2.0 + 2.0 * rng.uniform(),
                radius_mm: 1.5 + rng.uniform(),
                peak_hu: 300.0 + 600.0 * rng.uniform(),
            });
        }
    }
    // Descending aorta wall.
    if rng.uniform() < 0.5 {
        let d = anatomy.descending;
        for _ in 0..1 + (rng.uniform() * 3.0) as usize {
            let a = std::f64::consts::TAU * rng.uniform();
            out.push(Plaque {
                label: LABEL_AORTIC,
                centre_mm: [d[0] + 11.0 * a.cos(), d[1] + 11.0 * a.sin(), -50.0 + 100.0 * rng.uniform()],
                axis: [0.0, 0.0, 1.0],
                half_length_mm: 3.0 + 4.0 * rng.uniform(),
                radius_mm: 1.5 + rng.uniform(),
                peak_hu: 250.0 + 700.0 * rng.uniform(),
            });
        }
    }
    out
}

/// Supersampling per axis for partial volume.
const SUPER: usize = 4;

/// Generate one exam.
pub fn generate(options: &CacPhantomOptions) -> Result<CacPhantom> {
    let [ni, nj, nk] = options.shape;
    if ni < 16 || nj < 16 || nk < 4 {
        return Err(Error::invalid_argument(format!(
            "a CAC phantom needs at least 16×16×4 voxels, not {:?}",
            options.shape
        )));
    }
    if options.spacing.iter().any(|s| !s.is_finite() || *s <= 0.0)
        || options.noise_hu.is_nan()
        || options.noise_hu < 0.0
    {
        return Err(Error::invalid_argument("spacing must be > 0 and noise ≥ 0"));
    }
    let n = ni * nj * nk;
    crate::memory::check(crate::memory::bytes_of(&[n], 4 + 4 + 2 + 1), "the CAC phantom")?;
    let sp = options.spacing;
    let origin = [0, 1, 2].map(|a| -((options.shape[a] - 1) as f64) * sp[a] / 2.0);
    let geometry = Geometry::axis_aligned(sp, origin)?;
    let mut rng = SplitMix64::new(options.seed ^ 0xCAC0_CAC0);
    let anatomy = Anatomy::new(&mut rng, options.contrast);
    let target = options.category.unwrap_or(Category::ALL[(rng.uniform() * 5.0) as usize % 5]);
    let distractors = if options.distractors { draw_distractors(&anatomy, &mut rng) } else { Vec::new() };

    let pos = |p: usize| -> V3 {
        let (i, j, k) = (p % ni, (p / ni) % nj, p / (ni * nj));
        [origin[0] + i as f64 * sp[0], origin[1] + j as f64 * sp[1], origin[2] + k as f64 * sp[2]]
    };
    // The anatomy, supersampled where bone makes the value change within a voxel.
    let mut base: Vec<f32> = (0..n)
        .into_par_iter()
        .map(|p| {
            let c = pos(p);
            let v = anatomy.hu(c);
            let near_bone = bone(c).is_some()
                || [0, 1, 2].iter().any(|&a| {
                    let mut q = c;
                    q[a] += sp[a] * 0.5;
                    let mut r = c;
                    r[a] -= sp[a] * 0.5;
                    bone(q).is_some() || bone(r).is_some()
                });
            if near_bone { supersample(c, sp, |q| anatomy.hu(q)) as f32 } else { v as f32 }
        })
        .collect();
    anatomy.draw_arteries(&mut base, options.shape, sp, origin);

    // Noise is fixed by the seed, independent of the plaques drawn.
    let noise: Vec<f32> = (0..nk)
        .into_par_iter()
        .flat_map_iter(|k| {
            let mut r = SplitMix64::new(options.seed.wrapping_mul(0x9E37_79B9).wrapping_add(k as u64 * 7919 + 17));
            (0..ni * nj).map(move |_| (r.gaussian() * options.noise_hu) as f32).collect::<Vec<_>>()
        })
        .collect();

    let mut multiplier = 1.0;
    let mut best: Option<CacPhantom> = None;
    for _attempt in 0..8 {
        let mut plaques = draw_coronary_plaques(&anatomy, &mut rng, target, multiplier);
        plaques.extend(distractors.iter().copied());
        let (ct, labels) = render(&base, &noise, &plaques, options.shape, sp, origin);
        let region: Vec<u32> = labels.iter().map(|&l| u32::from((1..=4).contains(&l)) * u32::from(l)).collect();
        let truth = cac::agatston(
            &ct.iter().map(|&v| f32::from(v)).collect::<Vec<_>>(),
            options.shape,
            sp,
            Some(&region),
            &AgatstonOptions::default(),
        )?;
        let got = truth.category;
        let to_volume = |data: Vec<i16>| {
            Volume::new_3d(ndarray::Array3::from_shape_vec((ni, nj, nk).f(), data).expect("sized"), geometry)
        };
        let lab = Array4::from_shape_vec((ni, nj, nk, 1).f(), labels).expect("sized");
        let phantom =
            CacPhantom { ct: to_volume(ct)?, labels: Volume::from_parts(lab, geometry, None)?, plaques, truth, target };
        let done = got == target;
        best = Some(phantom);
        if done {
            break;
        }
        multiplier *= if got < target { 1.3 } else { 1.0 / 1.3 };
    }
    Ok(best.expect("at least one attempt"))
}

fn supersample(c: V3, sp: V3, f: impl Fn(V3) -> f64) -> f64 {
    let mut sum = 0.0;
    for a in 0..SUPER {
        for b in 0..SUPER {
            for d in 0..SUPER {
                let o = |s: usize, h: f64| ((s as f64 + 0.5) / SUPER as f64 - 0.5) * h;
                sum += f([c[0] + o(a, sp[0]), c[1] + o(b, sp[1]), c[2] + o(d, sp[2])]);
            }
        }
    }
    sum / (SUPER * SUPER * SUPER) as f64
}

/// The CT (HU, i16) and truth labels with `plaques` drawn over the anatomy `base` plus `noise`.
fn render(
    base: &[f32],
    noise: &[f32],
    plaques: &[Plaque],
    shape: [usize; 3],
    sp: V3,
    origin: V3,
) -> (Vec<i16>, Vec<u8>) {
    let [ni, nj, nk] = shape;
    let mut hu: Vec<f32> = base.to_vec();
    let mut labels = vec![0u8; hu.len()];
    let mut footprint = vec![0u8; hu.len()];
    for plaque in plaques {
        let e = plaque.extent() + 1.0;
        let lo = [0, 1, 2].map(|a| (((plaque.centre_mm[a] - e - origin[a]) / sp[a]).floor().max(0.0)) as usize);
        let hi = [0, 1, 2].map(|a| (((plaque.centre_mm[a] + e - origin[a]) / sp[a]).ceil().max(0.0)) as usize);
        for k in lo[2]..=hi[2].min(nk - 1) {
            for j in lo[1]..=hi[1].min(nj - 1) {
                for i in lo[0]..=hi[0].min(ni - 1) {
                    let c = [origin[0] + i as f64 * sp[0], origin[1] + j as f64 * sp[1], origin[2] + k as f64 * sp[2]];
                    let f = supersample(c, sp, |q| f64::from(u8::from(plaque.inside(q))));
                    if f <= 0.0 {
                        continue;
                    }
                    let p = i + (j + k * nj) * ni;
                    let v = f64::from(hu[p]);
                    hu[p] = (v * (1.0 - f) + plaque.peak_hu * f).max(v) as f32;
                    footprint[p] = plaque.label;
                }
            }
        }
    }
    let ct: Vec<i16> = hu.iter().zip(noise).map(|(&v, &e)| (v + e).round().clamp(-1024.0, 3071.0) as i16).collect();
    for p in 0..ct.len() {
        if footprint[p] != 0 && f64::from(ct[p]) >= cac::THRESHOLD_HU {
            labels[p] = footprint[p];
        }
    }
    (ct, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64, category: Category) -> CacPhantom {
        generate(&CacPhantomOptions {
            shape: [160, 160, 28],
            spacing: [1.25, 1.25, 3.0],
            seed,
            category: Some(category),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn tissues_have_their_hu_and_truth_is_consistent() {
        let p = small(3, Category::C);
        let ct = p.ct.data();
        let lab = p.labels.data();
        // Centre of the LV: blood; far corner of the grid inside the body wall region or air.
        let g = p.ct.geometry();
        let at = |lps: V3| {
            let ijk = g.lps_to_index(lps);
            ct[[ijk[0].round() as usize, ijk[1].round() as usize, ijk[2].round() as usize, 0]]
        };
        assert!((at([35.0, -5.0, -13.0]) as f64 - 40.0).abs() < 60.0, "LV blood");
        assert!(at([-80.0, 10.0, 0.0]) < -600, "right lung");
        // Truth: every labelled voxel is ≥ 130 HU; the coronary truth score is recomputed here.
        for (c, l) in ct.iter().zip(lab.iter()) {
            if *l != 0 {
                assert!(*c >= 130);
            }
        }
        assert!(p.truth.agatston > 0.0);
        assert_eq!(p.truth.category, Category::of(p.truth.agatston));
        assert!(p.plaques.iter().any(|q| (1..=4).contains(&q.label)));
    }

    #[test]
    fn categories_are_reached_and_a_is_empty() {
        let a = small(5, Category::A);
        assert_eq!(a.truth.agatston, 0.0);
        assert!(a.labels.data().iter().all(|&l| l == 0 || l >= LABEL_AORTIC));
        let mut hits = 0;
        for (s, c) in [(1, Category::B), (2, Category::C), (3, Category::D), (4, Category::E)] {
            let p = small(s, c);
            hits += usize::from(p.truth.category == c);
            assert!(p.truth.category != Category::A, "{c:?} drew plaques");
        }
        assert!(hits >= 3, "most targets reached ({hits}/4)");
    }

    #[test]
    fn thresholding_alone_counts_bone_and_distractors() {
        // The plain 130 HU score (no region) is far above the coronary truth: the spine, ribs
        // and sternum are calcium to a threshold.
        let p = small(7, Category::B);
        let hu: Vec<f32> = p.ct.data().iter().map(|&v| f32::from(v)).collect();
        let all = cac::agatston(&hu, [160, 160, 28], [1.25, 1.25, 3.0], None, &AgatstonOptions::default()).unwrap();
        assert!(all.agatston > 50.0 * p.truth.agatston.max(1.0), "{} vs {}", all.agatston, p.truth.agatston);
    }

    #[test]
    fn same_seed_same_exam() {
        let a = small(9, Category::D);
        let b = small(9, Category::D);
        assert_eq!(a.ct.data(), b.ct.data());
        assert_eq!(a.truth.agatston, b.truth.agatston);
    }
}
