//! `imhost phantom ctp` and `imhost perfusion`.

use std::path::{Path, PathBuf};

use imhost_core::io::output::{StagedDir, write_json};
use imhost_core::io::{read_volume, write_volume};
use imhost_core::perfusion::aif::VesselSelection;
use imhost_core::perfusion::{self, Method, PerfusionResult};
use imhost_core::phantom::ctp::{self, PhantomKind, PhantomOptions};
use imhost_core::registry::builtin::Perfusion;
use imhost_core::{AnyVolume, Error, Result};
use rayon::prelude::*;
use serde_json::json;

use crate::progress::with_bar;

/// Arguments of `imhost phantom ctp`.
#[derive(clap::Args)]
pub struct PhantomArgs {
    /// kudo, anatomical, or lobular (the second, structurally different head family).
    #[arg(long, value_parser = ["kudo", "anatomical", "lobular"], default_value = "anatomical")]
    pub kind: String,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Gaussian noise σ in HU.
    #[arg(long, default_value_t = 5.0)]
    pub noise: f64,
    /// Seed of noise and motion.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Simulate rigid head motion (anatomical only).
    #[arg(long)]
    pub motion: bool,
    /// Non-uniform frame times (1 s to 40 s, then 2 s).
    #[arg(long)]
    pub nonuniform_times: bool,
    /// Also write the study as a DICOM CT series into DIR/dicom/.
    #[arg(long)]
    pub dicom: bool,
    /// Image size NI,NJ,NK (anatomical and lobular).
    #[arg(long, value_parser = crate::parse_size)]
    pub size: Option<[usize; 3]>,
    /// Number of frames (with --interval).
    #[arg(long, requires = "interval")]
    pub frames: Option<usize>,
    /// Seconds between frames (with --frames).
    #[arg(long, requires = "frames")]
    pub interval: Option<f64>,
    /// Draw an ISLES-2018-like study from --seed (anatomical): 256×256, 2–22 slices of 4–12 mm,
    /// 43–64 frames 1–2 s apart, noise 3–8 HU, varied anatomy and lesion size; the stroke-lesion
    /// model's training and validation protocol.
    #[arg(long, conflicts_with_all = ["size", "frames", "interval", "nonuniform_times", "motion"])]
    pub isles: bool,
    /// Replace the output folder if it holds an earlier imhost result.
    #[arg(long)]
    pub overwrite: bool,
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::from(e).in_file(dir))
}

