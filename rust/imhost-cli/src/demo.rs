//! `imhost demo`: the foundation's self-check on a built-in input (the main job is now
//! `scripts/main-job.sh`: phantom → `imhost perfusion`).
//!
//! Generates a 4-D CT bolus volume whose temporal MIP is known in closed form, writes it as
//! NIfTI (with a frame-time sidecar, since the sampling is non-uniform), reads it back, runs the
//! temporal MIP, checks every voxel against the truth, and writes the MIP, a preview PNG and a
//! JSON summary. Exits with an error if any voxel differs from the truth.

use std::path::Path;
use std::time::Instant;

use imhost_core::io::{read_volume, write_volume};
use imhost_core::ops::temporal_mip;
use imhost_core::phantom::{self, BolusDemoOptions, REGIONS};
use imhost_core::preview::{Canvas, Series, colors, line_plot};
use imhost_core::{AnyVolume, Error, Result};
use serde_json::json;

use crate::info::slice_values;
use crate::progress::with_bar;

pub fn run(out: &Path, quiet: bool) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::from(e).in_file(out))?;
    let options = BolusDemoOptions::default();
    let ctp_path = out.join("ctp.nii.gz");
    let mip_path = out.join("mip.nii.gz");

    let t = Instant::now();
    let generated = phantom::bolus_demo(&options)?;
    write_volume(&AnyVolume::from(generated), &ctp_path)?;
    let generate_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let AnyVolume::I16(ctp) = read_volume(&ctp_path)? else {
        return Err(Error::internal("the demo volume did not read back as int16"));
    };
    let read_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mip = with_bar(quiet, |control| temporal_mip(&ctp.view(), control))?;
    let mip_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    write_volume(&AnyVolume::from(mip.clone()), &mip_path)?;
    let write_s = t.elapsed().as_secs_f64();

    // The check: every voxel's MIP equals its region's closed-form maximum.
    let times = ctp.frame_times().map(|f| f.as_slice().to_vec()).unwrap_or_default();
    let [ni, nj, nk, nt] = ctp.shape();
    let mut checks = Vec::new();
    let mut all_exact = true;
    for (index, region) in REGIONS.iter().enumerate() {
        let expected = region.expected_mip(&times);
        let mut voxels = 0usize;
        let mut wrong = 0usize;
        let mut example = None;
        for j in 0..nj {
            for i in 0..ni {
                if phantom::region_index(i, j, options.shape) != index {
                    continue;
                }
                for k in 0..nk {
                    voxels += 1;
                    let got = mip.data()[[i, j, k, 0]];
                    example.get_or_insert(got);
                    if got != expected {
                        wrong += 1;
                    }
                }
            }
        }
        all_exact &= wrong == 0 && voxels > 0;
        checks.push((region, expected, example.unwrap_or(0), voxels, wrong));
    }

    // Preview: a frame before the bolus, the MIP, and the curves of one artery and one tissue voxel.
    let preview_path = out.join("preview.png");
    write_preview(&preview_path, &AnyVolume::from(ctp.clone()), &AnyVolume::from(mip.clone()), &times, &options)?;

    let summary = json!({
        "job": "temporal MIP of a generated 4-D CT bolus volume",
        "research_use_only": true,
        "input": { "path": ctp_path, "shape": [ni, nj, nk, nt], "dtype": "i16", "frame_times_s": times,
                   "frame_times_from": ctp.frame_times().map(|f| f.source().name()) },
        "output": { "path": mip_path, "shape": [ni, nj, nk], "dtype": "i16" },
        "preview": preview_path,
        "checks": checks.iter().map(|(r, expected, got, voxels, wrong)| json!({
            "region": r.name, "expected_hu": expected, "example_hu": got, "voxels": voxels, "voxels_wrong": wrong
        })).collect::<Vec<_>>(),
        "all_voxels_match_truth": all_exact,
        "timings_s": { "generate_and_write": generate_s, "read": read_s, "mip": mip_s, "write": write_s },
    });
    let summary_path = out.join("summary.json");
    imhost_core::io::output::write_json(&summary_path, &summary)?;

    println!("imhost demo: temporal MIP of a generated 4-D CT volume (research use only)");
    println!(
        "  input    {}  {ni}×{nj}×{nk} × {nt} frames, i16 HU, {:.0}–{:.0} s (1 s, then 3 s apart; times from the {})",
        ctp_path.display(),
        times.first().unwrap_or(&0.0),
        times.last().unwrap_or(&0.0),
        ctp.frame_times().map_or("?", |f| f.source().name())
    );
    println!("  output   {}  {ni}×{nj}×{nk}, i16", mip_path.display());
    for (region, expected, got, voxels, wrong) in &checks {
        println!(
            "  check    {:<7} MIP {:>5} HU, truth {:>5} HU, {:>6} voxels, {} wrong",
            region.name, got, expected, voxels, wrong
        );
    }
    println!("  time     read {:.0} ms, MIP {:.1} ms, write {:.0} ms", read_s * 1e3, mip_s * 1e3, write_s * 1e3);
    println!("  preview  {}", preview_path.display());
    println!("  summary  {}", summary_path.display());
    if !all_exact {
        return Err(Error::internal("the MIP differs from the known truth (see summary.json)"));
    }
    println!("  result   every voxel equals the closed-form truth");
    Ok(())
}

