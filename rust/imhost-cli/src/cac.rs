//! `imhost cac CT --out DIR`: coronary calcium scores (Agatston, volume, mass, category A–E) of a
//! non-contrast cardiac CT, and `imhost phantom cac`: an exam with known truth. Conventions:
//! docs/CAC.md. Research use only.

use std::path::{Path, PathBuf};

use clap::Args;
#[cfg(feature = "learned")]
use imhost_core::cac::CacScore;
use imhost_core::cac::run::Segmented;
use imhost_core::cac::{self, AgatstonOptions, Category, Connectivity2d};
use imhost_core::io::output::{StagedDir, write_json};
use imhost_core::io::write_volume;
use imhost_core::phantom::cac::{self as phantom, CacPhantomOptions, LABEL_NAMES};
use imhost_core::{AnyVolume, AnyVolumeView, Error, Result, Voxel, with_view};
use serde_json::json;

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
    /// The cac-agatston model folder used when no --mask is given (default: IMHOST_CAC_MODEL,
    /// else the installed or repository models/cac-agatston).
    #[arg(long, conflicts_with = "mask")]
    pub model: Option<PathBuf>,
    /// Device of the model (cpu, cuda, cuda:N; default IMHOST_DEVICE, else CUDA when present).
    #[arg(long)]
    pub device: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Replace the output folder if it holds an earlier imhost result.
    #[arg(long)]
    pub overwrite: bool,
}

/// The default cac-agatston model folder: `IMHOST_CAC_MODEL`, else `../share/imhost/models/
/// cac-agatston` beside the executable, else the repository's `models/cac-agatston`.
pub fn default_model_dir() -> PathBuf {
    model_dir("IMHOST_CAC_MODEL", "cac-agatston")
}

/// A model folder `name`: the environment variable `env`, else `../share/imhost/models/NAME`
/// beside the executable (an installed imhost), else the repository's `models/NAME`.
pub fn model_dir(env: &str, name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os(env).filter(|d| !d.is_empty()) {
        return dir.into();
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|p| p.join("../share/imhost/models").join(name)))
        .filter(|d| d.join("manifest.json").is_file())
    {
        return dir;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models").join(name)
}

#[cfg(feature = "learned")]
fn segment(args: &CacArgs, hu: &[f32], dims: [usize; 3], spacing: [f64; 3], quiet: bool) -> Result<Segmented> {
    let dir = args.model.clone().unwrap_or_else(default_model_dir);
    let ensemble = imhost_models::cac::CacEnsemble::load(&dir, args.device.as_deref())
        .map_err(|e| e.context(format!("the cac-agatston model in {}", dir.display())))?;
    let seg = crate::progress::with_bar(quiet, |control| ensemble.segment(hu, dims, spacing, control))?;
    let m = ensemble.manifest();
    let to_region = |mask: &[bool]| mask.iter().map(|&b| u32::from(b)).collect::<Vec<u32>>();
    Ok(Segmented {
        region: to_region(&seg.mask),
        members: seg.members.iter().map(|x| to_region(x)).collect(),
        about: json!({"id": m.id, "version": m.version, "folder": dir.display().to_string(), "members": m.members.len(),
                      "isotropic_mm": seg.iso_mm, "device": imhost_models::runtime::device_name(ensemble.device()),
                      "training": "phantoms only (see the model's manifest.json)"}),
    })
}

