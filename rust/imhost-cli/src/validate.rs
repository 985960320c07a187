//! `imhost validate`: regenerate the validation table (`docs/VALIDATION.md`) — every method at
//! noise 0, 2, 5 and 10 HU on both phantoms, compared with their ground truth.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use imhost_core::perfusion::validation::{Agreement, compare};
use imhost_core::perfusion::{self, Method, PerfusionOptions};
use imhost_core::phantom::ctp::{self, PhantomKind, PhantomOptions};
use imhost_core::{AnyVolume, Error, Result, RunControl};

fn fmt(v: f64, digits: usize) -> String {
    if v.is_finite() { format!("{v:.digits$}") } else { "n/a".into() }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |x| format!("{x:.3}"))
}

/// CBF(δ)/CBF(0) − 1 on the Kudo grid, the worst over delays 0–3 s (mean ratio per delay row).
fn delay_sensitivity(result: &perfusion::PerfusionResult, truth: &ctp::Truth) -> f64 {
    let (e, t, tissue) = (result.maps.cbf.data(), truth.cbf.data(), truth.tissue.data());
    let d = truth.delay.data();
    let mut ratios = [0.0f64; 7];
    let mut counts = [0usize; 7];
    for (((&ev, &tv), &dv), &s) in e.iter().zip(t.iter()).zip(d.iter()).zip(tissue.iter()) {
        if s == 1 && ev.is_finite() && tv > 0.0 {
            let row = (f64::from(dv) / 0.5).round() as usize;
            ratios[row.min(6)] += f64::from(ev / tv);
            counts[row.min(6)] += 1;
        }
    }
    let mean: Vec<f64> = ratios.iter().zip(counts).map(|(r, c)| r / c.max(1) as f64).collect();
    mean.iter().map(|m| (m / mean[0] - 1.0).abs()).fold(0.0, f64::max)
}

/// Run the grid and write the table to `out`.
pub fn run(out: &Path, quick: bool) -> Result<()> {
    let noises: &[f64] = if quick { &[5.0] } else { &[0.0, 2.0, 5.0, 10.0] };
    let mut rows = String::new();
    let mut sensitivity = String::new();
    let started = Instant::now();
    for kind in [PhantomKind::Anatomical, PhantomKind::Kudo] {
        for &noise in noises {
            let mut options = PhantomOptions::new(kind);
            options.noise_hu = noise;
            let phantom = ctp::generate(&options)?;
            let input = AnyVolume::from(phantom.ctp.clone());
            let [ni, nj, _, _] = phantom.ctp.shape();
            // Kudo box-IRF slices (1–5) have a Tmax plateau: left out of the Tmax/delay error.
            let unambiguous = |n: usize| kind == PhantomKind::Anatomical || n / (ni * nj) > 5;
            for method in Method::ALL {
                let mut p = PerfusionOptions::default();
                p.method = method;
                let t = Instant::now();
                let result = perfusion::run(&input.view(), &p, None, &RunControl::none())?;
                let seconds = t.elapsed().as_secs_f64();
                let a: Agreement = compare(&result, &phantom.truth, &unambiguous);
                let flags: Vec<&str> = result.report.qc_flags.iter().map(|f| f.flag).collect();
                let _ = writeln!(
                    rows,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} |",
                    match kind {
                        PhantomKind::Kudo => "Kudo",
                        PhantomKind::Anatomical => "anatomical",
                    },
                    noise,
                    method.name(),
                    fmt(a.cbf.pearson_r, 3),
                    fmt(a.cbf.median_relative_error, 2),
                    fmt(a.cbv.pearson_r, 3),
                    fmt(a.cbv.median_relative_error, 2),
                    fmt(a.mtt.pearson_r, 3),
                    fmt(a.mtt.median_relative_error, 2),
                    fmt(a.tmax_median_abs_error_s, 2),
                    fmt(a.delay_median_abs_error_s, 2),
                    opt(a.core_dice),
                    opt(a.hypoperfusion_dice),
                    fmt(a.core_volume_error_ml, 1),
                    fmt(a.hypoperfusion_volume_error_ml, 1),
                    seconds,
                    if flags.is_empty() { "-".to_string() } else { flags.join(", ") },
                );
                if kind == PhantomKind::Kudo {
                    let _ = writeln!(
                        sensitivity,
                        "| {} | {} | {:.1} % |",
                        noise,
                        method.name(),
                        100.0 * delay_sensitivity(&result, &phantom.truth)
                    );
                }
                eprintln!("{kind:?} noise {noise} {}: {seconds:.1} s", method.name());
            }
        }
    }
    let mut doc = String::new();
    let _ = write!(
        doc,
        "# Validation of the classical perfusion pipeline\n\n\
Regenerate with `scripts/validation.sh` (runs `imhost validate --out docs/VALIDATION.md`; \
{:.0} s for this table on the machine of BENCHMARKS.md). Research use only.\n\n\
Every row: a freshly generated phantom (seed 1) at the given Gaussian noise (HU, per voxel and \
frame), the full default pipeline (motion estimate, brain mask, separable bilateral filter \
σ 2.5 mm / 10 HU, automatic AIF and VOF with partial-volume scaling, the method, read-out), \
compared with the phantom's truth over voxels that are tissue in the truth and inside the \
computed brain mask.\n\n\
- **r / rel. err.**: Pearson r and median |estimate − truth|/truth of CBF, CBV and MTT.\n\
- **Tmax, delay err.**: median |estimate − truth| in s; truth Tmax = delay (the onset of the \
residue function's maximum; see `phantom::ctp`). On the Kudo grid the box-IRF slices are left \
out of these two columns (their maximum is a plateau).\n\
- **Dice**: core (rCBF < 30 % within Tmax > 6 s) and hypoperfusion (Tmax > 6 s) masks against \
the truth masks; `n/a` where both are empty (the Kudo grid has no lesion: delays ≤ 3 s).\n\
- **vol. err.**: estimated − true volume in ml.\n\
- Constants: k_H = 0.733, ρ = 1.05 g/ml; sSVD threshold 0.2, bSVD 0.1, oSVD oscillation \
index < 0.035, Tikhonov μ 0.1, NLR MTT ∈ [1.5, 30] s.\n\n\
| phantom | noise HU | method | CBF r | CBF rel. err. | CBV r | CBV rel. err. | MTT r | MTT rel. err. | Tmax err. s | delay err. s | core Dice | hypo. Dice | core vol. err. ml | hypo. vol. err. ml | run s | QC flags |\n\
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n{rows}\n\
## Delay sensitivity (Kudo grid)\n\n\
Worst |CBF(δ)/CBF(0) − 1| over delays 0–3 s, with CBF(δ) the mean estimate/truth ratio of the \
delay row δ (all MTT, CBV and IRF tiles).\n\n\
| noise HU | method | CBF change over delays 0–3 s |\n|---|---|---|\n{sensitivity}",
        started.elapsed().as_secs_f64()
    );
    std::fs::write(out, doc).map_err(|e| Error::from(e).in_file(out))?;
    println!("validation table written to {}", out.display());
    Ok(())
}
