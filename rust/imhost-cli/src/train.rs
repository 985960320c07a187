//! `imhost train perfusion-set` (a training set of varied anatomical phantoms with their box-NLR
//! maps) and `imhost train perfusion-cnn` (the perfusion U-Net on any folder of such pairs,
//! including a user's own unlabelled studies run through `imhost perfusion --method nlr`).
//!
//! A data folder holds one sub-folder per case with `ctp.nii.gz` (or a DICOM folder `dicom/`)
//! and `nlr/{cbv,cbf,ttp}.nii.gz`: the targets are our own pipeline's box-NLR maps, never the
//! phantom truth (the paper's recipe, §2.2–2.3).

use std::path::{Path, PathBuf};

use imhost_core::io::{read_volume, write_volume};
use imhost_core::perfusion::model::{ModelInput, ModelInputSpec, ModelOutputScale};
use imhost_core::perfusion::{self, Method, PerfusionOptions};
use imhost_core::phantom::ctp::{self, Anatomy, PhantomKind, PhantomOptions, SplitMix64};
use imhost_core::{AnyVolume, Error, Result, RunControl};
use imhost_models::manifest::{self, Architecture, Inputs, Manifest, Output, Weights};
use imhost_models::train::{self, Optimizer, Sample, TrainOptions};
use imhost_models::unet::{Config, PerfusionUNet};
use serde_json::json;

/// Arguments of `imhost train perfusion-set`.
pub struct SetArgs {
    pub out: PathBuf,
    pub cases: usize,
    pub seed: u64,
    pub size: [usize; 3],
}

/// The phantom of case `seed`: varied anatomy, noise 2–8 HU, sampled every 1, 1.5 or 2 s over
/// 60 s (so the network sees the time grids it will be given).
pub fn varied_phantom(seed: u64, size: [usize; 3]) -> Result<ctp::CtpPhantom> {
    let mut rng = SplitMix64::new(seed ^ 0x6361_7365);
    let mut options = PhantomOptions::new(PhantomKind::Anatomical);
    options.seed = seed;
    options.noise_hu = 2.0 + 6.0 * rng.uniform();
    options.shape = Some(size);
    options.anatomy = Some(Anatomy::varied(seed));
    let interval = [1.0, 1.0, 1.5, 2.0][(rng.next_u64() % 4) as usize];
    options.frame_times = Some((0..).map(|n| n as f64 * interval).take_while(|&t| t <= 60.0).collect());
    ctp::generate(&options)
}

/// Write a phantom's study and truth masks/maps into `dir`.
pub fn write_phantom(phantom: &ctp::CtpPhantom, dir: &Path) -> Result<()> {
    let truth = dir.join("truth");
    std::fs::create_dir_all(&truth).map_err(|e| Error::from(e).in_file(&truth))?;
    write_volume(&AnyVolume::from(phantom.ctp.clone()), &dir.join("ctp.nii.gz"))?;
    let t = &phantom.truth;
    for (name, map) in [("cbf", &t.cbf), ("cbv", &t.cbv), ("tmax", &t.tmax)] {
        write_volume(&AnyVolume::from(map.clone()), &truth.join(format!("{name}.nii.gz")))?;
    }
    for (name, mask) in [("core", &t.core), ("hypoperfusion", &t.hypoperfusion), ("tissue", &t.tissue)] {
        write_volume(&AnyVolume::from(mask.clone()), &truth.join(format!("{name}.nii.gz")))?;
    }
    Ok(())
}

/// Build a training set.
pub fn build_set(args: &SetArgs, quiet: bool) -> Result<()> {
    if args.cases < 2 {
        return Err(Error::invalid_argument("--cases must be at least 2 (training and validation)"));
    }
    for c in 0..args.cases {
        let seed = args.seed + c as u64;
        let dir = args.out.join(format!("case-{seed:05}"));
        if dir.join("nlr/cbf.nii.gz").is_file() {
            continue; // already built: the command resumes
        }
        let phantom = varied_phantom(seed, args.size)?;
        write_phantom(&phantom, &dir)?;
        let mut options = PerfusionOptions::default();
        options.method = Method::Nlr;
        let result = perfusion::run(&AnyVolume::from(phantom.ctp).view(), &options, None, &RunControl::none())?;
        let nlr = dir.join("nlr");
        std::fs::create_dir_all(&nlr).map_err(|e| Error::from(e).in_file(&nlr))?;
        crate::perfusion::write_outputs(&result, &nlr)?;
        if !quiet {
            eprintln!("case {}/{}: {} ({})", c + 1, args.cases, dir.display(), flags_or_ok(&result.report));
        }
    }
    println!(
        "training set of {} cases in {} (targets: box-NLR maps; research use only)",
        args.cases,
        args.out.display()
    );
    Ok(())
}