#[cfg(not(feature = "learned"))]
fn segment(_: &CacArgs, _: &[f32], _: [usize; 3], _: [f64; 3], _: bool) -> Result<Segmented> {
    Err(Error::unsupported(
        "this imhost was built without LibTorch (cargo feature `learned`): pass --mask, or use `imhost run cac-agatston`",
    ))
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
pub fn run(args: &CacArgs, quiet: bool) -> Result<()> {
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
    let mut inputs: Vec<&Path> = vec![&args.ct];
    if let Some(m) = &args.mask {
        inputs.push(m);
    }
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
    let hu = cac::run::hu_of(&ct.view())?;
    let dims = [ni, nj, nk];
    let mut segmenter = || -> Result<Segmented> {
        match &args.mask {
            Some(mask_path) => {
                let (mask, _) = read_input(mask_path).map_err(|e| e.context("--mask"))?;
                let [mi, mj, mk, mt] = mask.shape();
                if mt != 1 {
                    return Err(Error::shape("--mask must be a 3-D label map"));
                }
                imhost_core::score::check_same_placement(&geometry, mask.geometry(), dims, [mi, mj, mk])
                    .map_err(|e| e.context("--mask and the CT"))?;
                Ok(Segmented { region: region_of(&mask.view(), &args.labels)?, ..Default::default() })
            }
            None => segment(args, &hu, dims, geometry.spacing, quiet),
        }
    };
    let result = cac::run::score_ct(&hu, dims, &geometry, &mut segmenter, &options)?;
    let out = staged.path();
    write_volume(&AnyVolume::from(result.mask_volume(dims, geometry)?), &out.join("mask.nii.gz"))?;
    let mut report = result.report.clone();
    report["ct"] = json!(args.ct.display().to_string());
    report["mask"] = json!(args.mask.as_ref().map(|m| m.display().to_string()));
    write_json(&out.join("report.json"), &report)?;
    let png = result.preview_png(&hu, dims)?;
    imhost_core::io::output::write_atomically(&out.join("preview.png"), |w| w.write_all(&png).map_err(Error::from))?;
    staged.commit("cac")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| Error::internal(e.to_string()))?);
    } else {
        for line in &result.lines {
            println!("{line}");
        }
        println!("written to {}", args.out.display());
    }
    if result.check.blocked() {
        let reasons: Vec<&str> = result.check.flags.iter().filter(|f| f.blocking).map(|f| f.message.as_str()).collect();
        return Err(Error::invalid_argument(format!("no valid calcium score: {}", reasons.join("; "))));
    }
    Ok(())
}

/// Arguments of `imhost train cac`.
#[cfg(feature = "learned")]
#[derive(Args)]
pub struct CacTrainArgs {
    /// Model folder to write (manifest.json + member-N.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Training exams (phantoms, categories A–E in turn).
    #[arg(long, default_value_t = 40)]
    pub cases: usize,
    /// Validation exams (the best epoch of every member is chosen on them).
    #[arg(long, default_value_t = 8)]
    pub validation: usize,
    /// Seed of the first exam (exam n uses seed + n; validation follows training).
    #[arg(long, default_value_t = 20000)]
    pub seed: u64,
    /// Members of the ensemble (the paper: 5; odd, so that the vote has a majority).
    #[arg(long, default_value_t = 5)]
    pub members: usize,
    /// Epochs per member.
    #[arg(long, default_value_t = 12)]
    pub epochs: usize,
    /// Index of the first member trained (member m uses seed + m and is written as
    /// member-(m+1)): retrains one member of an ensemble on the same exams.
    #[arg(long, default_value_t = 0)]
    pub first_member: usize,
    /// Filters of the first level (the paper: 16).
    #[arg(long, default_value_t = 8)]
    pub width: usize,
    /// Device (cpu, cuda, cuda:N; default IMHOST_DEVICE, else CUDA when present).
    #[arg(long)]
    pub device: Option<String>,
    /// Replace the output folder if it holds an earlier imhost result.
    #[arg(long)]
    pub overwrite: bool,
}

#[cfg(feature = "learned")]
/// The varied phantom of training or validation exam `seed`: category by `seed % 5`, pixels
/// 0.45–0.8 mm over a 180–220 mm field of view, 2.5 or 3 mm slices over 120 mm, noise 8–20 HU.
pub fn varied_phantom_options(seed: u64) -> CacPhantomOptions {
    let mut rng = imhost_core::phantom::ctp::SplitMix64::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xCAC);
    let mut o = CacPhantomOptions::default();
    let pixel = 0.45 + 0.35 * rng.uniform();
    let fov = 180.0 + 40.0 * rng.uniform();
    let slice: f64 = if rng.uniform() < 0.5 { 2.5 } else { 3.0 };
    let n = (fov / pixel).round() as usize;
    o.shape = [n, n, (120.0 / slice).round() as usize];
    o.spacing = [pixel, pixel, slice];
    o.seed = seed;
    o.category = Some(Category::ALL[(seed % 5) as usize]);
    o.noise_hu = 8.0 + 12.0 * rng.uniform();
    o.distractors = rng.uniform() < 0.9;
    o
}

