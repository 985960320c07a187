//! Head motion: a cheap estimate from the skull, and rigid correction through a registration
//! back end supplied by the caller (the `itk-sys` crate provides ITK's; the core stays pure Rust).
//!
//! Estimate per frame, against the reference frame: the skull (HU ≥ `bone_hu`, which contrast
//! never reaches) is thresholded, and the displacement is the larger of its centroid shift and
//! its mean surface displacement (voxels that changed side × voxel volume / skull surface area).
//! Both are in mm. Registration runs only when the largest estimate reaches `negligible_mm`, so
//! a still study costs one thresholding pass.

use rayon::prelude::*;
use serde::Serialize;

use crate::control::RunControl;
use crate::error::Result;
use crate::geometry::Geometry;
use crate::phantom::ctp::RigidMotion;

/// A rigid registration back end.
pub trait RigidRegistration: Sync {
    /// Register `moving` onto `fixed` (3-D images in linear order `i + ni·(j + nj·k)`, HU) and
    /// return the motion found and `moving` resampled onto `fixed`'s grid.
    fn register(
        &self,
        fixed: &[f32],
        moving: &[f32],
        shape: [usize; 3],
        geometry: &Geometry,
    ) -> Result<(RigidMotion, Vec<f32>)>;

    /// A short description for the report (library, transform, metric).
    fn describe(&self) -> String;
}

/// Options of motion estimation and correction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct MotionOptions {
    /// Correct motion when a back end is available (true).
    pub correct: bool,
    /// Below this estimated displacement (mm) registration is skipped (0.5).
    pub negligible_mm: f64,
    /// HU threshold of the skull (700).
    pub bone_hu: f64,
    /// Displacement (mm) above which the study is flagged even after correction (10).
    pub too_much_mm: f64,
    /// The reference frame (0).
    pub reference_frame: usize,
    /// Frames whose estimate is below this (mm) are left as they are when others are
    /// registered (0.1): the estimate reads 0 on still frames and sees only about a third of
    /// a rotation's displacement at the edge of the head, so `negligible_mm` decides whether
    /// the study needs correction and this which frames.
    pub register_mm: f64,
    /// In-plane voxel size (mm) frames are registered at (2): finer studies are shrunk by a
    /// whole factor first (0.45 mm pixels: 4×, 1.8 mm), and the transform found is applied to the
    /// full-size frame.
    pub coarse_mm: f64,
}

impl Default for MotionOptions {
    fn default() -> Self {
        MotionOptions {
            correct: true,
            negligible_mm: 0.5,
            bone_hu: 700.0,
            too_much_mm: 10.0,
            reference_frame: 0,
            register_mm: 0.1,
            coarse_mm: 2.0,
        }
    }
}

/// Per-frame motion estimate in mm (0 for the reference frame).
/// `frame(t, out)` fills frame `t` of `frames` into `out`.
pub fn estimate(
    frames: usize,
    frame: &(dyn Fn(usize, &mut [f32]) + Sync),
    shape: [usize; 3],
    spacing: [f64; 3],
    options: &MotionOptions,
) -> Vec<f64> {
    let mut reference = vec![0.0f32; shape.iter().product()];
    frame(options.reference_frame.min(frames - 1), &mut reference);
    let bone = |f: &[f32]| -> Vec<bool> { f.iter().map(|&v| f64::from(v) >= options.bone_hu).collect() };
    let ref_bone = bone(&reference);
    let [ni, nj, nk] = shape;
    let centroid = |b: &[bool]| -> Option<[f64; 3]> {
        let (mut s, mut n) = ([0.0; 3], 0usize);
        for (v, _) in b.iter().enumerate().filter(|(_, x)| **x) {
            let ijk = [v % ni, (v / ni) % nj, v / (ni * nj)];
            for a in 0..3 {
                s[a] += ijk[a] as f64 * spacing[a];
            }
            n += 1;
        }
        (n > 0).then(|| s.map(|x| x / n as f64))
    };
    let ref_centroid = centroid(&ref_bone);
    // Skull surface area: faces between bone and non-bone.
    let mut area = 0.0;
    let face = [spacing[1] * spacing[2], spacing[0] * spacing[2], spacing[0] * spacing[1]];
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                let v = i + ni * (j + nj * k);
                if !ref_bone[v] {
                    continue;
                }
                let ijk = [i, j, k];
                for a in 0..3 {
                    for d in [-1i64, 1] {
                        let mut n = ijk.map(|x| x as i64);
                        n[a] += d;
                        let inside = n.iter().zip(shape).all(|(&x, s)| x >= 0 && (x as usize) < s);
                        if !inside || !ref_bone[n[0] as usize + ni * (n[1] as usize + nj * n[2] as usize)] {
                            area += face[a];
                        }
                    }
                }
            }
        }
    }
    let voxel_volume = spacing.iter().product::<f64>();
    let Some(c0) = ref_centroid else { return vec![0.0; frames] };
    (0..frames)
        .into_par_iter()
        .map_init(
            || vec![0.0f32; reference.len()],
            |f, t| {
                frame(t, f);
                // One pass: the bone centroid (as `centroid` sums it) and the voxels whose
                // bone label changed.
                let (mut s, mut count, mut changed) = ([0.0f64; 3], 0usize, 0usize);
                for (v, (&value, &was_bone)) in f.iter().zip(&ref_bone).enumerate() {
                    let is_bone = f64::from(value) >= options.bone_hu;
                    changed += usize::from(is_bone != was_bone);
                    if is_bone {
                        let ijk = [v % ni, (v / ni) % nj, v / (ni * nj)];
                        for a in 0..3 {
                            s[a] += ijk[a] as f64 * spacing[a];
                        }
                        count += 1;
                    }
                }
                if count == 0 {
                    return 0.0;
                }
                let c1 = s.map(|x| x / count as f64);
                let shift = (0..3).map(|a| (c1[a] - c0[a]).powi(2)).sum::<f64>().sqrt();
                let surface = if area > 0.0 { changed as f64 * voxel_volume / area } else { 0.0 };
                shift.max(surface)
            },
        )
        .collect()
}

