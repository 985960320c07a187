//! A synthetic cell-nuclei image set standing in for the 2018 Data Science Bowl images the
//! MultiResUNet report trains on (no such data is here). Each image is 8-bit RGB with its
//! binary nuclei mask, of the two looks that set holds:
//!
//! - **fluorescence** (~80 %): dark background with uneven illumination, bright nuclei (grey or
//!   tinted like a DAPI/Hoechst stain) of varied brightness, with chromatin texture;
//! - **brightfield / H&E** (~20 %): a light pink background and dark purple nuclei.
//!
//! Nuclei are ellipses (radii 3–14 px, any orientation and elongation), some placed touching or
//! overlapping a neighbour (the hard case of the set), a few dim ones; the image is blurred
//! (σ 0.4–1.8 px, out-of-focus cells) and gets shot-like Gaussian noise. **Truth**: the union of
//! the ellipses, a pixel being nucleus when its centre lies inside one (the DSB masks are the
//! union of per-nucleus masks the same way); instance labels are kept too.

use crate::error::{Error, Result};
use crate::phantom::ctp::SplitMix64;

/// Options of [`generate`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NucleiOptions {
    /// Width and height in pixels.
    pub size: [usize; 2],
    /// Seed: the same seed gives the same image on every platform.
    pub seed: u64,
    /// Number of nuclei (before those that fall outside are dropped).
    pub nuclei: std::ops::RangeInclusive<usize>,
    /// Fraction of images in the brightfield look.
    pub brightfield_fraction: f64,
}

impl NucleiOptions {
    /// A `size` image with the default mix.
    pub fn new(size: [usize; 2], seed: u64) -> Self {
        NucleiOptions { size, seed, nuclei: 4..=40, brightfield_fraction: 0.2 }
    }
}

/// One generated image.
#[derive(Debug, Clone)]
pub struct NucleiImage {
    /// `[width, height]`.
    pub size: [usize; 2],
    /// RGB 8-bit, interleaved, row-major (x fastest): `rgb[3 * (x + width * y) + c]`.
    pub rgb: Vec<u8>,
    /// Truth 0/1 (x fastest).
    pub mask: Vec<u8>,
    /// Instance label of each pixel (0 background; a later nucleus wins an overlap).
    pub instances: Vec<u16>,
    /// Nuclei drawn.
    pub count: usize,
    /// Whether this image has the brightfield look.
    pub brightfield: bool,
}

impl NucleiImage {
    /// The image as grey levels 0–1 (mean of the channels), x fastest.
    pub fn grey(&self) -> Vec<f32> {
        self.rgb
            .chunks_exact(3)
            .map(|p| (f32::from(p[0]) + f32::from(p[1]) + f32::from(p[2])) / (3.0 * 255.0))
            .collect()
    }
}

#[derive(Debug, Clone, Copy)]
struct Ellipse {
    cx: f64,
    cy: f64,
    a: f64,
    b: f64,
    cos: f64,
    sin: f64,
    brightness: f64,
}

impl Ellipse {
    fn contains(&self, x: f64, y: f64) -> bool {
        let (dx, dy) = (x - self.cx, y - self.cy);
        let u = dx * self.cos + dy * self.sin;
        let v = -dx * self.sin + dy * self.cos;
        (u / self.a).powi(2) + (v / self.b).powi(2) <= 1.0
    }
}

