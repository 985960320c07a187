//! # imhost-registry
//!
//! The registry every host opens: the core's built-in models (MIP, the classical perfusion
//! methods), model packages (the perfusion CNN's folder, TorchScript packages) and native plugins
//! — all behind `imhost_core::registry::Model`.
//!
//! This crate does not link LibTorch, and neither does anything that uses only it (`libimhost.so`):
//! a learned model runs in the `imhost-model-worker` program (built by `imhost-models`, the crate
//! that links LibTorch), started at the model's first run, through the same isolation protocol
//! as plugins (`imhost_plugin_host::isolated`). A program that links LibTorch itself (the
//! `imhost` command) passes [`RegistryOptions::in_process`] to run them in its own process.
//!
//! - [`network`]: the `imhost-model/1` manifest of a network's folder (weights and checksum);
//! - [`torchscript`]: the `imhost-manifest/1` TorchScript package and its processing.

pub mod cac;
pub mod network;
pub mod segmenter;
pub mod torchscript;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use imhost_core::perfusion::motion::RigidRegistration;
use imhost_core::registry::builtin::{Perfusion, core_models};
use imhost_core::registry::{Manifest, Model, Registry, Source};
use imhost_core::{Error, Result};
use imhost_plugin_host::isolated::{IsolatedPlugin, PackageWorker};
use imhost_plugin_host::{Discovery, PluginConfig};
use serde_json::{Map, Value, json};

/// Opens a model package in this process (a runtime linked by the caller): the folder and the
/// registry's options.
pub type InProcessOpener = fn(&Path, &RegistryOptions) -> Result<Arc<dyn Model>>;

/// What to put in the registry.
#[derive(Clone, Default)]
pub struct RegistryOptions {
    /// Plugin files, package folders and folders to scan, besides the environment.
    pub paths: Vec<PathBuf>,
    /// Read `IMHOST_PLUGIN_PATH` and the per-user folder.
    pub standard_locations: bool,
    /// Run every native plugin in a worker process (else only those the user's config
    /// marks).
    pub isolate_all: bool,
    /// Device of learned models (`None`: `IMHOST_DEVICE`, then CUDA when present).
    pub device: Option<String>,
    /// Motion correction back end for the perfusion models (in this process).
    pub registration: Option<Arc<dyn RigidRegistration + Send>>,
    /// Run learned models in this process with this runtime; `None`: in `imhost-model-worker`.
    pub in_process: Option<InProcessOpener>,
}

/// Build the registry. Files and folders that fail are recorded in `problems()`; the rest load.
pub fn open(options: &RegistryOptions) -> Registry {
    let mut registry = Registry::new();
    for model in core_models(options.registration.clone()) {
        registry.add(model).expect("built-in models are valid and unique");
    }
    let discovery = Discovery {
        paths: options.paths.clone(),
        use_env: options.standard_locations,
        use_user_dir: options.standard_locations,
    };
    let config = PluginConfig::load_user().unwrap_or_else(|m| {
        registry.note_problem("plugin config", m);
        PluginConfig::default()
    });
    let packages = imhost_plugin_host::load_plugins(&mut registry, &discovery, &config, options.isolate_all);
    for dir in packages {
        let added = open_package(&dir, options)
            .and_then(|m| registry.add(m).map_err(|e| Error::format(format!("{}: {}", dir.display(), e.message()))));
        if let Err(e) = added {
            registry.note_problem(dir.display().to_string(), e.message().to_string());
        }
    }
    registry
}

/// What kind of model folder `dir` is, by its manifest's `format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageKind {
    /// `imhost-manifest/1` with a TorchScript runtime section.
    TorchScript,
    /// `imhost-model/1`: a perfusion map network (registered as `perfusion-cnn`).
    PerfusionNetwork,
    /// `imhost-model/1` with task `coronary-calcium`: the CAC ensemble (registered as
    /// `cac-agatston`).
    CacEnsemble,
    /// `imhost-model/1` with task `segmentation-2d`: a 2-D segmentation network (MultiResUNet),
    /// registered under its manifest's `model_id`.
    Segmenter2d,
}

