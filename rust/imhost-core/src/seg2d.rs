//! 2-D segmentation networks as registry models (the first: `multiresunet-nuclei`): how a volume
//! becomes images for the network, and how the network's probabilities become the model's
//! outputs (label map, probability map, report, preview). The network itself runs in
//! `imhost-models`; this part needs no LibTorch.
//!
//! A 2-D model is applied **slice by slice**: a 3-D volume of one slice is an image, a stack is
//! segmented one axial slice at a time (`i` = image x, `j` = image y). Intensities become 0…1 as
//! the report's `x / 255`: 8-bit volumes are divided by 255; other types are scaled per slice
//! between their 0.5th and 99.5th percentiles (a 16-bit or float microscope image). A network of
//! three input channels gets the grey image in all three, as OpenCV's `imread(…,
//! IMREAD_COLOR)` gives a grey file.

use serde_json::{Value, json};

use crate::preview::{Canvas, colors};
use crate::registry::{Manifest, ModelOutput};
use crate::{AnyVolume, AnyVolumeView, DType, Error, Geometry, Result, Volume, Voxel, with_view};

/// The slices of a 3-D volume as 0…1 grey images (`i` fastest), one per `k`.
pub fn slices_of(volume: &AnyVolumeView<'_>) -> Result<Vec<Vec<f32>>> {
    let [ni, nj, nk, nt] = volume.shape();
    if nt != 1 {
        return Err(Error::shape(format!(
            "a 2-D segmentation model takes an image or a stack of slices (3-D); this is a 4-D series of {nt} frames"
        )));
    }
    fn values<T: Voxel>(v: &crate::VolumeView<'_, T>) -> Vec<f64> {
        v.data().t().iter().map(|x| x.to_f64()).collect()
    }
    // The values as f64 and the 0…1 slices as f32.
    crate::memory::check(crate::memory::bytes_of(&[ni, nj, nk], 12), "the image's slices")?;
    let all = with_view!(volume, v => values(v));
    if all.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid_argument("the image holds NaN or infinite values"));
    }
    let eight_bit = volume.dtype() == DType::U8;
    let slab = ni * nj;
    Ok((0..nk)
        .map(|k| {
            let s = &all[k * slab..(k + 1) * slab];
            if eight_bit {
                s.iter().map(|&v| (v / 255.0) as f32).collect()
            } else {
                let mut sorted = s.to_vec();
                let (lo, hi) = (crate::score::quantile(&mut sorted, 0.005), crate::score::quantile(&mut sorted, 0.995));
                let span = if hi > lo { hi - lo } else { 1.0 };
                s.iter().map(|&v| ((v - lo) / span).clamp(0.0, 1.0) as f32).collect()
            }
        })
        .collect())
}

/// The registry manifest of a 2-D segmentation model `id` whose foreground is `label`
/// (`threshold`: the default of the option; `about`: the folder's weights, training and paper,
/// kept in `extra.network`).
pub fn model_manifest(
    id: &str,
    version: &str,
    label: &str,
    color: [u8; 3],
    threshold: f64,
    about: Value,
) -> Result<Manifest> {
    let mut manifest: Manifest = serde_json::from_value(json!({
        "format": crate::registry::MANIFEST_FORMAT,
        "id": id,
        "name": format!("{}{} segmentation (MultiResUNet, 2-D)", label.chars().next().map(|c| c.to_uppercase().to_string()).unwrap_or_default(), label.chars().skip(1).collect::<String>()),
        "version": version,
        "licence": "Apache-2.0",
        "description": format!("Segments every {label} of a 2-D image (a volume of one slice, or a stack segmented slice by slice) with MultiResUNet: a {label} label map and the probability map. 8-bit images are scaled by 1/255, others between their 0.5th and 99.5th percentiles per slice. Phantom-trained default weights: research use only."),
        "reference": "multiresunet-report",
        "inputs": [{"name": "image", "modality": "any", "dims": 3, "orientation": "any"}],
        "options": {
            "threshold": {"type": "number", "default": threshold, "minimum": 0.01, "maximum": 0.99, "description": "probability at or above which a pixel is foreground"}
        },
        "outputs": [
            {"name": "mask", "kind": "labelmap", "labels": [{"value": 1, "name": label, "color": color}]},
            {"name": "probability", "kind": "map", "unit": "1", "unit_ucum": "1"},
            {"name": "foreground_fraction", "kind": "score", "unit": "1", "unit_ucum": "1", "measured_on": {"output": "mask", "label": 1}},
            {"name": "objects", "kind": "score", "unit": "1", "unit_ucum": "1", "measured_on": {"output": "mask", "label": 1}, "description": "8-connected foreground components, summed over slices"}
        ],
        "device": {"requires": "any"}
    }))
    .map_err(|e| Error::internal(format!("the {id} manifest: {e}")))?;
    manifest.validate()?;
    manifest.extra.insert("network".into(), about);
    Ok(manifest)
}

