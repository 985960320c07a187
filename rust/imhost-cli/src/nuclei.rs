//! Cell nuclei with MultiResUNet (multiresunet-report): `imhost nuclei IMAGE --out DIR`,
//! `imhost phantom nuclei` (the synthetic set that stands in for the 2018 Data Science Bowl),
//! `imhost train multiresunet` (the report's recipe) and `imhost validate-nuclei` (the report's
//! five figures on held-out images). Research use only; the default weights are phantom-trained.

use std::path::PathBuf;

use clap::Args;
use imhost_core::io::output::{StagedDir, write_json};
use imhost_core::phantom::nuclei::{self, NucleiOptions};
use imhost_core::{AnyVolume, Error, Geometry, Result, Volume};
use serde_json::json;

/// Arguments of `imhost phantom nuclei`.
#[derive(Args)]
pub struct NucleiPhantomArgs {
    /// Output folder: NNN.png (RGB), NNN_mask.png (0/255), NNN.nii.gz (grey, 8-bit, one slice),
    /// NNN_mask.nii.gz and truth.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Images.
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Width,height in pixels.
    #[arg(long, value_parser = parse_wh, default_value = "256,256")]
    pub size: [usize; 2],
    /// Seed of the first image (image n uses seed + n).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Replace the output folder if it holds an earlier imhost result.
    #[arg(long)]
    pub overwrite: bool,
}

fn parse_wh(text: &str) -> std::result::Result<[usize; 2], String> {
    let v: Vec<usize> = text
        .split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| e.to_string())?;
    <[usize; 2]>::try_from(v).map_err(|_| "expected WIDTH,HEIGHT".to_string())
}

fn slice_volume(data: Vec<u8>, w: usize, h: usize) -> Result<AnyVolume> {
    use ndarray::ShapeBuilder;
    let a = ndarray::Array3::from_shape_vec((w, h, 1).f(), data).map_err(|e| Error::internal(e.to_string()))?;
    Ok(AnyVolume::from(Volume::new_3d(a, Geometry::identity())?))
}

pub fn phantom(args: &NucleiPhantomArgs) -> Result<()> {
    if args.count == 0 || args.count > 10_000 {
        return Err(Error::invalid_argument("--count must be 1 to 10000"));
    }
    let staged = StagedDir::create(&args.out, args.overwrite, &[])?;
    let out = staged.path();
    let mut images = Vec::new();
    for n in 0..args.count {
        let seed = args.seed + n as u64;
        let img = nuclei::generate(&NucleiOptions::new(args.size, seed))?;
        let [w, h] = img.size;
        let name = format!("{n:03}");
        imhost_core::io::png::write_rgb(&out.join(format!("{name}.png")), w, h, &img.rgb)?;
        let mask255: Vec<u8> = img.mask.iter().map(|&m| m * 255).collect();
        imhost_core::io::png::write_grey(&out.join(format!("{name}_mask.png")), w, h, &mask255)?;
        let grey: Vec<u8> = img.grey().iter().map(|&g| (g * 255.0).round() as u8).collect();
        imhost_core::io::write_volume(&slice_volume(grey, w, h)?, &out.join(format!("{name}.nii.gz")))?;
        imhost_core::io::write_volume(
            &slice_volume(img.mask.clone(), w, h)?,
            &out.join(format!("{name}_mask.nii.gz")),
        )?;
        images.push(json!({"name": name, "seed": seed, "nuclei": img.count, "brightfield": img.brightfield,
                           "foreground_fraction": img.mask.iter().filter(|&&m| m == 1).count() as f64 / (w * h) as f64}));
    }
    write_json(
        &out.join("truth.json"),
        &json!({"research_use_only": true, "generator": "imhost phantom nuclei (synthetic stand-in for the 2018 Data Science Bowl nuclei images)",
                "size": args.size, "images": images}),
    )?;
    staged.commit("phantom nuclei")?;
    println!("{} nuclei image(s) written to {}", args.count, args.out.display());
    Ok(())
}

/// The default multiresunet-nuclei model folder: `IMHOST_NUCLEI_MODEL`, else `../share/imhost/
/// models/multiresunet-nuclei` beside the executable, else the repository's
/// `models/multiresunet-nuclei`.
pub fn default_model_dir() -> PathBuf {
    crate::cac::model_dir("IMHOST_NUCLEI_MODEL", "multiresunet-nuclei")
}