/// Generate a phantom and its truth into `args.out`.
pub fn phantom(args: &PhantomArgs) -> Result<()> {
    let kind = match args.kind.as_str() {
        "kudo" => PhantomKind::Kudo,
        "lobular" => PhantomKind::Lobular,
        _ => PhantomKind::Anatomical,
    };
    let mut options = PhantomOptions::new(kind);
    options.noise_hu = args.noise;
    options.seed = args.seed;
    options.motion = args.motion;
    options.shape = args.size;
    if args.nonuniform_times {
        options.frame_times = Some(ctp::nonuniform_frame_times());
    }
    if let Some((count, interval)) = args.frames.zip(args.interval) {
        if count < 2 || interval.is_nan() || interval <= 0.0 {
            return Err(Error::invalid_argument("--frames needs at least 2 frames and a positive --interval"));
        }
        options.frame_times = Some((0..count).map(|n| n as f64 * interval).collect());
    }
    if args.isles {
        if kind != PhantomKind::Anatomical {
            return Err(Error::invalid_argument("--isles draws an anatomical study; leave --kind at anatomical"));
        }
        options = imhost_core::phantom::dwi::stroke_study_options(args.seed, 256);
    }
    let staged = StagedDir::create(&args.out, args.overwrite, &[])?;
    let phantom = ctp::generate(&options)?;
    let out = staged.path();
    let truth_dir = out.join("truth");
    create_dir(&truth_dir)?;
    write_volume(&AnyVolume::from(phantom.ctp.clone()), &out.join("ctp.nii.gz"))?;
    if args.dicom {
        // UIDs under our phantom root, by the phantom's parameters: the same phantom gets the
        // same UIDs, a different one (size, frames, noise, seed, motion) never collides with it
        // in a PACS.
        let key = format!("{options:?}");
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        let root = format!("1.2.826.0.1.3680043.10.1.{}", hash % 1_000_000_000_000 + 1);
        imhost_core::io::dicom::write_dicom_series(&phantom.ctp, &out.join("dicom"), &root)?;
    }
    let t = &phantom.truth;
    for (name, map) in [("cbf", &t.cbf), ("cbv", &t.cbv), ("mtt", &t.mtt), ("delay", &t.delay), ("tmax", &t.tmax)] {
        write_volume(&AnyVolume::from(map.clone()), &truth_dir.join(format!("{name}.nii.gz")))?;
    }
    for (name, mask) in [("core", &t.core), ("hypoperfusion", &t.hypoperfusion), ("tissue", &t.tissue)] {
        write_volume(&AnyVolume::from(mask.clone()), &truth_dir.join(format!("{name}.nii.gz")))?;
    }
    // The study's DWI (b = 1000, core bright) and its lesion mask: the stroke-lesion model's
    // target and truth.
    let dwi_options = imhost_core::phantom::dwi::DwiOptions { seed: args.seed, ..Default::default() };
    let (dwi, lesion) = imhost_core::phantom::dwi::synthesize(&phantom.ctp, t, &dwi_options)?;
    write_volume(&AnyVolume::from(dwi), &truth_dir.join("dwi.nii.gz"))?;
    write_volume(&AnyVolume::from(lesion), &truth_dir.join("lesion.nii.gz"))?;
    let count = |m: &imhost_core::Volume<u8>| m.data().iter().filter(|&&x| x == 1).count();
    let voxel_ml = phantom.ctp.geometry().spacing.iter().product::<f64>() / 1000.0;
    write_json(
        &truth_dir.join("phantom.json"),
        &json!({
            "research_use_only": true,
            "kind": kind, "noise_hu": options.noise_hu, "isles_protocol": args.isles, "anatomy": options.anatomy, "seed": args.seed, "motion": args.motion,
            "shape": phantom.ctp.shape(), "spacing_mm": phantom.ctp.geometry().spacing,
            "frame_times_s": phantom.ctp.frame_times().map(|f| f.as_slice().to_vec()),
            "aif": t.aif, "aif_voxels": t.aif_voxels.len(), "aif_voxel_example": t.aif_voxels.first(),
            "vof_voxels": t.vof_voxels.len(), "vof_voxel_example": t.vof_voxels.first(),
            "classes": t.classes.iter().map(|(name, p)| json!({"name": name, "params": p})).collect::<Vec<_>>(),
            "motion_per_frame": t.motion,
            "dwi": {"file": "dwi.nii.gz", "lesion": "lesion.nii.gz", "b_value": 1000, "core_ratio": dwi_options.core_ratio,
                    "rician_noise": dwi_options.noise, "scaling": "minimum → 0, 99th percentile → 1 (Wang et al. §4.1)",
                    "model": "b = 1000 trace: white matter 0.30, grey matter 0.42, CSF 0.10, bone/air 0.02, other 0.25; core ×core_ratio with a σ 0.8 px partial-volume edge; penumbra normal"},
            "volumes_ml": {"core": count(&t.core) as f64 * voxel_ml, "hypoperfusion": count(&t.hypoperfusion) as f64 * voxel_ml},
            "conventions": {
                "tmax": "Tmax = delay: the time at which the delayed residue function first reaches its maximum (box IRF: the plateau's onset)",
                "units": {"cbf": "ml/100 g/min", "cbv": "ml/100 g", "mtt": "s", "delay": "s", "tmax": "s"},
                "k_h": imhost_core::perfusion::constants::K_H, "rho": imhost_core::perfusion::constants::RHO,
            },
        }),
    )?;
    staged.commit("phantom ctp")?;
    println!(
        "phantom ({:?}) written to {}: {:?} voxels, core {:.1} ml, hypoperfusion {:.1} ml",
        kind,
        args.out.display(),
        phantom.ctp.shape(),
        count(&t.core) as f64 * voxel_ml,
        count(&t.hypoperfusion) as f64 * voxel_ml
    );
    Ok(())
}