fn flags_or_ok(report: &perfusion::Report) -> String {
    if report.qc_flags.is_empty() {
        "no QC flags".into()
    } else {
        report.qc_flags.iter().map(|f| f.flag).collect::<Vec<_>>().join(", ")
    }
}

/// The case folders of `data` (sorted) that hold a study and NLR targets.
pub fn case_dirs(data: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(data)
        .map_err(|e| Error::from(e).in_file(data))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && study_path(p).is_some() && p.join("nlr/cbf.nii.gz").is_file())
        .collect();
    dirs.sort();
    Ok(dirs)
}

fn study_path(dir: &Path) -> Option<PathBuf> {
    [dir.join("ctp.nii.gz"), dir.join("ctp.nii"), dir.join("dicom")].into_iter().find(|p| p.exists())
}

fn read_map(path: &Path) -> Result<Vec<f32>> {
    match read_volume(path)? {
        AnyVolume::F32(v) => Ok(v.data().t().iter().copied().collect::<Vec<f32>>()),
        _ => Err(Error::data_type("expected a float32 map").in_file(path)),
    }
}

/// The slices of one case as training samples (padded to the network's multiple).
pub fn case_samples(input: &ModelInput, targets: [&[f32]; 3], scale: &ModelOutputScale, case: usize) -> Vec<Sample> {
    let [nk, t, nj, ni] = input.shape;
    let m = PerfusionUNet::MULTIPLE;
    let (h, w) = (nj.next_multiple_of(m), ni.next_multiple_of(m));
    let mut out = Vec::new();
    for k in 0..nk {
        let brain = |j: usize, i: usize| input.brain[(k * nj + j) * ni + i];
        if (0..nj * ni).filter(|&p| brain(p / ni, p % ni)).count() < 50 {
            continue;
        }
        let mut s = Sample {
            input: vec![0.0; t * h * w],
            target: vec![0.0; 3 * h * w],
            mask: vec![0.0; h * w],
            size: [h, w],
            case,
        };
        for j in 0..nj {
            for i in 0..ni {
                for c in 0..t {
                    s.input[(c * h + j) * w + i] = input.data[((k * t + c) * nj + j) * ni + i];
                }
                if !brain(j, i) {
                    continue;
                }
                s.mask[j * w + i] = 1.0;
                let v = (k * nj + j) * ni + i;
                let unit = |x: f32| if x.is_finite() { x.clamp(0.0, 1.0) } else { 0.0 };
                s.target[j * w + i] = unit(targets[0][v] / scale.cbv as f32);
                s.target[(h + j) * w + i] = unit(targets[1][v] / scale.cbf as f32);
                s.target[(2 * h + j) * w + i] = unit(((f64::from(targets[2][v]) - input.start_s) / scale.ttp_s) as f32);
            }
        }
        out.push(s);
    }
    out
}

/// Arguments of `imhost train perfusion-cnn`.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// Folder of cases (case/ctp.nii.gz or case/dicom/, and case/nlr/{cbv,cbf,ttp}.nii.gz).
    #[arg(long)]
    pub data: PathBuf,
    /// Model folder to write (manifest.json, model.safetensors, checkpoints/).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    /// Slices per batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// sgd (the paper: momentum 0.9, rate halved on a validation plateau) or adam.
    #[arg(long, default_value = "sgd")]
    pub optimizer: String,
    /// Initial learning rate (default 0.05 for SGD, 0.002 for Adam).
    #[arg(long)]
    pub learning_rate: Option<f64>,
    /// Base width (64 in the paper).
    #[arg(long, default_value_t = 64)]
    pub width: usize,
    /// Batch normalisation after each convolution (not in the paper).
    #[arg(long)]
    pub batch_norm: bool,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Continue from the checkpoint in OUT/checkpoints.
    #[arg(long)]
    pub resume: bool,
    /// auto, cpu, cuda, cuda:N (default: IMHOST_DEVICE, else auto).
    #[arg(long)]
    pub device: Option<String>,
    /// The model's id in its manifest.
    #[arg(long, default_value = "perfusion-cnn")]
    pub id: String,
}

