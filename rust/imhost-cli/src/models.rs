//! `imhost models list|info` and `imhost run`: every model — built in, the perfusion CNN,
//! TorchScript packages, native plugins — through the one registry (`IMHOST_PLUGIN_PATH`, the
//! per-user plugin folder, `--plugin` paths).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use imhost_core::io::output::{StagedDir, write_json};
use imhost_core::io::write_volume;
use imhost_core::registry::Registry;
use imhost_core::{AnyVolumeView, Error, Result};
use imhost_registry::{RegistryOptions, open};

use crate::progress::with_bar;

/// Where models come from (shared by `models` and `run`).
#[derive(Args, Debug, Clone)]
pub struct Sources {
    /// A plugin library, model package folder or folder of them (repeatable), besides
    /// IMHOST_PLUGIN_PATH and the per-user folder (~/.local/share/imhost/plugins).
    #[arg(long = "plugin", global = true)]
    pub plugins: Vec<PathBuf>,
    /// Run every native plugin in an isolated worker process.
    #[arg(long, global = true)]
    pub isolate: bool,
    /// Device of learned models: auto, cpu, cuda, cuda:N (default: IMHOST_DEVICE, else auto).
    #[arg(long, global = true)]
    pub device: Option<String>,
}

/// The registry of the command line: built-ins with ITK motion correction, the perfusion CNN
/// coronary-calcium and nuclei model folders when present, plugins and packages.
pub fn registry(sources: &Sources) -> Registry {
    let mut paths = sources.plugins.clone();
    let cnn = crate::perfusion::default_model_dir();
    if cnn.join("manifest.json").is_file() {
        paths.push(cnn);
    }
    for dir in [crate::cac::default_model_dir(), crate::nuclei::default_model_dir()] {
        if dir.join("manifest.json").is_file() {
            paths.push(dir);
        }
    }
    open(&RegistryOptions {
        paths,
        standard_locations: true,
        isolate_all: sources.isolate,
        device: sources.device.clone(),
        registration: Some(Arc::new(crate::motion::ItkRigid)),
        // With LibTorch linked (feature `learned`), learned models run in this process; without
        // it, in imhost-model-worker when one is installed.
        #[cfg(feature = "learned")]
        in_process: Some(imhost_models::packages::open_in_process),
        #[cfg(not(feature = "learned"))]
        in_process: None,
    })
}

fn warn_problems(registry: &Registry) {
    for p in registry.problems() {
        eprintln!("imhost: warning: not loaded: {}", p.message);
    }
}

/// `imhost models list [--json]`.
pub fn list(sources: &Sources, json: bool) -> Result<()> {
    let registry = registry(sources);
    if json {
        println!("{}", serde_json::to_string_pretty(&registry.list_json()).expect("JSON"));
        return Ok(());
    }
    warn_problems(&registry);
    println!("{:<28} {:<10} {:<9} NAME", "ID", "VERSION", "SOURCE");
    for model in registry.models() {
        let m = model.manifest();
        let source = m.source.as_ref().map_or("?", |s| s.kind.as_str());
        let isolated = m.source.as_ref().is_some_and(|s| s.isolated);
        println!(
            "{:<28} {:<10} {:<9} {}{}",
            m.id,
            m.version,
            source,
            m.name,
            if isolated { " [isolated]" } else { "" }
        );
    }
    println!("Research use only. `imhost models info ID` describes one model.");
    Ok(())
}

/// `imhost models info ID`: the manifest as JSON.
pub fn info(sources: &Sources, id: &str) -> Result<()> {
    let registry = registry(sources);
    let model = registry.get(id).ok_or_else(|| {
        Error::invalid_argument(format!(
            "no model '{id}' (see `imhost models list`; known: {})",
            registry.ids().join(", ")
        ))
    })?;
    println!("{}", model.manifest().to_json());
    Ok(())
}

/// Arguments of `imhost run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Model id (`imhost models list`).
    pub id: String,
    /// Input image(s) in the manifest's order (NIfTI file or DICOM folder; repeatable).
    #[arg(long = "input", required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output folder: one NIfTI per map / label map, result.json (scores, report, label names
    /// and colours).
    #[arg(long)]
    pub out: PathBuf,
    /// Model option as key=value (repeatable; `imhost models info ID` lists them).
    #[arg(long = "option", short = 'o')]
    pub options: Vec<String>,
    /// Replace the output folder if it holds an earlier imhost result.
    #[arg(long)]
    pub overwrite: bool,
    /// Time limit in seconds (default: the model's manifest, else one hour); an isolated
    /// plugin that runs longer is stopped.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
    /// Record the input paths in result.json (off by default: paths often hold patient names).
    #[arg(long)]
    pub record_input_paths: bool,
    #[command(flatten)]
    pub sources: Sources,
    #[command(flatten)]
    pub dicom: crate::dicom_out::DicomOutArgs,
}