/// A phantom's CT as f32 HU and its coronary truth mask (labels 1–4).
#[cfg(feature = "learned")]
pub fn phantom_arrays(p: &phantom::CacPhantom) -> (Vec<f32>, Vec<bool>, [usize; 3], [f64; 3]) {
    let [ni, nj, nk, _] = p.ct.shape();
    let hu: Vec<f32> = p.ct.data().t().iter().map(|&v| f32::from(v)).collect();
    let truth: Vec<bool> = p.labels.data().t().iter().map(|&l| (1..=4).contains(&l)).collect();
    (hu, truth, [ni, nj, nk], p.ct.geometry().spacing)
}

/// Train the ensemble on phantoms.
#[cfg(feature = "learned")]
pub fn train(args: &CacTrainArgs, quiet: bool) -> Result<()> {
    use imhost_models::cac::{self as model, CacManifest, CacSample, CacTrainOptions, Member};
    use imhost_models::cac_unet::Config;
    if args.members == 0 || (args.first_member == 0 && args.members % 2 == 0) {
        return Err(Error::invalid_argument("--members must be odd (a majority vote needs one)"));
    }
    if args.cases == 0 || args.validation == 0 {
        return Err(Error::invalid_argument("--cases and --validation must be at least 1"));
    }
    let config = Config { base_width: args.width, levels: 4 };
    config.validate()?;
    let staged = StagedDir::create(&args.out, args.overwrite, &[])?;
    let started = std::time::Instant::now();
    let make = |n: usize| -> Result<CacSample> {
        let p = phantom::generate(&varied_phantom_options(args.seed + n as u64))?;
        let (hu, truth, dims, spacing) = phantom_arrays(&p);
        CacSample::new(&hu, &truth, dims, spacing, config.multiple())
    };
    if !quiet {
        eprintln!("generating {} training and {} validation phantoms…", args.cases, args.validation);
    }
    let train: Vec<CacSample> = (0..args.cases).map(make).collect::<Result<_>>()?;
    let validation: Vec<CacSample> = (args.cases..args.cases + args.validation).map(make).collect::<Result<_>>()?;
    let mut options = CacTrainOptions::default();
    options.epochs = args.epochs;
    options.seed = args.seed;
    options.device = args.device.clone();
    options.config = config;
    let mut members = Vec::new();
    for m in args.first_member..args.first_member + args.members {
        let mut progress = |e: &model::CacEpoch| {
            if !quiet {
                eprintln!(
                    "member {} ({} of {}) epoch {}/{}: train Dice loss {:.4}, validation {:.4} ({:.0} s)",
                    m + 1,
                    m + 1 - args.first_member,
                    args.members,
                    e.epoch,
                    args.epochs,
                    e.train_loss,
                    e.validation_loss,
                    e.seconds
                );
            }
        };
        let (bytes, log, best) = model::train_member(&train, &validation, &options, m, &mut progress)?;
        let file = format!("member-{}.safetensors", m + 1);
        imhost_core::io::output::write_atomically(&staged.path().join(&file), |w| {
            w.write_all(&bytes).map_err(Error::from)
        })?;
        let best_epoch = log.iter().min_by(|a, b| a.validation_loss.total_cmp(&b.validation_loss)).map(|e| e.epoch);
        members.push(Member {
            file,
            sha256: imhost_registry::network::sha256_hex(&bytes),
            training: json!({"seed": args.seed + m as u64, "best_epoch": best_epoch, "best_validation_dice_loss": best, "epochs": log}),
        });
    }
    let manifest = CacManifest {
        format: imhost_registry::network::FORMAT.to_string(),
        id: "cac-agatston-phantom".into(),
        version: "0.1.0".into(),
        task: model::TASK.into(),
        research_use_only: true,
        license: "Apache-2.0".into(),
        architecture: imhost_registry::network::Architecture {
            name: "cac-unet3d".into(),
            paper: Some("Gogin et al. 2021, Automatic coronary artery calcium scoring from unenhanced-ECG-gated CT using deep learning (Diagn. Interv. Imaging, doi:10.1016/j.diii.2021.05.004)".into()),
            config: Some(serde_json::to_value(config).map_err(|e| Error::internal(e.to_string()))?),
        },
        members,
        preprocessing: "downsampled to isotropic 2.5 mm (slices ≤ 2.75 mm apart) or 3 mm: cell mean HU, or the maximum of its voxels ≥ 130 HU where it holds any; clipped to −300…800 HU and scaled to 0…1; padded to multiples of 8 with 0. Output: per-voxel majority vote of the members (logit > 0), upsampled to the CT's grid and kept ≥ 130 HU".into(),
        training: json!({
            "data": format!("PHANTOMS ONLY — never trained on or validated against patient data. {} training and {} validation exams of `imhost phantom cac` (seeds {}..{}), categories A–E in turn, pixels 0.45–0.8 mm, 2.5 or 3 mm slices, noise 8–20 HU, mitral/aortic distractors in 90 %", args.cases, args.validation, args.seed, args.seed + (args.cases + args.validation) as u64 - 1),
            "recipe": format!("Adam lr {} (halved after 1/2 and 3/4 of the epochs), soft Dice loss, {} epochs × {} random crops {:?} per exam (half holding calcium), best epoch on the validation Dice loss", options.learning_rate, args.epochs, options.crops_per_exam, options.crop),
            "width_note": format!("first-level filters {} (the paper: 16; `--width 16` trains the paper's width)", args.width),
            "command": format!("imhost train cac --out DIR --cases {} --validation {} --seed {} --members {} --epochs {} --width {}", args.cases, args.validation, args.seed, args.members, args.epochs, args.width),
            "seconds": started.elapsed().as_secs_f64(),
        }),
    };
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| Error::internal(e.to_string()))?;
    imhost_core::io::output::write_text(&staged.path().join("manifest.json"), &(text + "\n"))?;
    staged.commit("train cac")?;
    if !quiet {
        eprintln!("wrote {} ({:.0} s)", args.out.display(), started.elapsed().as_secs_f64());
    }
    Ok(())
}