/// 8-connected components of a `w`×`h` mask.
pub fn count_objects(mask: &[bool], w: usize, h: usize) -> usize {
    let mut seen = vec![false; mask.len()];
    let mut n = 0;
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        n += 1;
        seen[start] = true;
        stack.push(start);
        while let Some(p) = stack.pop() {
            let (x, y) = ((p % w) as i64, (p / w) as i64);
            for dy in -1..=1 {
                for dx in -1..=1 {
                    let (xx, yy) = (x + dx, y + dy);
                    if xx < 0 || yy < 0 || xx >= w as i64 || yy >= h as i64 {
                        continue;
                    }
                    let q = xx as usize + yy as usize * w;
                    if mask[q] && !seen[q] {
                        seen[q] = true;
                        stack.push(q);
                    }
                }
            }
        }
    }
    n
}

/// The model's outputs from the per-slice grey images and probabilities (`i` fastest).
pub fn outputs(
    slices: &[Vec<f32>],
    probability: &[Vec<f32>],
    dims: [usize; 3],
    geometry: Geometry,
    threshold: f64,
    label: &str,
    about: &Value,
) -> Result<ModelOutput> {
    use ndarray::ShapeBuilder;
    let [ni, nj, nk] = dims;
    if slices.len() != nk || probability.len() != nk || probability.iter().any(|p| p.len() != ni * nj) {
        return Err(Error::internal("the probabilities do not fill the image"));
    }
    let prob: Vec<f32> = probability.concat();
    let mask: Vec<bool> = prob.iter().map(|&p| f64::from(p) >= threshold).collect();
    let objects: usize = mask.chunks(ni * nj).map(|m| count_objects(m, ni, nj)).sum();
    let fraction = mask.iter().filter(|&&m| m).count() as f64 / mask.len().max(1) as f64;
    let shape = (ni, nj, nk).f();
    let label_map = ndarray::Array3::from_shape_vec(shape, mask.iter().map(|&m| u8::from(m)).collect())
        .map_err(|e| Error::internal(e.to_string()))?;
    let prob_map = ndarray::Array3::from_shape_vec(shape, prob).map_err(|e| Error::internal(e.to_string()))?;
    let lines = vec![
        format!("{} OBJECTS: {objects}  FOREGROUND {:.1} %", label.to_uppercase(), 100.0 * fraction),
        format!("THRESHOLD {threshold:.2}  SLICES {nk}  PHANTOM-TRAINED WEIGHTS"),
    ];
    let preview = render(slices, &mask, dims, &lines).png_bytes()?;
    Ok(ModelOutput {
        volumes: vec![
            ("mask".into(), AnyVolume::from(Volume::new_3d(label_map, geometry)?)),
            ("probability".into(), AnyVolume::from(Volume::new_3d(prob_map, geometry)?)),
        ],
        scores: vec![("foreground_fraction".into(), fraction), ("objects".into(), objects as f64)],
        report: json!({
            "research_use_only": true,
            "objects": objects,
            "foreground_fraction": fraction,
            "threshold": threshold,
            "slices": nk,
            "network": about,
            "caveat": "phantom-trained weights (synthetic nuclei images); not validated on real microscopy"
        }),
        preview_png: Some(preview),
    })
}

