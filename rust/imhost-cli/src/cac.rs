//! `imhost cac CT --out DIR`: coronary calcium scores (Agatston, volume, mass, category A–E) of a
//! non-contrast cardiac CT, and `imhost phantom cac`: an exam with known truth. Conventions:
//! docs/CAC.md. Research use only.

use std::path::{Path, PathBuf};

use clap::Args;
use imhost_core::cac::{self, AgatstonOptions, CacScore, Category, Connectivity2d, qc};
use imhost_core::io::output::{StagedDir, write_json};
use imhost_core::io::write_volume;
use imhost_core::phantom::cac::{self as phantom, CacPhantomOptions, LABEL_NAMES};
use imhost_core::{AnyVolume, AnyVolumeView, Error, Result, Volume, Voxel, with_view};
use ndarray::{Array3, ShapeBuilder};
use serde_json::{Value, json};

use crate::dicom_out::read_input;

/// Arguments of `imhost cac`.
#[derive(Args)]
pub struct CacArgs {
    /// The CT: a NIfTI file in HU or a DICOM folder (one axial series, non-contrast, ECG-gated).
    pub ct: PathBuf,
    /// Output folder: mask.nii.gz, report.json, preview.png.
    #[arg(long)]
    pub out: PathBuf,
    /// A calcium segmentation on the CT's grid (label map; NIfTI or DICOM folder) whose voxels
    /// are scored: from another tool, a reader, or a phantom's truth.
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// Count only these labels of --mask (repeatable or comma-separated). Default: every
    /// non-zero label.
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<u32>,
    /// Mass score calibration factor, mg hydroxyapatite per ml per HU (from the scanner's
    /// calibration phantom). Without it no mass score is given.
    #[arg(long)]
    pub mass_calibration: Option<f64>,
    /// 2-D lesion connectivity within a slice: 8 (default) or 4.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(4..=8))]
    pub connectivity: u8,
    /// Smallest lesion area in mm² (0: the ≥ 3-pixel rule only; 1: Agatston's 1990 rule too).
    #[arg(long, default_value_t = 0.0)]
    pub min_area_mm2: f64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Replace the output folder if it holds an earlier imhost result.
    #[arg(long)]
    pub overwrite: bool,
}

/// Arguments of `imhost phantom cac`.
#[derive(Args)]
pub struct CacPhantomArgs {
    /// Output folder: ct.nii.gz, truth/labels.nii.gz, truth.json (and dicom/ with --dicom).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of anatomy, plaques and noise.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Risk category to aim at: A, B, C, D or E (default: drawn from the seed).
    #[arg(long)]
    pub category: Option<String>,
    /// Grid NI,NJ,NK.
    #[arg(long, value_parser = crate::parse_size, default_value = "256,256,40")]
    pub size: [usize; 3],
    /// Spacing DI,DJ,DK in mm.
    #[arg(long, value_parser = parse_spacing, default_value = "0.78,0.78,3")]
    pub spacing: [f64; 3],
    /// Noise σ in HU.
    #[arg(long, default_value_t = 12.0)]
    pub noise: f64,
    /// Contrast medium in the blood (an exam the score is not defined on).
    #[arg(long)]
    pub contrast: bool,
    /// No mitral-annulus or aortic calcification.
    #[arg(long)]
    pub no_distractors: bool,
    /// Also write the CT as a DICOM series into DIR/dicom/.
    #[arg(long)]
    pub dicom: bool,
    /// Replace the output folder if it holds an earlier imhost result.
    #[arg(long)]
    pub overwrite: bool,
}

fn parse_spacing(text: &str) -> std::result::Result<[f64; 3], String> {
    let v: Vec<f64> = text
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| e.to_string())?;
    <[f64; 3]>::try_from(v).map_err(|_| "expected DI,DJ,DK".to_string())
}

/// Parse `A`..`E`.
pub fn parse_category(text: &str) -> Result<Category> {
    Category::ALL
        .into_iter()
        .find(|c| c.letter().eq_ignore_ascii_case(text.trim()))
        .ok_or_else(|| Error::invalid_argument(format!("unknown category {text:?} (A, B, C, D or E)")))
}

/// Voxels of a 3-D view as f64, `i` fastest.
fn values<T: Voxel>(v: &imhost_core::VolumeView<'_, T>) -> Vec<f64> {
    v.data().t().iter().map(|x| x.to_f64()).collect()
}