/// Arguments of `imhost validate-cac`.
#[cfg(feature = "learned")]
#[derive(Args)]
pub struct CacValidateArgs {
    /// The model folder (default: as `imhost cac`).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Held-out phantom exams (categories A–E in turn).
    #[arg(long, default_value_t = 40)]
    pub cases: usize,
    /// Seed of the first held-out exam (training uses 20000 onwards).
    #[arg(long, default_value_t = 90000)]
    pub seed: u64,
    /// The Markdown file whose CAC section (from `<!-- cac -->`) is replaced.
    #[arg(long, default_value = "docs/VALIDATION.md")]
    pub out: PathBuf,
    /// Device.
    #[arg(long)]
    pub device: Option<String>,
}

/// Where the CAC section of docs/VALIDATION.md starts; it runs to the next section's marker.
pub const VALIDATION_MARKER: &str = "<!-- cac -->";

/// Lesion-level counts of one prediction against the truth.
#[cfg(feature = "learned")]
#[derive(Debug, Clone, Copy, Default)]
struct LesionCounts {
    predicted: usize,
    predicted_true: usize,
    truth: usize,
    truth_found: usize,
    distractors: usize,
    distractors_hit: usize,
    /// Every labelled coronary group, specks below 3 pixels included (reported, not scored).
    labelled: usize,
    labelled_found: usize,
}