#[cfg(feature = "learned")]
pub use learned::*;

#[cfg(feature = "learned")]
mod learned {
    use super::*;
    use imhost_core::seg2d;
    use imhost_models::nuclei::{ImageFigures, NucleiTrainOptions, Segmenter, SegmenterManifest};
    use std::path::Path;

    /// Arguments of `imhost nuclei`.
    #[derive(Args)]
    pub struct NucleiArgs {
        /// The image: a PNG (grey or colour, 8-bit) or a NIfTI/DICOM image of one slice or a
        /// stack (segmented slice by slice).
        pub image: PathBuf,
        /// Output folder: mask and probability (PNG for a PNG input, else NIfTI), report.json,
        /// preview.png.
        #[arg(long)]
        pub out: PathBuf,
        /// The model folder (default: IMHOST_NUCLEI_MODEL, else the installed or repository
        /// models/multiresunet-nuclei).
        #[arg(long)]
        pub model: Option<PathBuf>,
        /// Probability at or above which a pixel is a nucleus (default: the model's, 0.5).
        #[arg(long)]
        pub threshold: Option<f64>,
        /// Device (cpu, cuda, cuda:N; default IMHOST_DEVICE, else CUDA when present).
        #[arg(long)]
        pub device: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        pub json: bool,
        /// Replace the output folder if it holds an earlier imhost result.
        #[arg(long)]
        pub overwrite: bool,
    }

    fn is_png(path: &Path) -> bool {
        path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"))
    }