/// Arguments of `imhost perfusion`.
#[derive(clap::Args)]
pub struct PerfusionArgs {
    /// The study: a .nii/.nii.gz file or a folder holding a DICOM CT perfusion series.
    pub input: PathBuf,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// ssvd, bsvd, osvd, tikhonov, nlr or cnn (the perfusion CNN; see --model).
    #[arg(long, default_value = "osvd")]
    pub method: String,
    /// `auto` or a voxel `i,j,k`.
    #[arg(long, default_value = "auto")]
    pub aif: String,
    /// Patient age in years (for DAWN).
    #[arg(long)]
    pub age: Option<f64>,
    /// NIH stroke scale (for DAWN).
    #[arg(long)]
    pub nihss: Option<f64>,
    /// Skip the bilateral filter.
    #[arg(long)]
    pub no_filter: bool,
    /// Bilateral filter: spatial σ in mm (widened on noisy studies unless --fixed-filter).
    #[arg(long)]
    pub filter_sigma_mm: Option<f64>,
    /// Keep the filter's spatial σ as given. By default the classical methods widen it when the
    /// measured baseline noise is above 5 HU per frame at 1 s sampling (report.json:
    /// preprocessing.baseline_noise_hu and bilateral.sigma_spatial_mm).
    #[arg(long)]
    pub fixed_filter: bool,
    /// Bilateral filter: range σ in HU.
    #[arg(long)]
    pub filter_range_hu: Option<f64>,
    /// Do not register frames even when motion is found (it is still estimated and flagged).
    #[arg(long)]
    pub no_motion_correction: bool,
    /// A phantom's truth folder: also compare the result with it (truth_comparison.json).
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Model folder for --method cnn (default: the committed phantom-trained weights).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Device for --method cnn: auto, cpu, cuda, cuda:N (default: IMHOST_DEVICE, else auto).
    #[arg(long)]
    pub device: Option<String>,
    /// Precision for --method cnn: f32, or f16/bf16 on CUDA.
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// Replace the output folder if it holds an earlier imhost result (without it, a folder
    /// that holds files is refused before any work).
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub dicom: crate::dicom_out::DicomOutArgs,
}

/// Where `--method cnn` finds its model without `--model`: `IMHOST_PERFUSION_CNN_MODEL`, then
/// `<binary>/../share/imhost/models/perfusion-cnn` (an installed layout), then the repository's
/// committed default weights.
pub fn default_model_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("IMHOST_PERFUSION_CNN_MODEL").filter(|d| !d.is_empty()) {
        return dir.into();
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|p| p.join("../share/imhost/models/perfusion-cnn")))
        .filter(|d| d.join("manifest.json").is_file())
    {
        return dir;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/perfusion-cnn")
}

/// Load the perfusion CNN for `--method cnn`.
#[cfg(feature = "learned")]
pub fn load_model(
    dir: Option<&Path>,
    device: Option<String>,
    precision: &str,
) -> Result<imhost_core::perfusion::model::ModelHandle> {
    let dir = dir.map_or_else(default_model_dir, Path::to_path_buf);
    let options = imhost_models::LoadOptions::new(device, imhost_models::Precision::from_name(precision)?);
    let model = imhost_models::PerfusionModel::load(&dir, &options)?;
    Ok(imhost_core::perfusion::model::ModelHandle(std::sync::Arc::new(model)))
}

/// The `perfusion-cnn` model of `--method cnn`.
#[cfg(feature = "learned")]
fn learned_model(args: &PerfusionArgs) -> Result<Perfusion> {
    let network = load_model(args.model.as_deref(), args.device.clone(), &args.precision)?;
    let about = network.0.describe();
    let version = about["version"].as_str().unwrap_or("unknown").to_string();
    Ok(Perfusion::learned(network, &version, about))
}

#[cfg(not(feature = "learned"))]
fn learned_model(_: &PerfusionArgs) -> Result<Perfusion> {
    Err(Error::unsupported(
        "this imhost was built without LibTorch (cargo feature `learned`): --method cnn is not available; `imhost run perfusion-cnn` uses imhost-model-worker when it is installed",
    ))
}