/// `imhost run ID --input … --out DIR [--option k=v]`.
pub fn run(args: &RunArgs, quiet: bool) -> Result<()> {
    let registry = registry(&args.sources);
    if !quiet {
        warn_problems(&registry);
    }
    let model = registry.get(&args.id).ok_or_else(|| {
        let problems: Vec<&str> = registry.problems().iter().map(|p| p.message.as_str()).collect();
        Error::invalid_argument(format!(
            "no model '{}' (see `imhost models list`){}",
            args.id,
            if problems.is_empty() { String::new() } else { format!("; not loaded: {}", problems.join("; ")) }
        ))
    })?;
    let manifest = model.manifest().clone();
    let options = manifest.parse_options(&args.options)?;
    let limit = match args.timeout {
        Some(t) if t.is_finite() && t > 0.0 => Some(std::time::Duration::from_secs_f64(t)),
        Some(t) => return Err(Error::invalid_argument(format!("--timeout {t}: give a number of seconds above 0"))),
        None => None,
    };
    let inputs: Vec<&Path> = args.inputs.iter().map(PathBuf::as_path).collect();
    let staged = StagedDir::create(&args.out, args.overwrite, &inputs)?;
    let dicom_staged = args.dicom.stage(args.overwrite, &inputs)?;
    let mut volumes = Vec::with_capacity(args.inputs.len());
    let mut first_source = None;
    for (n, path) in args.inputs.iter().enumerate() {
        let (volume, source) = crate::dicom_out::read_input(path).map_err(|e| e.in_file(path))?;
        if n == 0 {
            first_source = source;
        }
        volumes.push(volume);
    }
    let views: Vec<AnyVolumeView<'_>> = volumes.iter().map(|v| v.view()).collect();
    let output = with_bar(quiet, |control| registry.run(&args.id, &views, &options, &control.with_time_limit(limit)))?;
    let mut files = serde_json::Map::new();
    for (name, volume) in &output.volumes {
        let path = staged.path().join(format!("{name}.nii.gz"));
        write_volume(volume, &path)?;
        files.insert(name.clone(), path.file_name().and_then(|f| f.to_str()).unwrap_or_default().into());
    }
    // What the manifest declares of each output present (units, UCUM, labels and their codes),
    // with the file of each volume.
    let summary = output.summary_json(&manifest);
    let mut outputs: Vec<serde_json::Value> = summary["outputs"].as_array().cloned().unwrap_or_default();
    for o in &mut outputs {
        if let Some(file) = o["name"].as_str().and_then(|n| files.get(n)) {
            o["file"] = file.clone();
        }
    }
    let result = serde_json::json!({
        "schema": "imhost-run-result/1",
        "research_use_only": true,
        "disclaimer": "Research use only. Not for diagnostic use.",
        "model": {"id": manifest.id, "version": manifest.version, "source": manifest.source},
        "inputs": describe_inputs(&args.inputs, &volumes, args.record_input_paths),
        "options": options,
        "outputs": outputs,
        "scores": summary["scores"],
        "report": output.report,
    });
    write_json(&staged.path().join("result.json"), &result)?;
    if let Some(png) = &output.preview_png {
        let path = staged.path().join("preview.png");
        imhost_core::io::output::write_atomically(&path, |w| {
            w.write_all(png).map_err(|e| Error::from(e).in_file(&path))
        })?;
    }
    let dicom_written = match dicom_staged {
        Some(dicom) => Some(crate::dicom_out::write(dicom, &output, &manifest, first_source, &volumes[0], None)?),
        None => None,
    };
    staged.commit("run")?;
    if !quiet {
        println!("{} ({}): research use only", manifest.name, manifest.id);
        for (name, value) in &output.scores {
            let unit = manifest.output(name).and_then(|o| o.unit.clone()).unwrap_or_default();
            println!("  {name:<24} {value:.4} {unit}");
        }
        println!("  outputs in {}", args.out.display());
        if let (Some(n), Some(dir)) = (dicom_written, &args.dicom.dicom_out) {
            println!("  {n} DICOM instances in {}", dir.display());
        }
    }
    Ok(())
}

/// What result.json says of the inputs: shape, type and voxel size — and their paths only when
/// asked, since file and folder names often hold patient names.
fn describe_inputs(paths: &[PathBuf], volumes: &[imhost_core::AnyVolume], record_paths: bool) -> serde_json::Value {
    paths
        .iter()
        .zip(volumes)
        .map(|(path, volume)| {
            let mut d = serde_json::json!({
                "shape": volume.shape(), "dtype": volume.dtype().name(), "spacing_mm": volume.geometry().spacing,
            });
            if record_paths {
                d["path"] = path.display().to_string().into();
            }
            d
        })
        .collect()
}