/// Generate a phantom exam into `args.out`.
pub fn phantom(args: &CacPhantomArgs) -> Result<()> {
    let mut options = CacPhantomOptions::default();
    options.shape = args.size;
    options.spacing = args.spacing;
    options.seed = args.seed;
    options.category = args.category.as_deref().map(parse_category).transpose()?;
    options.noise_hu = args.noise;
    options.contrast = args.contrast;
    options.distractors = !args.no_distractors;
    let staged = StagedDir::create(&args.out, args.overwrite, &[])?;
    let p = phantom::generate(&options)?;
    let out = staged.path();
    let truth_dir = out.join("truth");
    std::fs::create_dir_all(&truth_dir).map_err(|e| Error::from(e).in_file(&truth_dir))?;
    write_volume(&AnyVolume::from(p.ct.clone()), &out.join("ct.nii.gz"))?;
    write_volume(&AnyVolume::from(p.labels.clone()), &truth_dir.join("labels.nii.gz"))?;
    if args.dicom {
        let key = format!("cac {options:?}");
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        let root = format!("1.2.826.0.1.3680043.10.1.{}", hash % 1_000_000_000_000 + 1);
        imhost_core::io::dicom::write_dicom_series(&p.ct, &out.join("dicom"), &root)?;
    }
    let truth = json!({
        "research_use_only": true,
        "what": "imhost CAC phantom: non-contrast cardiac CT with known coronary calcium",
        "target_category": p.target.letter(),
        "category": p.truth.category.letter(),
        "agatston": p.truth.agatston,
        "volume_mm3": p.truth.volume_mm3,
        "lesions_2d": p.truth.lesions.len(),
        "lesions_3d": p.truth.lesions_3d,
        "labels": (1..=6).map(|l| json!({"label": l, "name": LABEL_NAMES[l - 1], "coronary": l <= 4})).collect::<Vec<_>>(),
        "plaques": p.plaques,
        "options": {"size": args.size, "spacing_mm": args.spacing, "seed": args.seed, "noise_hu": args.noise,
                    "contrast": args.contrast, "distractors": !args.no_distractors},
    });
    write_json(&out.join("truth.json"), &truth)?;
    staged.commit("phantom cac")?;
    println!(
        "CAC phantom {}: category {} (aimed at {}), Agatston {:.1}, {} coronary lesions in 3-D; {} plaques drawn with distractors",
        args.out.display(),
        p.truth.category.letter(),
        p.target.letter(),
        p.truth.agatston,
        p.truth.lesions_3d,
        p.plaques.len()
    );
    Ok(())
}

/// The region labels of a label map: whole non-negative numbers, `keep` (empty: all non-zero).
fn region_of(mask: &AnyVolumeView<'_>, keep: &[u32]) -> Result<Vec<u32>> {
    let v = with_view!(mask, m => values(m));
    v.iter()
        .map(|&x| {
            if !(x >= 0.0 && x.fract() == 0.0 && x <= f64::from(u32::MAX)) {
                return Err(Error::invalid_argument(format!(
                    "--mask holds {x}, not a label (whole numbers ≥ 0; a probability map must be thresholded first)"
                )));
            }
            let l = x as u32;
            Ok(if keep.is_empty() || keep.contains(&l) { l } else { 0 })
        })
        .collect()
}

