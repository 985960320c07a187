//! `imhost`: run imhost's operations on image files from the command line.
//!
//! Errors end the program with exit status 1 and one line on stderr
//! (`imhost: error: <what went wrong>`); usage errors with status 2. Progress goes to stderr
//! when it is a terminal; results and summaries go to stdout.

mod cac;
mod curves;
mod demo;
mod dicom_out;
mod info;
mod mip;
mod models;
mod motion;
mod nuclei;
mod perfusion;
mod plugin;
mod progress;
mod score;
#[cfg(feature = "learned")]
mod train;
mod validate;
#[cfg(feature = "learned")]
mod validate_cnn;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// imhost — imaging AI in the tools radiologists use. Research use only.
#[derive(Parser)]
#[command(name = "imhost", version, about, long_about = None)]
struct Cli {
    /// Print nothing but errors on stderr (no progress bar).
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Temporal maximum intensity projection of a 4-D image (max over time, per voxel).
    Mip {
        /// Input 4-D image (.nii or .nii.gz; frame times from pixdim[4] or a .json sidecar).
        input: PathBuf,
        /// Output 3-D image (.nii or .nii.gz).
        #[arg(long)]
        out: PathBuf,
        /// Also write a PNG of the middle slice.
        #[arg(long)]
        preview: Option<PathBuf>,
    },
    /// Describe an image: size, pixel type, geometry (LPS and Slicer's IJK-to-RAS), frame times.
    Info {
        /// Image file.
        input: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Generate test data.
    #[command(subcommand)]
    Phantom(PhantomCommand),
    /// Perfusion maps (CBF, CBV, MTT, TTP, Tmax), core and hypoperfusion masks, report.json and
    /// preview.png from a 4-D CT perfusion study in HU (NIfTI; frame times from pixdim[4] or a
    /// `.json` sidecar with "FrameTimes"). Research use only.
    Perfusion(perfusion::PerfusionArgs),
    /// CBF, CBV, MTT, Tmax and delay of tissue curves against one arterial input (CSV or JSON),
    /// with the image pipeline's deconvolution and none of its image steps.
    PerfusionCurves(curves::CurveArgs),
    /// Regenerate the validation table of the perfusion methods against the phantoms' truth.
    Validate {
        /// Where to write the Markdown table.
        #[arg(long, default_value = "docs/VALIDATION.md")]
        out: PathBuf,
        /// Only the 5 HU noise level.
        #[arg(long)]
        quick: bool,
    },
    /// Validate the perfusion CNN on held-out phantoms against box NLR and the truth (the
    /// paper's protocol, and its half-dose claim); writes the CNN section of VALIDATION.md.
    #[cfg(feature = "learned")]
    ValidateCnn {
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, default_value_t = 12)]
        cases: usize,
        /// Seed of the first held-out case (training sets start at 1000).
        #[arg(long, default_value_t = 90000)]
        seed: u64,
        #[arg(long, value_parser = parse_size, default_value = "128,128,8")]
        size: [usize; 3],
        #[arg(long, default_value = "docs/VALIDATION.md")]
        out: PathBuf,
        /// Inference precision (f32; bf16/f16 to measure their effect, on the CPU too).
        #[arg(long, default_value = "f32")]
        precision: String,
    },
    /// Validate the coronary-calcium ensemble on held-out phantoms (the paper's Table 1: single
    /// model vs ensemble); writes the CAC section of docs/VALIDATION.md.
    #[cfg(feature = "learned")]
    ValidateCac(cac::CacValidateArgs),
    /// Validate MultiResUNet on held-out synthetic nuclei images (the report's accuracy, F1,
    /// Jaccard, recall, precision); writes the MultiResUNet section of docs/VALIDATION.md.
    #[cfg(feature = "learned")]
    ValidateNuclei(nuclei::NucleiValidateArgs),
    /// Build training sets and train models.
    #[cfg(feature = "learned")]
    #[command(subcommand)]
    Train(TrainCommand),
    /// List and describe the models: built in, the perfusion CNN, model packages and plugins
    /// (IMHOST_PLUGIN_PATH, ~/.local/share/imhost/plugins, --plugin).
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Run a model on input images: `imhost run ID --input IMG --out DIR [--option k=v]`.
    Run(models::RunArgs),
    /// For plugin authors: write a skeleton (`new`), check a plugin as a host loads it
    /// (`check`), compare its outputs with expected ones (`test`).
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Score predictions against the truth: segmentations (`seg`: Dice, HD95, NSD, …) and
    /// tables of paired values (`table`: r, ICC, κ, AUC, C-index, …). Conventions:
    /// docs/SCORING.md. Research use only.
    #[command(subcommand)]
    Score(score::ScoreCommand),
    /// Coronary calcium scores of a non-contrast cardiac CT (NIfTI in HU or a DICOM folder):
    /// Agatston, volume and mass, category A–E, per lesion and artery; mask.nii.gz, report.json
    /// and preview.png in --out, with QC flags. Conventions: docs/CAC.md. Research use only.
    Cac(cac::CacArgs),
    /// Cell nuclei of a 2-D image (PNG, or a NIfTI/DICOM image of one slice or a stack) with
    /// MultiResUNet: mask, probability, report.json, preview.png. Phantom-trained default
    /// weights; research use only.
    #[cfg(feature = "learned")]
    Nuclei(nuclei::NucleiArgs),
    /// The earlier self-check: generate a 4-D CT bolus volume with known content, run the
    /// temporal MIP on it, check the result against the known truth, and summarise.
    Demo {
        /// Folder for the outputs (created if missing).
        #[arg(long, default_value = "out/demo")]
        out: PathBuf,
    },
}