fn write_preview(
    path: &Path,
    ctp: &AnyVolume,
    mip: &AnyVolume,
    times: &[f64],
    options: &BolusDemoOptions,
) -> Result<()> {
    let [ni, nj, nk, _] = ctp.shape();
    let k = nk / 2;
    let scale = 3i64;
    let panel = ni as i64 * scale;
    let mut canvas =
        Canvas::new((2 * panel + 460 + 40) as usize, (nj as i64 * scale + 90) as usize, colors::BACKGROUND);
    let (frame0, w, _) = slice_values(ctp, k, 0);
    let (projection, _, _) = slice_values(mip, k, 0);
    let window = (-100.0, 500.0);
    canvas.text(10, 8, "frame 0 (0 s)", colors::TEXT, 2);
    canvas.image(10, 30, &frame0, w, window, scale);
    canvas.text(20 + panel, 8, "temporal MIP", colors::TEXT, 2);
    canvas.image(20 + panel, 30, &projection, w, window, scale);

    // Curves of the first artery voxel and a tissue voxel, as read from the file.
    let find = |name: &str| {
        (0..nj)
            .flat_map(|j| (0..ni).map(move |i| (i, j)))
            .find(|&(i, j)| phantom::region_at(i, j, options.shape).name == name)
    };
    let curve = |(i, j): (usize, usize)| -> Vec<f64> {
        let AnyVolume::I16(v) = ctp else { return Vec::new() };
        (0..times.len()).map(|t| f64::from(v.data()[[i, j, k, t]])).collect()
    };
    let artery = find("artery").map(curve).unwrap_or_default();
    let tissue = find("tissue").map(|p| (p.0 + ni / 4, p.1 + nj / 4)).map(curve).unwrap_or_default();
    let x = 30 + 2 * panel;
    line_plot(
        &mut canvas,
        (x, 8, 460, nj as i64 * scale / 2 + 10),
        "artery",
        "time (s)",
        "HU",
        &[Series { label: "artery", color: colors::RED, x: times, y: &artery }],
    );
    line_plot(
        &mut canvas,
        (x, nj as i64 * scale / 2 + 30, 460, nj as i64 * scale / 2 + 10),
        "tissue",
        "time (s)",
        "HU",
        &[Series { label: "tissue", color: colors::CYAN, x: times, y: &tissue }],
    );
    canvas.text(
        10,
        40 + nj as i64 * scale,
        "window -100..500 HU. generated data, research use only.",
        colors::MUTED,
        1,
    );
    canvas.save_png(path)
}