/// ITK's `Euler3DTransform` rotation (its default order): R = Rz(γ)·Rx(α)·Ry(β).
pub fn euler_matrix([a, b, g]: [f64; 3]) -> [[f64; 3]; 3] {
    let (sa, ca, sb, cb, sg, cg) = (a.sin(), a.cos(), b.sin(), b.cos(), g.sin(), g.cos());
    // Rx·Ry first, then Rz on the left.
    let rxry = [[cb, 0.0, sb], [sa * sb, ca, -sa * cb], [-ca * sb, sa, ca * cb]];
    std::array::from_fn(|i| {
        std::array::from_fn(|j| match i {
            0 => cg * rxry[0][j] - sg * rxry[1][j],
            1 => sg * rxry[0][j] + cg * rxry[1][j],
            _ => rxry[2][j],
        })
    })
}

/// A rigid transform of fixed → moving points, `p' = R·(p − c) + c + t` (mm, LPS), R from
/// [`euler_matrix`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RigidTransform {
    /// Angles and translation.
    pub motion: RigidMotion,
    /// The centre `c` (mm, LPS).
    pub centre: [f64; 3],
}

impl RigidTransform {
    /// Resample `moving` (on `shape`/`geometry`) through the transform onto the same grid, as
    /// ITK's linear interpolator does: a point counts as inside up to half a voxel beyond the
    /// outer voxel centres (edge voxels repeat there) and −1024 HU is written outside. Slices in
    /// parallel.
    pub fn resample(&self, moving: &[f32], shape: [usize; 3], geometry: &Geometry, out: &mut [f32]) {
        let [ni, nj, _] = shape;
        let (a, b) = self.affine(geometry);
        let at = |i: usize, j: usize, k: usize| moving[i + ni * (j + nj * k)];
        out.par_chunks_mut(ni * nj).enumerate().for_each(|(k, slice)| {
            for j in 0..nj {
                for (i, value) in slice[j * ni..(j + 1) * ni].iter_mut().enumerate() {
                    *value = interpolate(&at, shape, moved_index(&a, &b, [i, j, k]));
                }
            }
        });
    }