#[cfg(feature = "learned")]
impl LesionCounts {
    /// `pred` (counted lesion pixels) against the truth, by 26-connected 3-D lesions: the truth
    /// lesions are the pixels the Agatston rule counts on the coronary truth (`counted`: labels
    /// 1–4, ≥ 3 pixels per slice — a smaller speck is no lesion for any scorer); a predicted
    /// lesion is true when it touches any coronary truth voxel (`labels` 1–4), and the
    /// distractors are labels 5–6.
    fn of(pred: &[bool], counted: &[bool], labels: &[u8], dims: [usize; 3]) -> Self {
        let truth: Vec<bool> = labels.iter().map(|l| (1..=4).contains(l)).collect();
        let distractor: Vec<bool> = labels.iter().map(|l| *l >= 5).collect();
        let hits = |a: &[bool], b: &[bool]| -> (usize, usize) {
            let (la, n) = cac::components_3d(a, dims);
            let mut hit = vec![false; n as usize + 1];
            for (l, &inb) in la.iter().zip(b) {
                if *l != 0 && inb {
                    hit[*l as usize] = true;
                }
            }
            (n as usize, hit.iter().filter(|h| **h).count())
        };
        let (predicted, predicted_true) = hits(pred, &truth);
        let (truth_n, truth_found) = hits(counted, pred);
        let (distractors, distractors_hit) = hits(&distractor, pred);
        let (labelled, labelled_found) = hits(&truth, pred);
        LesionCounts {
            predicted,
            predicted_true,
            truth: truth_n,
            truth_found,
            distractors,
            distractors_hit,
            labelled,
            labelled_found,
        }
    }

    fn add(&mut self, o: &Self) {
        self.predicted += o.predicted;
        self.predicted_true += o.predicted_true;
        self.truth += o.truth;
        self.truth_found += o.truth_found;
        self.distractors += o.distractors;
        self.distractors_hit += o.distractors_hit;
        self.labelled += o.labelled;
        self.labelled_found += o.labelled_found;
    }

    fn f1(&self) -> f64 {
        let p = self.predicted_true as f64 / self.predicted.max(1) as f64;
        let r = self.truth_found as f64 / self.truth.max(1) as f64;
        if p + r == 0.0 { 0.0 } else { 2.0 * p * r / (p + r) }
    }
}

/// The table's figures for one predictor (the ensemble or one member) over all exams.
#[cfg(feature = "learned")]
#[derive(Debug, Clone, serde::Serialize)]
struct Figures {
    category_accuracy: f64,
    c_index: f64,
    kappa_linear: f64,
    median_relative_error: f64,
    lesion_precision: f64,
    lesion_recall: f64,
    /// Recall over every labelled coronary group, specks below 3 pixels included.
    labelled_recall: f64,
    lesion_f1: f64,
    distractors_counted: f64,
}

#[cfg(feature = "learned")]
fn figures(truth: &[CacScore], pred: &[CacScore], lesions: &LesionCounts) -> Result<Figures> {
    use imhost_core::score::stats;
    let tc: Vec<f64> = truth.iter().map(|s| s.category.index() as f64).collect();
    let pc: Vec<f64> = pred.iter().map(|s| s.category.index() as f64).collect();
    let correct = tc.iter().zip(&pc).filter(|(a, b)| a == b).count();
    let ti: Vec<i64> = tc.iter().map(|&c| c as i64).collect();
    let pi: Vec<i64> = pc.iter().map(|&c| c as i64).collect();
    let mut rel: Vec<f64> = truth
        .iter()
        .zip(pred)
        .filter(|(t, _)| t.agatston > 0.0)
        .map(|(t, p)| (p.agatston - t.agatston).abs() / t.agatston)
        .collect();
    let median = if rel.is_empty() { f64::NAN } else { imhost_core::score::quantile(&mut rel, 0.5) };
    Ok(Figures {
        category_accuracy: correct as f64 / truth.len() as f64,
        c_index: stats::c_index_ordinal(&tc, &pc)?,
        kappa_linear: stats::cohen_kappa(&ti, &pi, &[0, 1, 2, 3, 4], stats::KappaWeights::Linear)?,
        median_relative_error: median,
        lesion_precision: lesions.predicted_true as f64 / lesions.predicted.max(1) as f64,
        lesion_recall: lesions.truth_found as f64 / lesions.truth.max(1) as f64,
        labelled_recall: lesions.labelled_found as f64 / lesions.labelled.max(1) as f64,
        lesion_f1: lesions.f1(),
        distractors_counted: lesions.distractors_hit as f64 / lesions.distractors.max(1) as f64,
    })
}

