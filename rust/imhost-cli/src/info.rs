//! `imhost info IN [--json]`, and the slice preview shared by the commands.

use std::path::Path;

use imhost_core::io::nifti::{ReadOptions, read_nifti};
use imhost_core::preview::{Canvas, colors, percentile_window};
use imhost_core::{AnyVolume, Result, Voxel, with_volume};
use serde_json::json;

pub fn run(input: &Path, as_json: bool) -> Result<()> {
    let (volume, info) = read_nifti(input, &ReadOptions::default())?;
    let g = volume.geometry();
    let ras = g.ijk_to_ras();
    let times = volume.frame_times();
    let (lo, hi) = with_volume!(&volume, v => v.data().iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        let x = x.to_f64();
        if x.is_nan() { (a, b) } else { (a.min(x), b.max(x)) }
    }));
    let report = json!({
        "path": input.display().to_string(),
        "format": format!("{:?}", info.version),
        "byte_order": format!("{:?}", info.endian),
        "compressed": info.compressed,
        "stored_type": info.stored_type,
        "scaling": info.scaling.map(|(m, b)| json!({"slope": m, "intercept": b})),
        "dtype": volume.dtype().name(),
        "shape": volume.shape(),
        "is_4d": volume.is_4d(),
        "spacing_mm": g.spacing,
        "origin_lps_mm": g.origin,
        "direction_lps": g.direction,
        "ijk_to_ras": ras,
        "geometry_from": format!("{:?}", info.affine_source),
        "frame_times_s": times.map(|t| t.as_slice()),
        "frame_times_from": times.map(|t| t.source().name()),
        "value_range": [lo, hi],
    });
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        return Ok(());
    }
    let [ni, nj, nk, nt] = volume.shape();
    println!("{}", input.display());
    println!(
        "  format     {:?}, {:?}-endian{}, stored {}{}",
        info.version,
        info.endian,
        if info.compressed { ", gzip" } else { "" },
        info.stored_type,
        info.scaling.map_or(String::new(), |(m, b)| format!(" scaled ×{m} {b:+}"))
    );
    if volume.is_4d() {
        println!("  size       {ni}×{nj}×{nk} voxels × {nt} frames, {}", volume.dtype());
    } else {
        println!("  size       {ni}×{nj}×{nk} voxels, {}", volume.dtype());
    }
    println!("  spacing    {:.4} × {:.4} × {:.4} mm", g.spacing[0], g.spacing[1], g.spacing[2]);
    println!("  origin     ({:.3}, {:.3}, {:.3}) mm LPS", g.origin[0], g.origin[1], g.origin[2]);
    println!("  geometry   from the {:?}; IJK-to-RAS (Slicer, NIfTI):", info.affine_source);
    for row in ras.iter().take(3) {
        println!("               [{:>10.4} {:>10.4} {:>10.4} {:>10.4}]", row[0], row[1], row[2], row[3]);
    }
    if let Some(t) = times {
        let s = t.as_slice();
        let spacing = t.uniform_interval().map_or("non-uniform".to_owned(), |dt| format!("every {dt} s"));
        println!(
            "  frames     {} from {:.2} s to {:.2} s, {spacing} (from the {})",
            s.len(),
            s[0],
            s[s.len() - 1],
            t.source().name()
        );
    }
    println!("  values     {lo} to {hi}");
    Ok(())
}

/// One slice's pixels as f64, rows along j and columns along i (t = 0).
pub fn slice_values(volume: &AnyVolume, k: usize, t: usize) -> (Vec<f64>, usize, usize) {
    let [ni, nj, _, _] = volume.shape();
    let mut values = Vec::with_capacity(ni * nj);
    with_volume!(volume, v => {
        for j in 0..nj {
            for i in 0..ni {
                values.push(v.data()[[i, j, k, t]].to_f64());
            }
        }
    });
    (values, ni, nj)
}

/// A PNG of the middle slice with a percentile window and a title.
pub fn slice_preview(volume: &AnyVolume, png: &Path, title: &str) -> Result<()> {
    let k = volume.shape()[2] / 2;
    let (values, w, h) = slice_values(volume, k, 0);
    let scale = (512 / w.max(h)).max(1) as i64;
    let mut canvas = Canvas::new(w * scale as usize + 20, h * scale as usize + 60, colors::BACKGROUND);
    canvas.text(10, 8, &format!("{title}, slice {k}"), colors::TEXT, 2);
    canvas.image(10, 30, &values, w, percentile_window(&values, 1.0, 99.0), scale);
    canvas.text(10, 36 + h as i64 * scale, "research use only - index orientation (i right, j down)", colors::MUTED, 1);
    canvas.save_png(png)
}