    /// The map from an output voxel index to the continuous index it samples in the moving
    /// frame, `ijk ↦ A·ijk + b` (LPS → moved point `R·(p − c) + c + t` → index).
    pub fn affine(&self, geometry: &Geometry) -> ([[f64; 3]; 3], [f64; 3]) {
        let m = geometry.ijk_to_lps();
        let r = euler_matrix(self.motion.angles);
        let lin: [[f64; 3]; 3] = std::array::from_fn(|i| [m[i][0], m[i][1], m[i][2]]);
        let inv = crate::geometry::inverse3(&lin).expect("validated geometry is invertible");
        let o = [m[0][3], m[1][3], m[2][3]];
        let mul = |x: &[[f64; 3]; 3], y: &[[f64; 3]; 3]| -> [[f64; 3]; 3] {
            std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|k| x[i][k] * y[k][j]).sum()))
        };
        let apply = |x: &[[f64; 3]; 3], v: [f64; 3]| -> [f64; 3] {
            std::array::from_fn(|i| (0..3).map(|k| x[i][k] * v[k]).sum())
        };
        let a = mul(&inv, &mul(&r, &lin));
        let c = self.centre;
        let ro_c = apply(&r, [o[0] - c[0], o[1] - c[1], o[2] - c[2]]);
        let moved_origin: [f64; 3] = std::array::from_fn(|i| ro_c[i] + c[i] + self.motion.translation[i] - o[i]);
        (a, apply(&inv, moved_origin))
    }
}

/// `A·ijk + b`: the continuous index output voxel `ijk` samples (see [`RigidTransform::affine`]).
pub fn moved_index(a: &[[f64; 3]; 3], b: &[f64; 3], [i, j, k]: [usize; 3]) -> [f64; 3] {
    let (i, j, k) = (i as f64, j as f64, k as f64);
    std::array::from_fn(|d| a[d][0] * i + a[d][1] * j + a[d][2] * k + b[d])
}

/// The moving frame's value at continuous index `p` (`at(i, j, k)` reads a voxel), as ITK's
/// linear interpolator gives it: inside up to half a voxel beyond the outer voxel centres
/// (edge voxels repeat there), −1024 HU outside. Every reader of a corrected frame (whole
/// frames and gathered curves) goes through this one function, so they agree bit for bit.
pub fn interpolate(at: &impl Fn(usize, usize, usize) -> f32, shape: [usize; 3], p: [f64; 3]) -> f32 {
    let inner = [(shape[0] - 1) as f64, (shape[1] - 1) as f64, (shape[2] - 1) as f64];
    if (0..3).all(|d| p[d] >= 0.0 && p[d] < inner[d]) {
        // All eight neighbours exist: no clamping (the common case).
        let (x, y, z) = (p[0] as usize, p[1] as usize, p[2] as usize);
        let (fx, fy, fz) = ((p[0] - x as f64) as f32, (p[1] - y as f64) as f32, (p[2] - z as f64) as f32);
        let l = |u: f32, v: f32, f: f32| u + (v - u) * f;
        let lower = l(l(at(x, y, z), at(x + 1, y, z), fx), l(at(x, y + 1, z), at(x + 1, y + 1, z), fx), fy);
        let upper =
            l(l(at(x, y, z + 1), at(x + 1, y, z + 1), fx), l(at(x, y + 1, z + 1), at(x + 1, y + 1, z + 1), fx), fy);
        l(lower, upper, fz)
    } else if (0..3).all(|d| p[d] >= -0.5 && p[d] <= shape[d] as f64 - 0.5) {
        trilinear(at, shape, p)
    } else {
        -1024.0
    }
}

/// Linear interpolation at continuous index `p` (inside [−0.5, n − 0.5] on every axis; the
/// edge voxels repeat beyond their centres).
fn trilinear(at: &impl Fn(usize, usize, usize) -> f32, [ni, nj, nk]: [usize; 3], p: [f64; 3]) -> f32 {
    let axis = |x: f64, n: usize| -> (usize, usize, f64) {
        let x = x.clamp(0.0, (n - 1) as f64);
        let lo = (x.floor() as usize).min(n - 1);
        let hi = (lo + 1).min(n - 1);
        (lo, hi, x - lo as f64)
    };
    let (i0, i1, fi) = axis(p[0], ni);
    let (j0, j1, fj) = axis(p[1], nj);
    let (k0, k1, fk) = axis(p[2], nk);
    let at = |i: usize, j: usize, k: usize| f64::from(at(i, j, k));
    let lerp = |a: f64, b: f64, f: f64| a + (b - a) * f;
    let plane = |k: usize| lerp(lerp(at(i0, j0, k), at(i1, j0, k), fi), lerp(at(i0, j1, k), at(i1, j1, k), fi), fj);
    lerp(plane(k0), plane(k1), fk) as f32
}

/// The grid frames are registered on: every in-plane axis shrunk by the largest whole factor
/// that keeps its spacing ≤ `target_mm` (the slice axis too where slices are that thin),
/// remainder voxels at the far edge left out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CoarseGrid {
    /// Shrink factor per axis (1: unchanged).
    pub factor: [usize; 3],
    /// Size of the coarse grid.
    pub shape: [usize; 3],
    /// Its geometry (same directions; voxel centres at the centres of the blocks).
    pub geometry: Geometry,
}