/// Train the perfusion U-Net and write a model folder.
pub fn train_cnn(args: &TrainArgs, quiet: bool) -> Result<()> {
    let dirs = case_dirs(&args.data)?;
    if dirs.len() < 2 {
        return Err(Error::invalid_argument(format!(
            "{} holds {} usable cases (sub-folders with ctp.nii.gz or dicom/ and nlr/cbf.nii.gz); at least 2 are needed",
            args.data.display(),
            dirs.len()
        )));
    }
    let optimizer = match args.optimizer.as_str() {
        "sgd" => Optimizer::Sgd,
        "adam" => Optimizer::Adam,
        other => return Err(Error::invalid_argument(format!("--optimizer {other:?}: sgd or adam"))),
    };
    let spec = ModelInputSpec::default();
    let scale = ModelOutputScale::for_input(&spec);
    let registration = crate::motion::ItkRigid;
    let mut samples = Vec::new();
    let mut spacing = None;
    for (c, dir) in dirs.iter().enumerate() {
        let study = study_path(dir).expect("filtered");
        let volume = read_volume(&study)?;
        spacing.get_or_insert(volume.geometry().spacing);
        let input = perfusion::model_input(
            &volume.view(),
            &PerfusionOptions::default(),
            &spec,
            Some(&registration),
            &RunControl::none(),
        )
        .map_err(|e| e.in_file(&study))?;
        let nlr = dir.join("nlr");
        let maps = [
            read_map(&nlr.join("cbv.nii.gz"))?,
            read_map(&nlr.join("cbf.nii.gz"))?,
            read_map(&nlr.join("ttp.nii.gz"))?,
        ];
        // NIfTI maps are x-fastest = the input's [k][j][i] order.
        if maps.iter().any(|m| m.len() != input.brain.len()) {
            return Err(Error::shape("the NLR maps do not match the study's size").in_file(&nlr));
        }
        samples.extend(case_samples(&input, [&maps[0], &maps[1], &maps[2]], &scale, c));
        if !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprint!("\rreading cases {}/{}", c + 1, dirs.len());
        }
    }
    if !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!();
    }
    let config =
        Config { time_points: spec.time_points, base_width: args.width, outputs: 3, batch_norm: args.batch_norm };
    let mut options = TrainOptions::default();
    options.epochs = args.epochs;
    options.batch_size = args.batch;
    options.optimizer = optimizer;
    options.learning_rate = args.learning_rate.unwrap_or(if optimizer == Optimizer::Sgd { 0.05 } else { 2e-3 });
    options.seed = args.seed;
    options.device = args.device.clone();
    let checkpoints = args.out.join("checkpoints");
    let bar = crate::progress::Bar::new(quiet);
    let callback = bar.callback();
    let trained = train::train(
        &samples,
        &config,
        &options,
        &checkpoints,
        args.resume,
        &mut |p| {
            callback(
                ((p.epoch - 1) as f64 + p.batch as f64 / p.batches as f64) / p.epochs as f64,
                &format!("epoch {}/{} loss {:.5}", p.epoch, p.epochs, p.loss),
            );
        },
        &mut |e| {
            tracing::info!(
                epoch = e.epoch,
                train = e.train_loss,
                validation = e.validation_loss,
                lr = e.learning_rate,
                "epoch"
            );
        },
    )?;
    drop(callback);
    drop(bar);
    let mut manifest = Manifest {
        format: manifest::FORMAT.into(),
        id: args.id.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        task: "perfusion-maps".into(),
        research_use_only: true,
        license: "Apache-2.0".into(),
        architecture: Architecture {
            name: "perfusion-unet".into(),
            paper: Some("Gava et al. 2023, Neural network-derived perfusion maps (doi:10.3389/fninf.2023.852105)".into()),
            config: Some(serde_json::to_value(config).map_err(|e| Error::internal(e.to_string()))?),
        },
        weights: Weights { file: String::new(), format: String::new(), sha256: "0".repeat(64) },
        inputs: Inputs {
            modality: "CT perfusion (4-D, HU)".into(),
            layout: "[slices, time_points, rows, columns] float32".into(),
            spec,
            spacing_mm: spacing,
            preprocessing: "imhost's classical pipeline up to deconvolution: motion correction, brain mask, bilateral filter, baseline subtraction (ΔHU), the brain and enhancing-vessel voxels (0 elsewhere), linear resampling onto the model's time grid from pre_arrival_s before the bolus arrival, clip_hu then / scale_hu".into(),
        },
        outputs: vec![
            Output { name: "cbv".into(), unit: "ml/100 g".into(), scale: scale.cbv },
            Output { name: "cbf".into(), unit: "ml/100 g/min".into(), scale: scale.cbf },
            Output { name: "ttp".into(), unit: "s after the input grid's start".into(), scale: scale.ttp_s },
        ],
        training: json!({
            "data": format!("{} cases from {}", dirs.len(), args.data.display()),
            "targets": "box-NLR maps (Bennink) from imhost's own pipeline, not ground truth",
            "cases": {"training": trained.cases.0, "validation": trained.cases.1},
            "slices": samples.len(),
            "recipe": options,
            "device": imhost_models::runtime::device_name(trained.device),
            "best_validation_mse": trained.best_validation_loss,
            "epochs": trained.log,
        }),
    };
    imhost_models::package::save_unet(&args.out, &trained.vs, &mut manifest)?;
    println!(
        "trained {} on {} slices of {} cases: best validation MSE {:.5} — {} (research use only)",
        args.id,
        samples.len(),
        dirs.len(),
        trained.best_validation_loss,
        args.out.display()
    );
    Ok(())
}