/// Score a CT.
pub fn run(args: &CacArgs) -> Result<()> {
    let options = AgatstonOptions {
        connectivity: if args.connectivity == 4 { Connectivity2d::Four } else { Connectivity2d::Eight },
        min_area_mm2: args.min_area_mm2,
        mass_calibration: args.mass_calibration,
        ..AgatstonOptions::default()
    };
    options.validate()?;
    if !matches!(args.connectivity, 4 | 8) {
        return Err(Error::invalid_argument(format!("--connectivity is 4 or 8, not {}", args.connectivity)));
    }
    let Some(mask_path) = &args.mask else {
        return Err(Error::unsupported(
            "no calcium segmentation: pass --mask LABELS (automatic segmentation by the cac-agatston model is not in this build yet)",
        ));
    };
    let mut inputs: Vec<&Path> = vec![&args.ct];
    inputs.push(mask_path);
    let staged = StagedDir::create(&args.out, args.overwrite, &inputs)?;
    let (ct, _) = read_input(&args.ct).map_err(|e| e.context("the CT"))?;
    let [ni, nj, nk, nt] = ct.shape();
    let geometry = *ct.geometry();
    if nt != 1 {
        return Err(Error::shape(format!(
            "calcium scoring takes one 3-D CT; {} is a 4-D series of {nt} frames (pick one phase)",
            args.ct.display()
        )));
    }
    let hu: Vec<f32> = with_view!(&ct.view(), v => values(v)).into_iter().map(|x| x as f32).collect();
    let dims = [ni, nj, nk];
    let check = qc::check_ct(&hu, dims, nt, &geometry)?;
    let (mask, _) = read_input(mask_path).map_err(|e| e.context("--mask"))?;
    let [mi, mj, mk, mt] = mask.shape();
    if mt != 1 {
        return Err(Error::shape("--mask must be a 3-D label map"));
    }
    imhost_core::score::check_same_placement(&geometry, mask.geometry(), dims, [mi, mj, mk])
        .map_err(|e| e.context("--mask and the CT"))?;
    let region = region_of(&mask.view(), &args.labels)?;
    let (score, map) = cac::agatston_with_map(&hu, dims, geometry.spacing, Some(&region), &options)?;

    let out = staged.path();
    let lesion_map: Vec<u16> = map.iter().map(|&l| l.min(u32::from(u16::MAX)) as u16).collect();
    let volume = Volume::new_3d(Array3::from_shape_vec((ni, nj, nk).f(), lesion_map).expect("sized"), geometry)?;
    write_volume(&AnyVolume::from(volume), &out.join("mask.nii.gz"))?;
    let report = report_json(&score, &check, args, &geometry);
    write_json(&out.join("report.json"), &report)?;
    let header = header_lines(&score, &check);
    cac::preview::render(&hu, dims, &map, &score, &header).save_png(&out.join("preview.png"))?;
    staged.commit("cac")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| Error::internal(e.to_string()))?);
    } else {
        for line in header {
            println!("{line}");
        }
        println!("written to {}", args.out.display());
    }
    if check.blocked() {
        let reasons: Vec<&str> = check.flags.iter().filter(|f| f.blocking).map(|f| f.message.as_str()).collect();
        return Err(Error::invalid_argument(format!("no valid calcium score: {}", reasons.join("; "))));
    }
    Ok(())
}

fn header_lines(score: &CacScore, check: &qc::CtCheck) -> Vec<String> {
    let mut lines = Vec::new();
    if check.blocked() {
        lines.push("NO VALID SCORE (see the QC flags)".to_string());
    } else {
        lines.push(format!(
            "AGATSTON {:.1}  CATEGORY {} ({})",
            score.agatston,
            score.category.letter(),
            score.category.description()
        ));
        let mass = score.mass_mg.map_or("MASS: NO CALIBRATION".to_string(), |m| format!("MASS {m:.1} MG"));
        lines.push(format!("VOLUME {:.1} MM3  {mass}  LESIONS {} (3-D)", score.volume_mm3, score.lesions_3d));
    }
    for f in &check.flags {
        lines.push(format!("QC {}: {}", f.code, f.message));
    }
    lines
}

fn report_json(score: &CacScore, check: &qc::CtCheck, args: &CacArgs, geometry: &imhost_core::Geometry) -> Value {
    let valid = !check.blocked();
    let num = |x: f64| if valid { json!(x) } else { Value::Null };
    json!({
        "research_use_only": true,
        "caveat": "Research use only; not for diagnosis. Scores follow docs/CAC.md.",
        "ct": args.ct.display().to_string(),
        "mask": args.mask.as_ref().map(|m| m.display().to_string()),
        "valid": valid,
        "agatston": num(score.agatston),
        "volume_mm3": num(score.volume_mm3),
        "mass_mg": if valid { json!(score.mass_mg) } else { Value::Null },
        "category": if valid { json!(score.category.letter()) } else { Value::Null },
        "category_range": if valid { json!(score.category.description()) } else { Value::Null },
        "lesions_3d": score.lesions_3d,
        "per_region": score.per_region,
        "lesions": score.lesions,
        "slice_mm": geometry.spacing[2],
        "slice_factor": score.slice_factor,
        "pixel_area_mm2": geometry.spacing[0] * geometry.spacing[1],
        "conventions": {
            "threshold_hu": score.options.threshold_hu,
            "min_voxels": score.options.min_voxels,
            "min_area_mm2": score.options.min_area_mm2,
            "connectivity_2d": score.options.connectivity.number(),
            "density_factor": "from the lesion's maximum HU: 130-199 → 1, 200-299 → 2, 300-399 → 3, ≥ 400 → 4",
            "category": "A: 0, B: (0, 10], C: (10, 100], D: (100, 400], E: > 400, on the unrounded score",
            "mass_calibration": score.options.mass_calibration,
        },
        "qc": {
            "flags": check.flags,
            "largest_enhancing_region_ml": check.largest_enhancing_ml,
        },
    })
}