impl CoarseGrid {
    /// The coarse grid of `shape`/`geometry` for voxels of at most `target_mm`.
    pub fn new(shape: [usize; 3], geometry: &Geometry, target_mm: f64) -> Self {
        let factor: [usize; 3] = std::array::from_fn(|a| {
            let f = (target_mm / geometry.spacing[a]).floor();
            // Keep at least 16 voxels along an axis (a thin slab stays as it is).
            if f.is_finite() && f >= 2.0 { (f as usize).min(shape[a] / 16).max(1) } else { 1 }
        });
        let coarse: [usize; 3] = std::array::from_fn(|a| shape[a] / factor[a]);
        let half: [f64; 3] = std::array::from_fn(|a| 0.5 * (factor[a] - 1) as f64);
        let mut g = *geometry;
        g.origin = geometry.index_to_lps(half);
        g.spacing = std::array::from_fn(|a| geometry.spacing[a] * factor[a] as f64);
        CoarseGrid { factor, shape: coarse, geometry: g }
    }

    /// Whether the grid is the frame's own.
    pub fn is_identity(&self) -> bool {
        self.factor == [1, 1, 1]
    }

    /// Block means of a frame on `full` (the grid's source shape).
    pub fn shrink(&self, frame: &[f32], full: [usize; 3]) -> Vec<f32> {
        let [ci, cj, ck] = self.shape;
        let [fi, fj, fk] = self.factor;
        let scale = 1.0 / (fi * fj * fk) as f64;
        let mut out = vec![0.0f32; ci * cj * ck];
        out.par_chunks_mut(ci * cj).enumerate().for_each(|(k, slice)| {
            for j in 0..cj {
                for i in 0..ci {
                    let mut s = 0.0f64;
                    for z in k * fk..(k + 1) * fk {
                        for y in j * fj..(j + 1) * fj {
                            let row = full[0] * (y + full[1] * z);
                            s += frame[row + i * fi..row + (i + 1) * fi].iter().map(|&v| f64::from(v)).sum::<f64>();
                        }
                    }
                    slice[i + ci * j] = (s * scale) as f32;
                }
            }
        });
        out
    }

    /// The centre of the grid (mm, LPS): where ITK's geometric initialiser puts the transform's
    /// centre.
    pub fn centre(&self) -> [f64; 3] {
        self.geometry.index_to_lps(std::array::from_fn(|a| 0.5 * (self.shape[a] - 1) as f64))
    }
}

/// How one frame is brought onto the reference.
#[derive(Debug, Clone)]
pub enum FrameMotion {
    /// Left as it is (the reference, or a frame whose estimate is negligible).
    Still,
    /// Resampled through a transform when it is read.
    Transform(RigidTransform),
    /// The back end's own resampling at full size (its transform did not reproduce its coarse
    /// resampling under the grid-centre convention).
    Resampled(Vec<f32>),
}

/// Motion correction of a study: how each frame is read.
#[derive(Debug)]
pub struct Correction {
    /// Per frame.
    pub frames: Vec<FrameMotion>,
    /// The motion found per frame (zero for still frames).
    pub motions: Vec<RigidMotion>,
    /// Frames registered on the coarse grid and resampled by the pipeline.
    pub coarse_frames: usize,
    /// Frames whose transform failed the convention check and were registered at full size.
    pub full_size_frames: usize,
    /// The coarse grid's shrink factors.
    pub factor: [usize; 3],
    shape: [usize; 3],
    geometry: Geometry,
    scratch: std::sync::Mutex<Vec<Vec<f32>>>,
}

impl Correction {
    /// Fill frame `t`, corrected, into `out`; `source` reads the study's own frames.
    pub fn frame(&self, t: usize, source: &(dyn Fn(usize, &mut [f32]) + Sync), out: &mut [f32]) {
        match &self.frames[t] {
            FrameMotion::Still => source(t, out),
            FrameMotion::Resampled(data) => out.copy_from_slice(data),
            FrameMotion::Transform(transform) => {
                // A frame-sized buffer from the pool (freed with the correction), not a fresh
                // allocation per read.
                let pooled = self.scratch.lock().ok().and_then(|mut p| p.pop());
                let mut moving = pooled.unwrap_or_else(|| vec![0.0f32; out.len()]);
                source(t, &mut moving);
                transform.resample(&moving, self.shape, &self.geometry, out);
                if let Ok(mut p) = self.scratch.lock() {
                    p.push(moving);
                }
            }
        }
    }
}