/// Read a phantom's truth folder (as `imhost phantom ctp` writes it).
fn read_truth(dir: &Path) -> Result<ctp::Truth> {
    let map = |name: &str| -> Result<imhost_core::Volume<f32>> {
        match read_volume(&dir.join(format!("{name}.nii.gz")))? {
            AnyVolume::F32(v) => Ok(v),
            _ => Err(Error::data_type(format!("truth map {name} is not float32"))),
        }
    };
    let mask = |name: &str| -> Result<imhost_core::Volume<u8>> {
        match read_volume(&dir.join(format!("{name}.nii.gz")))? {
            AnyVolume::U8(v) => Ok(v),
            _ => Err(Error::data_type(format!("truth mask {name} is not uint8"))),
        }
    };
    Ok(ctp::Truth {
        cbf: map("cbf")?,
        cbv: map("cbv")?,
        mtt: map("mtt")?,
        delay: map("delay")?,
        tmax: map("tmax")?,
        tissue: mask("tissue")?,
        core: mask("core")?,
        hypoperfusion: mask("hypoperfusion")?,
        aif_voxels: vec![],
        vof_voxels: vec![],
        aif: None,
        motion: vec![],
        classes: vec![],
    })
}

/// A model option's message in the command's terms (`--age` for `age_years`).
fn cli_option_message(message: &str) -> String {
    [
        ("option age_years", "--age"),
        ("option nihss", "--nihss"),
        ("option filter_sigma_mm", "--filter-sigma-mm"),
        ("option filter_range_hu", "--filter-range-hu"),
        ("option aif_i", "--aif i"),
        ("option aif_j", "--aif j"),
        ("option aif_k", "--aif k"),
    ]
    .iter()
    .fold(message.to_string(), |m, (from, to)| m.replace(from, to))
}

/// Parse `auto` or `i,j,k`.
pub fn parse_voxel(text: &str) -> Result<VesselSelection> {
    if text == "auto" {
        return Ok(VesselSelection::Auto);
    }
    let parts: Vec<&str> = text.split(',').collect();
    let bad = || Error::invalid_argument(format!("--aif takes `auto` or `i,j,k` (voxel indices), got {text:?}"));
    if parts.len() != 3 {
        return Err(bad());
    }
    let mut v = [0usize; 3];
    for (o, p) in v.iter_mut().zip(parts) {
        *o = p.trim().parse().map_err(|_| bad())?;
    }
    Ok(VesselSelection::Voxel(v))
}

/// The options of the perfusion models (their manifest's names) from the command's flags.
pub fn model_options(args: &PerfusionArgs) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut o = serde_json::Map::new();
    if let VesselSelection::Voxel([i, j, k]) = parse_voxel(&args.aif)? {
        o.insert("aif_i".into(), json!(i));
        o.insert("aif_j".into(), json!(j));
        o.insert("aif_k".into(), json!(k));
    }
    if let Some(age) = args.age {
        o.insert("age_years".into(), json!(age));
    }
    if let Some(nihss) = args.nihss {
        o.insert("nihss".into(), json!(nihss));
    }
    o.insert("bilateral_filter".into(), json!(!args.no_filter));
    if let Some(s) = args.filter_sigma_mm {
        o.insert("filter_sigma_mm".into(), json!(s));
    }
    if let Some(r) = args.filter_range_hu {
        o.insert("filter_range_hu".into(), json!(r));
    }
    o.insert("filter_adapt_to_noise".into(), json!(!args.fixed_filter));
    o.insert("motion_correction".into(), json!(!args.no_motion_correction));
    Ok(o)
}