#[cfg(feature = "learned")]
#[derive(Subcommand)]
enum TrainCommand {
    /// Build a training set: varied anatomical phantoms (anatomy, lesion size and side, noise,
    /// delay, AIF shape, frame interval) with their box-NLR maps as targets.
    PerfusionSet {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 60)]
        cases: usize,
        /// Seed of the first case (case n uses seed + n).
        #[arg(long, default_value_t = 1000)]
        seed: u64,
        #[arg(long, value_parser = parse_size, default_value = "128,128,8")]
        size: [usize; 3],
    },
    /// Train the perfusion U-Net (perfusion-cnn-gava2023) on a folder of cases
    /// (case/ctp.nii.gz + case/nlr/{cbv,cbf,ttp}.nii.gz) and write a model folder.
    PerfusionCnn(train::TrainArgs),
    /// Train the coronary-calcium ensemble (cac-agatston-gogin2021: five 3D U-Nets, Adam, Dice
    /// loss, best epoch on validation) on `imhost phantom cac` exams; writes a model folder.
    Cac(cac::CacTrainArgs),
    /// Train MultiResUNet (multiresunet-report: BCE, Adam 1e-4, batch 8, best validation epoch)
    /// on synthetic nuclei images; writes a model folder.
    Multiresunet(nuclei::NucleiTrainArgs),
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// One line per model (id, version, source, name); --json for the manifests.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sources: models::Sources,
    },
    /// A model's manifest: inputs, options, outputs, device needs, licence.
    Info {
        id: String,
        #[command(flatten)]
        sources: models::Sources,
    },
}

#[derive(Subcommand)]
enum PhantomCommand {
    /// A digital CT-perfusion phantom with ground truth: ctp.nii.gz and truth/.
    Ctp(perfusion::PhantomArgs),
    /// A non-contrast cardiac CT with coronary calcium of known extent, bone and valve
    /// calcification distractors: ct.nii.gz, truth/labels.nii.gz, truth.json.
    Cac(cac::CacPhantomArgs),
    /// Synthetic cell-nuclei images (fluorescence and brightfield, touching nuclei) with their
    /// masks: PNG and one-slice NIfTI, truth.json.
    Nuclei(nuclei::NucleiPhantomArgs),
}