/// Whether `ours` (the pipeline's resampling through the back end's transform) reproduces the
/// back end's own resampling `theirs`: both inside the field of view at ≥ 99 % of the voxels
/// where either is, and a mean |difference| there ≤ 0.5 HU (linear interpolation in double
/// precision differs from ITK's by ≪ 0.01 HU; a centre 1 mm off gives several HU at the skull).
pub fn same_resampling(ours: &[f32], theirs: &[f32]) -> bool {
    let (mut both, mut either, mut diff) = (0usize, 0usize, 0.0f64);
    for (&a, &b) in ours.iter().zip(theirs) {
        let (ia, ib) = (a > -1023.5, b > -1023.5);
        if ia || ib {
            either += 1;
        }
        if ia && ib {
            both += 1;
            diff += f64::from((a - b).abs());
        }
    }
    either == 0 || (both as f64 >= 0.99 * either as f64 && diff / both.max(1) as f64 <= 0.5)
}

/// Register the frames that need it to the reference, in parallel: those whose skull estimate
/// reaches `options.register_mm`. Each is registered on the coarse grid (`options.coarse_mm`)
/// and resampled at full size by the pipeline when read; a frame whose transform does not
/// reproduce the back end's own coarse resampling under the grid-centre convention is registered
/// again at full size and the back end's resampling kept.
#[allow(clippy::too_many_arguments)]
pub fn correct(
    frames: usize,
    source: &(dyn Fn(usize, &mut [f32]) + Sync),
    estimated_mm: &[f64],
    shape: [usize; 3],
    geometry: &Geometry,
    registration: &dyn RigidRegistration,
    options: &MotionOptions,
    control: &RunControl<'_>,
) -> Result<Correction> {
    let r = options.reference_frame.min(frames - 1);
    let nvox = shape.iter().product::<usize>();
    let grid = CoarseGrid::new(shape, geometry, options.coarse_mm);
    let mut reference = vec![0.0f32; nvox];
    source(r, &mut reference);
    let coarse_reference = if grid.is_identity() { reference.clone() } else { grid.shrink(&reference, shape) };
    let moving: Vec<usize> = (0..frames).filter(|&t| t != r && estimated_mm[t] >= options.register_mm).collect();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let found: Vec<(usize, FrameMotion, RigidMotion)> = moving
        .par_iter()
        .map(|&t| -> Result<(usize, FrameMotion, RigidMotion)> {
            control.check()?;
            let mut frame = vec![0.0f32; nvox];
            source(t, &mut frame);
            let coarse = if grid.is_identity() { frame.clone() } else { grid.shrink(&frame, shape) };
            let (motion, theirs) = registration.register(&coarse_reference, &coarse, grid.shape, &grid.geometry)?;
            let transform = RigidTransform { motion, centre: grid.centre() };
            let mut ours = vec![0.0f32; coarse.len()];
            transform.resample(&coarse, grid.shape, &grid.geometry, &mut ours);
            let result = if same_resampling(&ours, &theirs) {
                (t, FrameMotion::Transform(transform), motion)
            } else {
                tracing::debug!(frame = t, "the transform does not reproduce the back end's resampling: full size");
                let (motion, resampled) = registration.register(&reference, &frame, shape, geometry)?;
                (t, FrameMotion::Resampled(resampled), motion)
            };
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            control.report("motion correction", n as f64 / moving.len().max(1) as f64)?;
            Ok(result)
        })
        .collect::<Result<_>>()?;
    let mut correction = Correction {
        frames: vec![FrameMotion::Still; frames],
        motions: vec![RigidMotion::default(); frames],
        coarse_frames: 0,
        full_size_frames: 0,
        factor: grid.factor,
        shape,
        geometry: *geometry,
        scratch: std::sync::Mutex::new(Vec::new()),
    };
    for (t, how, motion) in found {
        match how {
            FrameMotion::Transform(_) => correction.coarse_frames += 1,
            FrameMotion::Resampled(_) => correction.full_size_frames += 1,
            FrameMotion::Still => {}
        }
        correction.frames[t] = how;
        correction.motions[t] = motion;
    }
    Ok(correction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_sees_a_shift_and_nothing_else() {
        let shape = [40, 40, 4];
        let spacing = [1.0, 1.0, 4.0];
        let ring = |shift: f64| -> Vec<f32> {
            let mut f = vec![30.0f32; 40 * 40 * 4];
            for k in 0..4 {
                for j in 0..40 {
                    for i in 0..40 {
                        let (x, y) = (i as f64 - 20.0 - shift, j as f64 - 20.0);
                        let r = (x * x + y * y).sqrt();
                        if (14.0..17.0).contains(&r) {
                            f[i + 40 * (j + 40 * k)] = 1000.0;
                        }
                    }
                }
            }
            f
        };
        let frames = [ring(0.0), ring(0.0), ring(2.0)];
        let e = estimate(
            3,
            &|t, out: &mut [f32]| out.copy_from_slice(&frames[t]),
            shape,
            spacing,
            &MotionOptions::default(),
        );
        assert_eq!(e[0], 0.0);
        assert_eq!(e[1], 0.0);
        assert!((1.0..3.5).contains(&e[2]), "{}", e[2]);
    }

    #[test]
    fn resampling_through_a_whole_voxel_shift_moves_the_image_and_fills_air() {
        let shape = [6, 5, 4];
        let geometry = Geometry { spacing: [0.5, 2.0, 3.0], ..Geometry::identity() };
        let image: Vec<f32> = (0..120).map(|v| v as f32).collect();
        let still = RigidTransform { motion: RigidMotion::default(), centre: [1.0, 2.0, 3.0] };
        let mut out = vec![0.0f32; 120];
        still.resample(&image, shape, &geometry, &mut out);
        assert_eq!(out, image);
        // p' = p + (1 mm, 2 mm, 0): two voxels along i, one along j.
        let shift =
            RigidTransform { motion: RigidMotion { angles: [0.0; 3], translation: [1.0, 2.0, 0.0] }, centre: [0.0; 3] };
        shift.resample(&image, shape, &geometry, &mut out);
        for k in 0..4 {
            for j in 0..5 {
                for i in 0..6 {
                    let v = i + 6 * (j + 5 * k);
                    let expected = if i + 2 < 6 && j + 1 < 5 { image[v + 2 + 6] } else { -1024.0 };
                    assert_eq!(out[v], expected, "voxel {i} {j} {k}");
                }
            }
        }
    }

    #[test]
    fn a_rotation_about_the_centre_keeps_the_centre_and_follows_itk_order() {
        let r = euler_matrix([0.1, -0.2, 0.3]);
        // Rz(0.3)·Rx(0.1)·Ry(−0.2) by hand: orthonormal, and its (2, 0) entry is −cos(α)·sin(β).
        assert!((r[2][0] - (-(0.1f64.cos()) * (-0.2f64).sin())).abs() < 1e-12);
        for a in 0..3 {
            for b in 0..3 {
                let dot: f64 = (0..3).map(|k| r[k][a] * r[k][b]).sum();
                assert!((dot - f64::from(u8::from(a == b))).abs() < 1e-12);
            }
        }
        // 9×9×1 grid, centre voxel (4, 4): a 90° turn about z maps the row through the centre
        // onto the column through it.
        let shape = [9, 9, 1];
        let geometry = Geometry::identity();
        let image: Vec<f32> = (0..81).map(|v| if v / 9 == 4 { (v % 9) as f32 } else { 0.0 }).collect();
        let turn = RigidTransform {
            motion: RigidMotion { angles: [0.0, 0.0, std::f64::consts::FRAC_PI_2], translation: [0.0; 3] },
            centre: [4.0, 4.0, 0.0],
        };
        let mut out = vec![0.0f32; 81];
        turn.resample(&image, shape, &geometry, &mut out);
        // out(p) = image(R·(p − c) + c): at (4, j) the point maps to (4 − (j − 4), 4) = (8 − j, 4).
        for j in 0..9 {
            assert!((out[4 + 9 * j] - (8 - j) as f32).abs() < 1e-4, "row {j}: {}", out[4 + 9 * j]);
        }
        let coarse = CoarseGrid::new([64, 48, 4], &Geometry { spacing: [0.5, 0.5, 5.0], ..Geometry::identity() }, 2.0);
        assert_eq!((coarse.factor, coarse.shape), ([4, 3, 1], [16, 16, 4]));
        let full_centre = [31.5 * 0.5, 23.5 * 0.5, 1.5 * 5.0];
        assert!(coarse.centre().iter().zip(full_centre).all(|(a, b)| (a - b).abs() < 1e-9));
    }
}
