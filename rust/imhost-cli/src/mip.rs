//! `imhost mip IN --out OUT [--preview PNG]`.

use std::path::Path;
use std::time::Instant;

use imhost_core::io::{read_volume, write_volume};
use imhost_core::ops::temporal_mip;
use imhost_core::{AnyVolume, Result, with_view};

use crate::progress::with_bar;

pub fn run(input: &Path, out: &Path, preview: Option<&Path>, quiet: bool) -> Result<()> {
    check_output_name(out)?;
    imhost_core::io::output::refuse_overwriting_input(out, &[input])?;
    if let Some(png) = preview {
        imhost_core::io::output::refuse_overwriting_input(png, &[input, out])?;
    }
    let started = Instant::now();
    let volume = read_volume(input)?;
    if !volume.is_4d() {
        return Err(imhost_core::Error::shape(format!(
            "'{}' is a 3-D image; the temporal MIP needs a 4-D image (with a time axis)",
            input.display()
        )));
    }
    let mip: AnyVolume =
        with_bar(quiet, |control| with_view!(volume.view(), v => temporal_mip(&v, control).map(AnyVolume::from)))?;
    write_volume(&mip, out)?;
    if let Some(png) = preview {
        crate::info::slice_preview(&mip, png, "temporal MIP")?;
    }
    let [ni, nj, nk, nt] = volume.shape();
    let times = volume.frame_times().map(|f| f.as_slice()).unwrap_or(&[]);
    println!(
        "wrote {}: {ni}×{nj}×{nk} {} temporal MIP of {nt} frames ({:.1}–{:.1} s) in {:.2} s",
        out.display(),
        mip.dtype(),
        times.first().unwrap_or(&0.0),
        times.last().unwrap_or(&0.0),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Refuse an output name the writer would refuse, before doing any work.
pub fn check_output_name(out: &Path) -> Result<()> {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name.ends_with(".nii") || name.ends_with(".nii.gz") {
        Ok(())
    } else {
        Err(imhost_core::Error::invalid_argument(format!("output '{}' must end in .nii or .nii.gz", out.display())))
    }
}