fn parse_size(text: &str) -> Result<[usize; 3], String> {
    let v: Vec<usize> =
        text.split(',').map(|p| p.trim().parse::<usize>()).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    <[usize; 3]>::try_from(v).map_err(|_| "expected NI,NJ,NK".to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `imhost plugin check` prints the manifest warnings itself, as its own lines.
    init_logging(cli.quiet, matches!(cli.command, Command::Plugin(plugin::PluginCommand::Check(_))));
    let result = match cli.command {
        Command::Mip { input, out, preview } => mip::run(&input, &out, preview.as_deref(), cli.quiet),
        Command::Info { input, json } => info::run(&input, json),
        Command::Phantom(PhantomCommand::Ctp(args)) => perfusion::phantom(&args),
        Command::Perfusion(args) => perfusion::run(&args, cli.quiet),
        Command::PerfusionCurves(args) => curves::run(&args),
        Command::Validate { out, quick } => validate::run(&out, quick),
        Command::Demo { out } => demo::run(&out, cli.quiet),
        #[cfg(feature = "learned")]
        Command::ValidateCnn { model, cases, seed, size, out, precision } => {
            validate_cnn::run(&validate_cnn::Args { model, cases, seed, size, out, precision }, cli.quiet)
        }
        #[cfg(feature = "learned")]
        Command::Train(TrainCommand::PerfusionSet { out, cases, seed, size }) => {
            train::build_set(&train::SetArgs { out, cases, seed, size }, cli.quiet)
        }
        #[cfg(feature = "learned")]
        Command::Train(TrainCommand::PerfusionCnn(args)) => train::train_cnn(&args, cli.quiet),
        #[cfg(feature = "learned")]
        Command::Train(TrainCommand::Cac(args)) => cac::train(&args, cli.quiet),
        Command::Models(ModelsCommand::List { json, sources }) => models::list(&sources, json),
        Command::Models(ModelsCommand::Info { id, sources }) => models::info(&sources, &id),
        Command::Run(args) => models::run(&args, cli.quiet),
        Command::Plugin(command) => plugin::run(&command),
        Command::Score(command) => score::run(&command),
        Command::Cac(args) => cac::run(&args, cli.quiet),
        #[cfg(feature = "learned")]
        Command::ValidateCac(args) => cac::validate(&args, cli.quiet),
        Command::Phantom(PhantomCommand::Cac(args)) => cac::phantom(&args),
        Command::Phantom(PhantomCommand::Nuclei(args)) => nuclei::phantom(&args),
        #[cfg(feature = "learned")]
        Command::Nuclei(args) => nuclei::run(&args, cli.quiet),
        #[cfg(feature = "learned")]
        Command::Train(TrainCommand::Multiresunet(args)) => nuclei::train(&args, cli.quiet),
        #[cfg(feature = "learned")]
        Command::ValidateNuclei(args) => nuclei::validate(&args, cli.quiet),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("imhost: error: {}", err.to_string().replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

/// Warnings (and with IMHOST_LOG=info|debug|trace, more) from the library go to stderr.
fn init_logging(quiet: bool, manifest_warnings_shown: bool) {
    use std::io::IsTerminal;
    let default = if quiet { "error" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("IMHOST_LOG").unwrap_or_else(|_| default.into());
    // The command prints what did not load itself (`imhost: warning: not loaded: …`), once.
    let mut filter = filter;
    let mut quiet_targets = vec![imhost_core::registry::LOAD_PROBLEM_TARGET];
    if manifest_warnings_shown {
        quiet_targets.push(imhost_core::registry::MANIFEST_WARNING_TARGET);
    }
    for target in quiet_targets {
        if let Ok(directive) = format!("{target}=off").parse() {
            filter = filter.add_directive(directive);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}