/// The preview: up to six slices side by side (grey; small images enlarged), the foreground
/// outlined, the read-out on top; the canvas is as wide as its widest line.
pub fn render(slices: &[Vec<f32>], mask: &[bool], dims: [usize; 3], lines: &[String]) -> Canvas {
    const TITLE: &str = "SEGMENTATION - RESEARCH USE ONLY, NOT FOR DIAGNOSIS";
    let [ni, nj, nk] = dims;
    let shown: Vec<usize> = if nk <= 6 { (0..nk).collect() } else { (0..6).map(|n| n * (nk - 1) / 5).collect() };
    let factor = ni.max(nj).div_ceil(360).max(1);
    let (sw, sh) = (ni.div_ceil(factor), nj.div_ceil(factor));
    // Enlarge small images to about 256 pixels (whole multiples, so pixels stay square).
    let zoom = (256 / sw.max(sh)).clamp(1, 8);
    let (pw, ph) = (sw * zoom, sh * zoom);
    let cols = shown.len().clamp(1, 3);
    let rows = shown.len().div_ceil(3).max(1);
    let margin = 10usize;
    let line_h = 20usize;
    let top = 12 + line_h * (lines.len() + 1) + 6;
    // The built-in font is 6 pixels a character at scale 1, drawn at scale 2.
    let text_w = std::iter::once(TITLE.len()).chain(lines.iter().map(|l| l.chars().count())).max().unwrap_or(0) * 12;
    let width = (margin + cols * (pw + margin)).max(2 * margin + text_w);
    let height = top + rows * (ph + margin + 14) + 10;
    let mut canvas = Canvas::new(width, height, colors::BACKGROUND);
    canvas.text(margin as i64, 12, TITLE, colors::YELLOW, 2);
    for (n, line) in lines.iter().enumerate() {
        canvas.text(margin as i64, (12 + line_h * (n + 1)) as i64, line, colors::TEXT, 2);
    }
    for (n, &k) in shown.iter().enumerate() {
        let x0 = (margin + (n % 3) * (pw + margin)) as i64;
        let y0 = (top + (n / 3) * (ph + margin + 14)) as i64;
        let mut values = vec![0.0f64; sw * sh];
        let mut mark = vec![false; sw * sh];
        for j in 0..nj {
            for i in 0..ni {
                let q = i / factor + (j / factor) * sw;
                values[q] = values[q].max(f64::from(slices[k][i + j * ni]));
                mark[q] |= mask[k * ni * nj + i + j * ni];
            }
        }
        canvas.image(x0, y0, &values, sw, (0.0, 1.0), zoom as i64);
        let z = zoom as i64;
        for y in 0..sh {
            for x in 0..sw {
                if !mark[x + y * sw] {
                    continue;
                }
                // Each side of a marked pixel that borders an unmarked one (or the edge) is drawn.
                for (dx, dy) in [(-1i64, 0i64), (1, 0), (0, -1), (0, 1)] {
                    let (xx, yy) = (x as i64 + dx, y as i64 + dy);
                    let outside = xx < 0 || yy < 0 || xx >= sw as i64 || yy >= sh as i64;
                    if !outside && mark[xx as usize + yy as usize * sw] {
                        continue;
                    }
                    let (px, py) = (x0 + x as i64 * z, y0 + y as i64 * z);
                    match (dx, dy) {
                        (-1, _) => canvas.fill_rect(px, py, 1, z, colors::RED),
                        (1, _) => canvas.fill_rect(px + z - 1, py, 1, z, colors::RED),
                        (_, -1) => canvas.fill_rect(px, py, z, 1, colors::RED),
                        _ => canvas.fill_rect(px, py + z - 1, z, 1, colors::RED),
                    }
                }
            }
        }
        canvas.text(x0, y0 + ph as i64 + 3, &format!("SLICE {k}"), colors::MUTED, 1);
    }
    canvas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_8_connected() {
        // Two diagonal pixels are one object; a separate pixel another.
        let mut m = vec![false; 25];
        m[0] = true;
        m[6] = true;
        m[24] = true;
        assert_eq!(count_objects(&m, 5, 5), 2);
        assert_eq!(count_objects(&[false; 9], 3, 3), 0);
    }

    #[test]
    fn eight_bit_is_divided_by_255_and_others_are_scaled() {
        let g = Geometry::identity();
        let a = ndarray::Array3::from_shape_fn((4, 4, 1), |(i, j, _)| (i * 16 + j * 4) as u8);
        let v = AnyVolume::from(Volume::new_3d(a, g).unwrap());
        let s = slices_of(&v.view()).unwrap();
        assert_eq!(s.len(), 1);
        assert!((s[0][1] - 16.0 / 255.0).abs() < 1e-7, "i is fastest: {}", s[0][1]);
        let f = ndarray::Array3::from_shape_fn((10, 10, 2), |(i, j, k)| (i + 10 * j) as f32 * (k + 1) as f32);
        let v = AnyVolume::from(Volume::new_3d(f, g).unwrap());
        let s = slices_of(&v.view()).unwrap();
        assert_eq!(s.len(), 2);
        assert!(s[1].iter().all(|&x| (0.0..=1.0).contains(&x)));
        assert_eq!(s[1][0], 0.0);
        assert_eq!(s[1][99], 1.0);
    }

    #[test]
    fn manifest_validates_and_outputs_match_it() {
        let m = model_manifest("multiresunet-nuclei", "0.1.0", "nucleus", [80, 200, 255], 0.5, Value::Null).unwrap();
        assert_eq!(m.id, "multiresunet-nuclei");
        let slices = vec![vec![0.5f32; 32 * 16]];
        let mut p = vec![0.0f32; 32 * 16];
        for q in [33, 34, 200] {
            p[q] = 0.9;
        }
        let out = outputs(&slices, &[p], [32, 16, 1], Geometry::identity(), 0.5, "nucleus", &Value::Null).unwrap();
        assert_eq!(out.score("objects"), Some(2.0));
        assert!((out.score("foreground_fraction").unwrap() - 3.0 / 512.0).abs() < 1e-12);
        assert!(out.volume("mask").is_some() && out.volume("probability").is_some());
        let png = out.preview_png.unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        // The canvas holds its widest line: the title at 12 pixels a character plus margins.
        let (w, _, _) = crate::io::png::decode_rgb(&png).unwrap();
        assert!(w >= 20 + 12 * "SEGMENTATION - RESEARCH USE ONLY, NOT FOR DIAGNOSIS".len(), "{w}");
    }
}