/// Validate the ensemble and its members on held-out phantoms; write the CAC section.
#[cfg(feature = "learned")]
pub fn validate(args: &CacValidateArgs, quiet: bool) -> Result<()> {
    use imhost_models::cac::CacEnsemble;
    let dir = args.model.clone().unwrap_or_else(default_model_dir);
    let ensemble = CacEnsemble::load(&dir, args.device.as_deref())?;
    let members = ensemble.manifest().members.len();
    let options = AgatstonOptions::default();
    let (mut truth, mut vote) = (Vec::new(), Vec::new());
    let mut single: Vec<Vec<CacScore>> = vec![Vec::new(); members];
    let mut vote_lesions = LesionCounts::default();
    let mut member_lesions = vec![LesionCounts::default(); members];
    let mut confusion = [[0usize; 5]; 5];
    let (mut seconds, mut voxels) = (0.0, 0usize);
    for n in 0..args.cases {
        let p = phantom::generate(&varied_phantom_options(args.seed + n as u64))?;
        let (hu, _, dims, spacing) = phantom_arrays(&p);
        let labels: Vec<u8> = p.labels.data().t().iter().copied().collect();
        let coronary: Vec<u32> = labels.iter().map(|&l| u32::from((1..=4).contains(&l))).collect();
        let (_, truth_map) = cac::agatston_with_map(&hu, dims, spacing, Some(&coronary), &options)?;
        let counted_truth: Vec<bool> = truth_map.iter().map(|&l| l != 0).collect();
        let started = std::time::Instant::now();
        let seg = ensemble.segment(&hu, dims, spacing, &imhost_core::RunControl::none())?;
        let region = |m: &[bool]| m.iter().map(|&b| u32::from(b)).collect::<Vec<u32>>();
        let (s, map) = cac::agatston_with_map(&hu, dims, spacing, Some(&region(&seg.mask)), &options)?;
        seconds += started.elapsed().as_secs_f64();
        voxels = voxels.max(hu.len());
        let counted: Vec<bool> = map.iter().map(|&l| l != 0).collect();
        vote_lesions.add(&LesionCounts::of(&counted, &counted_truth, &labels, dims));
        for (m, mask) in seg.members.iter().enumerate() {
            let (sm, mm) = cac::agatston_with_map(&hu, dims, spacing, Some(&region(mask)), &options)?;
            let counted: Vec<bool> = mm.iter().map(|&l| l != 0).collect();
            member_lesions[m].add(&LesionCounts::of(&counted, &counted_truth, &labels, dims));
            single[m].push(sm);
        }
        confusion[p.truth.category.index()][s.category.index()] += 1;
        if !quiet {
            eprintln!(
                "exam {}/{}: truth {} ({:.1}), ensemble {} ({:.1})",
                n + 1,
                args.cases,
                p.truth.category.letter(),
                p.truth.agatston,
                s.category.letter(),
                s.agatston
            );
        }
        truth.push(p.truth);
        vote.push(s);
    }
    let ensemble_figures = figures(&truth, &vote, &vote_lesions)?;
    let member_figures: Vec<Figures> =
        (0..members).map(|m| figures(&truth, &single[m], &member_lesions[m])).collect::<Result<_>>()?;
    let mean_sd = |f: &dyn Fn(&Figures) -> f64| -> String {
        let v: Vec<f64> = member_figures.iter().map(f).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len().max(2) - 1) as f64).sqrt();
        format!("{mean:.3} ± {sd:.3}")
    };
    type Pick = fn(&Figures) -> f64;
    let columns: [(&str, Pick); 8] = [
        ("C-index", |f| f.c_index),
        ("category accuracy", |f| f.category_accuracy),
        ("κ (linear)", |f| f.kappa_linear),
        ("Agatston median rel. error", |f| f.median_relative_error),
        ("lesion precision", |f| f.lesion_precision),
        ("lesion recall", |f| f.lesion_recall),
        ("lesion F1", |f| f.lesion_f1),
        ("mitral/aortic lesions counted", |f| f.distractors_counted),
    ];
    let mut doc = format!(
        "{VALIDATION_MARKER}\n# Validation of coronary calcium scoring (cac-agatston)\n\n\
Regenerate with `imhost validate-cac --cases {} --seed {}` (model `{}` {}, {} members). \
**Phantoms only**: {} held-out exams of `imhost phantom cac` (seeds {}–{}, categories A–E in turn, pixels 0.45–0.8 mm, \
2.5/3 mm slices, noise 8–20 HU, mitral/aortic calcium in ~90 %), never seen in training (seeds from 20000). \
Truth: the paper's rule on the phantom's plaques (footprint ∧ ≥ 130 HU), scored by the same Agatston code. \
The paper's Table 1 reports, on 98 patient exams, C-index 0.951 and category accuracy 0.857 for the final ensemble.\n\n",
        args.cases,
        args.seed,
        ensemble.manifest().id,
        ensemble.manifest().version,
        members,
        args.cases,
        args.seed,
        args.seed + args.cases as u64 - 1
    );
    doc += &format!("| model | {} |\n|---|{}\n", columns.map(|c| c.0).join(" | "), "---|".repeat(columns.len()));
    doc += &format!(
        "| ensemble of {members} (vote) | {} |\n",
        columns.map(|c| format!("{:.3}", c.1(&ensemble_figures))).join(" | ")
    );
    doc += &format!("| 1 model (mean ± sd of {members}) | {} |\n\n", columns.map(|c| mean_sd(&c.1)).join(" | "));
    doc += "Confusion matrix of the ensemble's category (rows truth, columns prediction):\n\n| truth \\ pred | A | B | C | D | E |\n|---|---|---|---|---|---|\n";
    for (t, row) in confusion.iter().enumerate() {
        doc += &format!("| {} | {} |\n", Category::ALL[t].letter(), row.map(|c| c.to_string()).join(" | "));
    }
    doc += &format!(
        "\nTargets (issue 14): C-index ≥ 0.95, category accuracy ≥ 0.86, lesion F1 ≥ 0.95, mitral/aortic calcium not counted. \
Lesions are 26-connected 3-D groups of counted pixels; a truth lesion is a 26-connected group of the pixels the Agatston rule counts on the coronary truth (≥ 3 pixels per slice: a smaller speck is no lesion for any scorer), \
found when a counted pixel touches it (over every labelled group, specks included, the ensemble's recall is {:.3}); \
a predicted lesion is true when it touches a coronary truth voxel; *mitral/aortic lesions counted* is the fraction of distractor \
lesions the prediction touches. Inference: {:.2} s per exam on average ({} CPU threads, largest exam {} voxels; \
BENCHMARKS.md has the 512×512×64 figure).\n",
        ensemble_figures.labelled_recall,
        seconds / args.cases as f64,
        imhost_models::runtime::init().cpu_threads,
        voxels
    );
    crate::validate::replace_section(&args.out, VALIDATION_MARKER, &doc)?;
    let json_path = args.out.with_file_name("validation-cac.json");
    write_json(
        &json_path,
        &json!({"ensemble": ensemble_figures, "members": member_figures, "confusion": confusion, "cases": args.cases, "seed": args.seed}),
    )?;
    println!(
        "CAC validation on {} held-out phantoms: ensemble C-index {:.3}, accuracy {:.3}, lesion F1 {:.3}; written to {}",
        args.cases,
        ensemble_figures.c_index,
        ensemble_figures.category_accuracy,
        ensemble_figures.lesion_f1,
        args.out.display()
    );
    Ok(())
}