/// Run the pipeline on `args.input` and write maps, masks, report and preview.
pub fn run(args: &PerfusionArgs, quiet: bool) -> Result<()> {
    let method = Method::from_name(&args.method)?;
    let model = if method == Method::Cnn {
        learned_model(args)?
    } else if args.model.is_some() {
        return Err(Error::invalid_argument("--model is for --method cnn"));
    } else {
        Perfusion::classical(method)
    };
    let options = model_options(args)?;
    // Checked now (ranges, a complete manual AIF), before any file is touched.
    model.pipeline_options(&options).map_err(|e| Error::invalid_argument(cli_option_message(e.message())))?;
    // Refused now, before minutes of work, if the folder cannot take this run's result; the
    // outputs go into a fresh folder beside it that replaces it once complete.
    let mut inputs: Vec<&Path> = vec![&args.input];
    inputs.extend(args.truth.as_deref());
    inputs.extend(args.model.as_deref());
    let staged = StagedDir::create(&args.out, args.overwrite, &inputs)?;
    let dicom_staged = args.dicom.stage(args.overwrite, &inputs)?;
    let (input, source) = crate::dicom_out::read_input(&args.input)?;
    let registration = crate::motion::ItkRigid;
    let registration: Option<&dyn imhost_core::perfusion::motion::RigidRegistration> =
        if args.no_motion_correction { None } else { Some(&registration) };
    let result = with_bar(quiet, |control| model.run_pipeline(&input.view(), &options, registration, control))?;
    write_outputs(&result, staged.path())?;
    if let Some(dir) = &args.truth {
        let truth = read_truth(dir)?;
        if truth.cbf.shape()[..3] != result.maps.cbf.shape()[..3] {
            return Err(Error::shape("the truth maps do not match the study's size").in_file(dir));
        }
        let a = imhost_core::perfusion::validation::compare(&result, &truth, &|_| true);
        let value = serde_json::to_value(&a).map_err(|e| Error::internal(e.to_string()))?;
        write_json(&staged.path().join("truth_comparison.json"), &value)?;
        println!(
            "against the truth: core Dice {}, hypoperfusion Dice {}, CBF r {:.3}, CBV r {:.3}",
            a.core_dice.map_or("n/a".into(), |d| format!("{d:.3}")),
            a.hypoperfusion_dice.map_or("n/a".into(), |d| format!("{d:.3}")),
            a.cbf.pearson_r,
            a.cbv.pearson_r
        );
    }
    let preview = staged.path().join("preview.png");
    let dicom_written = match dicom_staged {
        Some(dicom) => {
            let output = imhost_core::registry::builtin::model_output(result.clone())?;
            Some(crate::dicom_out::write(
                dicom,
                &output,
                imhost_core::registry::Model::manifest(&model),
                source,
                &input,
                Some(&preview),
            )?)
        }
        None => None,
    };
    staged.commit("perfusion")?;
    if let (Some(n), Some(dir)) = (dicom_written, &args.dicom.dicom_out) {
        println!("{n} DICOM instances in {}", dir.display());
    }
    let r = &result.report;
    match (&r.readout.volumes, r.qc_flags.is_empty()) {
        (Some(v), _) => println!(
            "core {:.1} ml, {} {:.1} ml, mismatch {:.1} ml (ratio {}) — {} (research use only)",
            v.core_ml,
            if r.method == Method::Cnn { "relative TTP>4.5s" } else { "Tmax>6s" },
            v.hypoperfusion_ml,
            v.mismatch_ml,
            v.mismatch_ratio.map_or("unbounded".into(), |x| format!("{x:.2}")),
            args.out.display()
        ),
        (None, _) => println!(
            "QC flags: {} — volumes withheld; maps in {} (research use only)",
            r.qc_flags.iter().map(|f| f.flag).collect::<Vec<_>>().join(", "),
            args.out.display()
        ),
    }
    Ok(())
}

/// Write the maps, masks, report and preview of `result` into `out`.
pub fn write_outputs(result: &PerfusionResult, out: &Path) -> Result<()> {
    let m = &result.maps;
    let maps: &[(&str, &imhost_core::Volume<f32>)] = if result.report.method == Method::Cnn {
        // The CNN estimates no Tmax or delay.
        &[("cbf", &m.cbf), ("cbv", &m.cbv), ("mtt", &m.mtt), ("ttp", &m.ttp)]
    } else {
        &[("cbf", &m.cbf), ("cbv", &m.cbv), ("mtt", &m.mtt), ("ttp", &m.ttp), ("tmax", &m.tmax), ("delay", &m.delay)]
    };
    let masks = [("core", &result.core), ("hypoperfusion", &result.hypoperfusion), ("brain", &result.brain)];
    // Each file is compressed on its own thread (gzip is one stream per file); a map is copied
    // for writing only while its thread writes it.
    let write = |(name, volume): (&str, AnyVolume)| write_volume(&volume, &out.join(format!("{name}.nii.gz")));
    let (volumes, rest) = rayon::join(
        || {
            let maps = maps.par_iter().map(|(name, map)| write((name, AnyVolume::from((*map).clone()))));
            let masks = masks.par_iter().map(|(name, mask)| write((name, AnyVolume::from((*mask).clone()))));
            maps.chain(masks).collect::<Result<Vec<()>>>()
        },
        || -> Result<()> {
            let report = serde_json::to_value(&result.report).map_err(|e| Error::internal(e.to_string()))?;
            write_json(&out.join("report.json"), &report)?;
            perfusion::preview::render(result, &out.join("preview.png"))
        },
    );
    volumes?;
    rest
}