    pub fn run(args: &NucleiArgs, quiet: bool) -> Result<()> {
        let dir = args.model.clone().unwrap_or_else(default_model_dir);
        let segmenter = Segmenter::load(&dir, args.device.as_deref())
            .map_err(|e| e.context(format!("the multiresunet-nuclei model in {}", dir.display())))?;
        let threshold = args.threshold.unwrap_or(segmenter.manifest().threshold);
        if !(threshold > 0.0 && threshold < 1.0) {
            return Err(Error::invalid_argument(format!("--threshold {threshold} must lie in (0, 1)")));
        }
        let staged = StagedDir::create(&args.out, args.overwrite, &[&args.image])?;
        let out = staged.path();
        let about = json!({"id": segmenter.manifest().id, "version": segmenter.manifest().version,
                           "folder": dir.display().to_string(), "device": imhost_models::runtime::device_name(segmenter.device()),
                           "training": "phantoms only (see the model's manifest.json)"});
        let label = segmenter.manifest().label.name.clone();
        let (output, png) = if is_png(&args.image) {
            let (w, h, rgb) = imhost_core::io::png::read_rgb(&args.image)?;
            let n = w * h;
            let planes: Vec<Vec<f32>> =
                (0..3).map(|c| (0..n).map(|p| f32::from(rgb[3 * p + c]) / 255.0).collect()).collect();
            let grey: Vec<f32> = (0..n).map(|p| (planes[0][p] + planes[1][p] + planes[2][p]) / 3.0).collect();
            let refs: Vec<&[f32]> =
                if segmenter.manifest().architecture.config.as_ref().and_then(|c| c["in_channels"].as_u64()) == Some(1)
                {
                    vec![&grey]
                } else {
                    planes.iter().map(|p| p.as_slice()).collect()
                };
            let p = crate::progress::with_bar(quiet, |_| segmenter.probability_of(&refs, w, h))?;
            let o = seg2d::outputs(
                &[grey],
                std::slice::from_ref(&p),
                [w, h, 1],
                Geometry::identity(),
                threshold,
                &label,
                &about,
            )?;
            (o, Some((w, h, p)))
        } else {
            let (image, _) = crate::dicom_out::read_input(&args.image).map_err(|e| e.context("the image"))?;
            let [ni, nj, nk, _] = image.shape();
            let slices = seg2d::slices_of(&image.view())?;
            let p = crate::progress::with_bar(quiet, |control| segmenter.probabilities(&slices, ni, nj, control))?;
            (seg2d::outputs(&slices, &p, [ni, nj, nk], *image.geometry(), threshold, &label, &about)?, None)
        };
        if let Some((w, h, p)) = png {
            let m: Vec<u8> = p.iter().map(|&v| if f64::from(v) >= threshold { 255 } else { 0 }).collect();
            imhost_core::io::png::write_grey(&out.join("mask.png"), w, h, &m)?;
            let p: Vec<u8> = p.iter().map(|&v| (v * 255.0).round().clamp(0.0, 255.0) as u8).collect();
            imhost_core::io::png::write_grey(&out.join("probability.png"), w, h, &p)?;
        } else {
            let mask = output.volume("mask").ok_or_else(|| Error::internal("no mask"))?;
            let prob = output.volume("probability").ok_or_else(|| Error::internal("no probability"))?;
            imhost_core::io::write_volume(mask, &out.join("mask.nii.gz"))?;
            imhost_core::io::write_volume(prob, &out.join("probability.nii.gz"))?;
        }
        let mut report = output.report.clone();
        report["image"] = json!(args.image.display().to_string());
        write_json(&out.join("report.json"), &report)?;
        if let Some(bytes) = &output.preview_png {
            imhost_core::io::output::write_atomically(&out.join("preview.png"), |w| {
                w.write_all(bytes).map_err(Error::from)
            })?;
        }
        staged.commit("nuclei")?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report).map_err(|e| Error::internal(e.to_string()))?);
        } else {
            println!(
                "{label} objects: {}, {:.1} % of the image (threshold {threshold}); research use only, phantom-trained weights",
                report["objects"],
                100.0 * report["foreground_fraction"].as_f64().unwrap_or(0.0)
            );
            println!("written to {}", args.out.display());
        }
        Ok(())
    }

    /// Arguments of `imhost train multiresunet`.
    #[derive(Args)]
    pub struct NucleiTrainArgs {
        /// Model folder to write (manifest.json + model.safetensors).
        #[arg(long)]
        pub out: PathBuf,
        /// Training images (`imhost phantom nuclei`, seeds from --seed).
        #[arg(long, default_value_t = 600)]
        pub train: usize,
        /// Validation images (the best epoch is chosen on them).
        #[arg(long, default_value_t = 80)]
        pub validation: usize,
        /// Image side in pixels (a multiple of 16; the report resizes to 256).
        #[arg(long, default_value_t = 96)]
        pub size: usize,
        /// Epochs (the report: 10; its rate converges in 10 epochs of 402 images only on a GPU's
        /// budget, so the default trains 24 at 1e-3).
        #[arg(long, default_value_t = 24)]
        pub epochs: usize,
        /// Batch (the report: 8).
        #[arg(long, default_value_t = 8)]
        pub batch: usize,
        /// Adam's learning rate (the report: 1e-4, which after 12 CPU epochs here still left a
        /// training BCE of 0.47 at epoch 5; 1e-3 reaches 0.09).
        #[arg(long, default_value_t = 1e-3)]
        pub lr: f64,
        /// Filters of the first encoder (the report: 32).
        #[arg(long, default_value_t = 8)]
        pub width: usize,
        /// Seed of the first training image.
        #[arg(long, default_value_t = 50_000)]
        pub seed: u64,
        /// Device.
        #[arg(long)]
        pub device: Option<String>,
        /// Replace the output folder if it holds an earlier imhost result.
        #[arg(long)]
        pub overwrite: bool,
    }

    pub fn train(args: &NucleiTrainArgs, quiet: bool) -> Result<()> {
        use imhost_models::multiresunet::Config;
        let config = Config { in_channels: 3, base_width: args.width };
        config.validate()?;
        let staged = StagedDir::create(&args.out, args.overwrite, &[])?;
        let started = std::time::Instant::now();
        let options = NucleiTrainOptions {
            train: args.train,
            validation: args.validation,
            size: args.size,
            epochs: args.epochs,
            batch: args.batch,
            learning_rate: args.lr,
            seed: args.seed,
            device: args.device.clone(),
            config,
        };
        let mut progress = |e: &imhost_models::nuclei::NucleiEpoch| {
            if !quiet {
                eprintln!(
                    "epoch {}/{}: train BCE {:.4}, validation {:.4}, lr {:.0e} ({:.0} s)",
                    e.epoch, args.epochs, e.train_loss, e.validation_loss, e.learning_rate, e.seconds
                );
            }
        };
        let (bytes, log, best) = imhost_models::nuclei::train(&options, &mut progress)?;
        let file = "model.safetensors".to_string();
        imhost_core::io::output::write_atomically(&staged.path().join(&file), |w| {
            w.write_all(&bytes).map_err(Error::from)
        })?;
        let best_epoch = log.iter().min_by(|a, b| a.validation_loss.total_cmp(&b.validation_loss)).map(|e| e.epoch);
        let manifest = SegmenterManifest {
            format: imhost_registry::network::FORMAT.into(),
            id: "multiresunet-nuclei-phantom".into(),
            version: "0.1.0".into(),
            task: imhost_models::nuclei::TASK.into(),
            model_id: "multiresunet-nuclei".into(),
            research_use_only: true,
            license: "Apache-2.0".into(),
            architecture: imhost_registry::network::Architecture {
                name: "multiresunet".into(),
                paper: Some("MultiResUNet internship report (V. K. Nadh, NITK), after Ibtehaz & Rahman 2019, arXiv:1902.04049".into()),
                config: Some(serde_json::to_value(config).map_err(|e| Error::internal(e.to_string()))?),
            },
            weights: imhost_registry::network::Weights {
                file,
                format: "safetensors".into(),
                sha256: imhost_registry::network::sha256_hex(&bytes),
            },
            label: imhost_registry::segmenter::Label { name: "nucleus".into(), color: [80, 200, 255] },
            threshold: 0.5,
            preprocessing: "RGB scaled by 1/255 (the report's x/255); a grey image in all three channels; edge-padded to multiples of 16; output: sigmoid, ≥ 0.5 is a nucleus".into(),
            training: json!({
                "data": format!("PHANTOMS ONLY — synthetic nuclei images of `imhost phantom nuclei` (fluorescence and brightfield looks, touching and overlapping nuclei, blur, noise, uneven light), {} training and {} validation images of {}² px (seeds {}..{}), every third shown in grey; never trained on real microscopy", args.train, args.validation, args.size, args.seed, args.seed + (args.train + args.validation) as u64 - 1),
                "recipe": format!("the report's (binary cross-entropy, Adam, batch 8, best validation loss kept, lr ×0.1 after 5 epochs without improvement) with Adam lr {} and {} epochs (the report: 1e-4, 10 epochs), batch {}; random flips and 90° turns", args.lr, args.epochs, args.batch),
                "width_note": format!("first-encoder filters {} (the report: 32; `--width 32` trains the report's size)", args.width),
                "command": format!("imhost train multiresunet --out DIR --train {} --validation {} --size {} --epochs {} --batch {} --lr {} --width {} --seed {}", args.train, args.validation, args.size, args.epochs, args.batch, args.lr, args.width, args.seed),
                "best_epoch": best_epoch, "best_validation_bce": best, "epochs": log,
                "seconds": started.elapsed().as_secs_f64(),
            }),
        };
        manifest.check()?;
        manifest.write(staged.path())?;
        staged.commit("train multiresunet")?;
        if !quiet {
            eprintln!("wrote {} ({:.0} s)", args.out.display(), started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// Arguments of `imhost validate-nuclei`.
    #[derive(Args)]
    pub struct NucleiValidateArgs {
        /// The model folder (default: as `imhost nuclei`).
        #[arg(long)]
        pub model: Option<PathBuf>,
        /// Held-out images.
        #[arg(long, default_value_t = 134)]
        pub cases: usize,
        /// Seed of the first held-out image (training uses 50000 onwards).
        #[arg(long, default_value_t = 70_000)]
        pub seed: u64,
        /// Image side in pixels.
        #[arg(long, default_value_t = 128)]
        pub size: usize,
        /// The Markdown file whose MultiResUNet section (from `<!-- multiresunet -->`) is replaced.
        #[arg(long, default_value = "docs/VALIDATION.md")]
        pub out: PathBuf,
        /// Device.
        #[arg(long)]
        pub device: Option<String>,
    }

    pub fn validate(args: &NucleiValidateArgs, quiet: bool) -> Result<()> {
        if args.cases == 0 {
            return Err(Error::invalid_argument("--cases must be at least 1"));
        }
        let dir = args.model.clone().unwrap_or_else(default_model_dir);
        let segmenter = Segmenter::load(&dir, args.device.as_deref())?;
        let threshold = segmenter.manifest().threshold;
        let (mut colour, mut grey_in, mut fluo, mut bright) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let started = std::time::Instant::now();
        for n in 0..args.cases {
            let img = nuclei::generate(&NucleiOptions::new([args.size, args.size], args.seed + n as u64))?;
            let (w, h) = (img.size[0], img.size[1]);
            let truth: Vec<bool> = img.mask.iter().map(|&m| m == 1).collect();
            let run = |grey: bool| -> Result<ImageFigures> {
                let planes = imhost_models::nuclei::planes_of(&img, grey);
                let refs: Vec<&[f32]> = planes.chunks(w * h).collect();
                let p = segmenter.probability_of(&refs, w, h)?;
                let pred: Vec<bool> = p.iter().map(|&v| f64::from(v) >= threshold).collect();
                ImageFigures::of(&pred, &truth, w, h)
            };
            let c = run(false)?;
            colour.push(c);
            grey_in.push(run(true)?);
            if img.brightfield {
                bright.push(c)
            } else {
                fluo.push(c)
            }
            if !quiet && (n + 1) % 20 == 0 {
                eprintln!("image {}/{}", n + 1, args.cases);
            }
        }
        let seconds = started.elapsed().as_secs_f64() / (2 * args.cases) as f64;
        let row = |name: &str, all: &[ImageFigures]| {
            let m = ImageFigures::mean(all);
            format!(
                "| {name} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |\n",
                all.len(),
                m.accuracy,
                m.f1,
                m.jaccard,
                m.recall,
                m.precision
            )
        };
        let m = segmenter.manifest();
        let mut doc = format!(
            "{MARKER}\n# Validation of MultiResUNet on synthetic nuclei (multiresunet-nuclei)\n\n\
Regenerate with `imhost validate-nuclei --cases {} --seed {} --size {}` (model `{}` {}, {}). **Synthetic images only**: \
{} held-out images of `imhost phantom nuclei` (seeds {}–{}, {}² px; fluorescence and brightfield looks, touching and \
overlapping nuclei), never seen in training (seeds from 50000). Figures as the report computes them: per image, \
sklearn's accuracy, F1, Jaccard, recall and precision of the flattened masks at probability ≥ {threshold} (an undefined \
ratio counts 0), then the mean over images; computed by the project's scoring module.\n\n\
| input | images | accuracy | F1 | Jaccard | recall | precision |\n|---|---|---|---|---|---|---|\n",
            args.cases,
            args.seed,
            args.size,
            m.id,
            m.version,
            m.architecture.config.as_ref().map(|c| c.to_string()).unwrap_or_default(),
            args.cases,
            args.seed,
            args.seed + args.cases as u64 - 1,
            args.size
        );
        doc += &row("colour (RGB, as trained)", &colour);
        doc += &row("grey in all three channels (the registry's one-channel input)", &grey_in);
        doc += &row("colour, fluorescence look only", &fluo);
        doc += &row("colour, brightfield look only", &bright);
        doc += "| *the report, 2018 DSB test split (134 images, real data; not comparable)* | 134 | 0.9524 | 0.8197 | 0.7106 | 0.8907 | 0.7836 |\n";
        doc += &format!(
            "\nInference: {:.3} s per {}² image on average ({} CPU threads). The report's numbers are on real microscopy; \
ours are on our own generator, so they say the network and its training work, not how it does on real cells.\n",
            seconds,
            args.size,
            imhost_models::runtime::init().cpu_threads
        );
        crate::validate::replace_section(&args.out, MARKER, &doc)?;
        let mean = ImageFigures::mean(&colour);
        write_json(
            &args.out.with_file_name("validation-nuclei.json"),
            &json!({"cases": args.cases, "seed": args.seed, "size": args.size, "colour": mean,
                    "grey": ImageFigures::mean(&grey_in), "fluorescence": ImageFigures::mean(&fluo),
                    "brightfield": ImageFigures::mean(&bright)}),
        )?;
        println!(
            "MultiResUNet on {} held-out synthetic nuclei images: F1 {:.3}, Jaccard {:.3}, accuracy {:.3}; written to {}",
            args.cases,
            mean.f1,
            mean.jaccard,
            mean.accuracy,
            args.out.display()
        );
        Ok(())
    }
}

/// Where the MultiResUNet section of docs/VALIDATION.md starts.
pub const MARKER: &str = "<!-- multiresunet -->";
