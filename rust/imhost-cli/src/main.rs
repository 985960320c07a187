//! `imhost`: run imhost's operations on image files from the command line.
//!
//! Errors end the program with exit status 1 and one line on stderr
//! (`imhost: error: <what went wrong>`); usage errors with status 2. Progress goes to stderr
//! when it is a terminal; results and summaries go to stdout.

mod demo;
mod info;
mod mip;
mod progress;

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
    /// The built-in main job: generate a 4-D CT bolus volume with known content, run the
    /// temporal MIP on it, check the result against the known truth, and summarise.
    Demo {
        /// Folder for the outputs (created if missing).
        #[arg(long, default_value = "out/main-job")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.quiet);
    let result = match cli.command {
        Command::Mip { input, out, preview } => mip::run(&input, &out, preview.as_deref(), cli.quiet),
        Command::Info { input, json } => info::run(&input, json),
        Command::Demo { out } => demo::run(&out, cli.quiet),
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
fn init_logging(quiet: bool) {
    let default = if quiet { "error" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("IMHOST_LOG").unwrap_or_else(|_| default.into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}