/// Read `dir/manifest.json` (trusted) and tell its kind.
pub fn package_kind(dir: &Path) -> Result<PackageKind> {
    let (path, bytes) = network::read_trusted(dir, network::FILE_NAME, 1 << 20)?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::format(format!("{}: invalid manifest JSON: {e}", path.display())))?;
    match value["format"].as_str() {
        Some(imhost_core::registry::MANIFEST_FORMAT) => Ok(PackageKind::TorchScript),
        Some(network::FORMAT) if value["task"].as_str() == Some(cac::TASK) => Ok(PackageKind::CacEnsemble),
        Some(network::FORMAT) if value["task"].as_str() == Some(segmenter::TASK) => Ok(PackageKind::Segmenter2d),
        Some(network::FORMAT) => Ok(PackageKind::PerfusionNetwork),
        other => Err(Error::format(format!("{}: unknown manifest format {other:?}", path.display()))),
    }
}

/// The registry manifest of the model a package folder provides, read and checked here
/// (without LibTorch).
pub fn package_manifest(dir: &Path) -> Result<Manifest> {
    let mut manifest = match package_kind(dir)? {
        PackageKind::TorchScript => torchscript::read_package(dir)?.0,
        PackageKind::PerfusionNetwork => {
            let network = network::Manifest::read(dir)?;
            Perfusion::learned_manifest(&network.version, network_about(&network, dir))
        }
        PackageKind::CacEnsemble => {
            let m = cac::CacManifest::read(dir)?;
            imhost_core::cac::run::model_manifest(&m.version, cac_about(&m, dir))
        }
        PackageKind::Segmenter2d => {
            let m = segmenter::SegmenterManifest::read(dir)?;
            let about = json!({"id": m.id, "version": m.version, "folder": dir.display().to_string(),
                               "architecture": m.architecture, "threshold": m.threshold, "training": m.training});
            imhost_core::seg2d::model_manifest(
                &m.model_id,
                &m.version,
                &m.label.name,
                m.label.color,
                m.threshold,
                about,
            )?
        }
    };
    manifest.source =
        Some(Source { kind: "package".into(), path: Some(dir.display().to_string()), plugin: None, isolated: false });
    Ok(manifest)
}

/// What the `perfusion-cnn` manifest says about its network (`extra.network`).
pub fn network_about(network: &network::Manifest, dir: &Path) -> Value {
    json!({"id": network.id, "version": network.version, "folder": dir.display().to_string(),
           "training": network.training, "architecture": network.architecture.name})
}

/// What the `cac-agatston` manifest says about its ensemble (`extra.network`).
pub fn cac_about(m: &cac::CacManifest, dir: &Path) -> Value {
    json!({"id": m.id, "version": m.version, "folder": dir.display().to_string(), "members": m.members.len(),
           "architecture": m.architecture.name, "training": m.training})
}

/// A package folder as a model: in this process with [`RegistryOptions::in_process`], else
/// in `imhost-model-worker`, started at its first run.
pub fn open_package(dir: &Path, options: &RegistryOptions) -> Result<Arc<dyn Model>> {
    if let Some(open) = options.in_process {
        return open(dir, options);
    }
    open_in_worker(dir, options.device.clone(), None, false)
}

/// A package folder as a model run by `imhost-model-worker`. `precision` is `f32` (the default),
/// `f16` or `bf16`; with `start_now` the worker starts (and loads and verifies the weights)
/// before this returns.
pub fn open_in_worker(
    dir: &Path,
    device: Option<String>,
    precision: Option<&str>,
    start_now: bool,
) -> Result<Arc<dyn Model>> {
    let mut manifest = package_manifest(dir)?;
    if let Some(source) = manifest.source.as_mut() {
        source.isolated = true;
    }
    let mut worker_options = Map::new();
    if let Some(d) = device {
        worker_options.insert("device".into(), Value::String(d));
    }
    if let Some(p) = precision {
        worker_options.insert("precision".into(), Value::String(p.into()));
    }
    let worker = PackageWorker { options: worker_options, threads: 0, start_now };
    let mut models = IsolatedPlugin::package(dir, vec![manifest], &worker)?;
    Ok(models.remove(0))
}