/// Gaussian blur of one `w`×`h` plane (separable, edges clamped); also blurs the DWI phantom's
/// slices.
pub(crate) fn blur(plane: &mut [f64], w: usize, h: usize, sigma: f64) {
    if sigma <= 0.0 {
        return;
    }
    let r = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f64> = (-r..=r).map(|d| (-(d * d) as f64 / (2.0 * sigma * sigma)).exp()).collect();
    let total: f64 = kernel.iter().sum();
    let kernel: Vec<f64> = kernel.iter().map(|k| k / total).collect();
    let mut tmp = vec![0.0; plane.len()];
    for y in 0..h {
        for x in 0..w {
            tmp[x + w * y] = kernel
                .iter()
                .enumerate()
                .map(|(n, k)| k * plane[(x as isize + n as isize - r).clamp(0, w as isize - 1) as usize + w * y])
                .sum();
        }
    }
    for y in 0..h {
        for x in 0..w {
            plane[x + w * y] = kernel
                .iter()
                .enumerate()
                .map(|(n, k)| k * tmp[x + w * (y as isize + n as isize - r).clamp(0, h as isize - 1) as usize])
                .sum();
        }
    }
}

/// Generate one image.
pub fn generate(options: &NucleiOptions) -> Result<NucleiImage> {
    let [w, h] = options.size;
    if !(16..=4096).contains(&w) || !(16..=4096).contains(&h) {
        return Err(Error::invalid_argument(format!("nuclei phantom size {w}×{h}: each side 16 to 4096 pixels")));
    }
    if options.nuclei.is_empty() || *options.nuclei.end() > 10_000 {
        return Err(Error::invalid_argument("nuclei phantom: the nucleus count range must be 0 to 10000"));
    }
    let mut rng = SplitMix64::new(options.seed ^ 0x6e75_636c_6569);
    let between = |rng: &mut SplitMix64, lo: f64, hi: f64| lo + (hi - lo) * rng.uniform();
    let brightfield = rng.uniform() < options.brightfield_fraction;
    let (lo, hi) = (*options.nuclei.start(), *options.nuclei.end());
    let n = lo + (rng.uniform() * (hi - lo + 1) as f64) as usize;
    let (rmin, rmax) = if rng.uniform() < 0.5 { (3.0, 8.0) } else { (5.0, 14.0) };
    let mut cells: Vec<Ellipse> = Vec::with_capacity(n);
    for _ in 0..n {
        let a = between(&mut rng, rmin, rmax);
        let b = a * between(&mut rng, 0.55, 1.0);
        let angle = between(&mut rng, 0.0, std::f64::consts::PI);
        let (mut cx, mut cy) = (between(&mut rng, 0.0, w as f64), between(&mut rng, 0.0, h as f64));
        // A third of the nuclei sit against (or over) an earlier one.
        if !cells.is_empty() && rng.uniform() < 0.33 {
            let other = cells[(rng.uniform() * cells.len() as f64) as usize];
            let dir = between(&mut rng, 0.0, std::f64::consts::TAU);
            let d = (other.a.max(other.b) + a) * between(&mut rng, 0.6, 1.05);
            cx = other.cx + d * dir.cos();
            cy = other.cy + d * dir.sin();
        }
        let brightness = if rng.uniform() < 0.12 { between(&mut rng, 0.25, 0.45) } else { between(&mut rng, 0.5, 1.0) };
        cells.push(Ellipse { cx, cy, a, b, cos: angle.cos(), sin: angle.sin(), brightness });
    }
    let mut mask = vec![0u8; w * h];
    let mut instances = vec![0u16; w * h];
    let mut signal = vec![0.0f64; w * h];
    let mut count = 0;
    for (id, c) in cells.iter().enumerate() {
        let r = c.a.ceil() as isize + 1;
        let mut drawn = false;
        for y in (c.cy as isize - r).max(0)..(c.cy as isize + r + 1).min(h as isize) {
            for x in (c.cx as isize - r).max(0)..(c.cx as isize + r + 1).min(w as isize) {
                let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
                if c.contains(px, py) {
                    let p = x as usize + w * y as usize;
                    mask[p] = 1;
                    instances[p] = (id + 1).min(u16::MAX as usize) as u16;
                    // Chromatin texture: a few percent of brightness, per pixel.
                    signal[p] = c.brightness * (0.85 + 0.15 * rng.uniform());
                    drawn = true;
                }
            }
        }
        count += usize::from(drawn);
    }
    let sigma = between(&mut rng, 0.4, 1.8);
    blur(&mut signal, w, h, sigma);
    // Uneven illumination: a smooth gradient over the field.
    let (gx, gy) = (between(&mut rng, -0.3, 0.3), between(&mut rng, -0.3, 0.3));
    let noise = between(&mut rng, 0.01, 0.05);
    let (background, tint): (f64, [f64; 3]) = if brightfield {
        (between(&mut rng, 0.8, 0.95), [0.45, 0.75, 0.35])
    } else if rng.uniform() < 0.3 {
        (between(&mut rng, 0.0, 0.1), [0.35, 0.55, 1.0])
    } else {
        (between(&mut rng, 0.0, 0.1), [1.0, 1.0, 1.0])
    };
    let mut rgb = vec![0u8; 3 * w * h];
    for y in 0..h {
        for x in 0..w {
            let p = x + w * y;
            let light = 1.0 + gx * (x as f64 / w as f64 - 0.5) + gy * (y as f64 / h as f64 - 0.5);
            for (ch, t) in tint.iter().enumerate() {
                let v = if brightfield {
                    // Dark purple nuclei on a pink field: the stain absorbs per channel.
                    background * light * (1.0 - signal[p] * t * 0.9) + noise * rng.gaussian()
                } else {
                    background + signal[p] * light * t + noise * rng.gaussian()
                };
                rgb[3 * p + ch] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
    }
    Ok(NucleiImage { size: [w, h], rgb, mask, instances, count, brightfield })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_image_and_the_mask_is_where_the_signal_is() {
        let a = generate(&NucleiOptions::new([96, 80], 7)).unwrap();
        let b = generate(&NucleiOptions::new([96, 80], 7)).unwrap();
        assert_eq!(a.rgb, b.rgb);
        assert_eq!(a.mask, b.mask);
        assert!(a.count > 0 && a.mask.contains(&1));
        // The instances and the mask agree.
        assert!(a.mask.iter().zip(&a.instances).all(|(&m, &i)| (m == 1) == (i > 0)));
        // Nuclei differ from the background in the direction of the look.
        let grey = a.grey();
        let mean = |want: u8| {
            let v: Vec<f32> = grey.iter().zip(&a.mask).filter(|(_, m)| **m == want).map(|(g, _)| *g).collect();
            v.iter().sum::<f32>() / v.len() as f32
        };
        if a.brightfield {
            assert!(mean(1) < mean(0) - 0.1);
        } else {
            assert!(mean(1) > mean(0) + 0.1);
        }
    }

    #[test]
    fn both_looks_and_touching_nuclei_occur() {
        let (mut bright, mut touching) = (0, 0);
        for seed in 0..30 {
            let img = generate(&NucleiOptions::new([64, 64], seed)).unwrap();
            bright += usize::from(img.brightfield);
            // Two instances side by side somewhere: touching or overlapping nuclei.
            let [w, h] = img.size;
            let touch = (0..h).any(|y| {
                (1..w).any(|x| {
                    let (l, r) = (img.instances[x - 1 + w * y], img.instances[x + w * y]);
                    l > 0 && r > 0 && l != r
                })
            });
            touching += usize::from(touch);
        }
        assert!((2..=15).contains(&bright), "brightfield in {bright} of 30");
        assert!(touching >= 10, "touching nuclei in {touching} of 30");
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(generate(&NucleiOptions::new([8, 64], 1)).is_err());
        let mut o = NucleiOptions::new([64, 64], 1);
        o.nuclei = 0..=20_000;
        assert!(generate(&o).is_err());
    }

    #[test]
    fn blur_keeps_the_mean() {
        let mut p = vec![0.0; 400];
        p[210] = 1.0;
        blur(&mut p, 20, 20, 1.2);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(p[210] < 0.2 && p[210] > p[211]);
    }
}
