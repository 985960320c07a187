//! The registry every host uses: the core's built-in models (MIP, the classical perfusion
//! methods), the perfusion CNN when its model folder is found, TorchScript model packages and
//! native plugins — all behind `imhost_core::registry::Model`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use imhost_core::perfusion::model::ModelHandle;
use imhost_core::perfusion::motion::RigidRegistration;
use imhost_core::registry::builtin::{Perfusion, core_models};
use imhost_core::registry::{Manifest, Model, ModelOutput, Registry, Source};
use imhost_core::{AnyVolumeView, Error, Result, RunControl};
use imhost_plugin_host::{Discovery, PluginConfig};
use serde_json::{Map, Value, json};

use crate::torchscript::TorchScriptPackage;
use crate::{LoadOptions, PerfusionModel, Precision};

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
    /// Motion correction back end for the perfusion models.
    pub registration: Option<Arc<dyn RigidRegistration + Send>>,
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

/// A model folder: a TorchScript package (`imhost-manifest/1` + runtime) or a perfusion map
/// model folder (`imhost-model/1`, registered as `perfusion-cnn`).
fn open_package(dir: &Path, options: &RegistryOptions) -> Result<Arc<dyn Model>> {
    let (path, bytes) = crate::manifest::read_trusted(dir, "manifest.json", 1 << 20)?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::format(format!("{}: invalid manifest JSON: {e}", path.display())))?;
    match value["format"].as_str() {
        Some(imhost_core::registry::MANIFEST_FORMAT) => {
            Ok(Arc::new(TorchScriptPackage::open(dir, options.device.clone())?))
        }
        Some(crate::manifest::FORMAT) => Ok(Arc::new(LazyCnn::open(dir, options)?)),
        other => Err(Error::format(format!("{}: unknown manifest format {other:?}", path.display()))),
    }
}

/// `perfusion-cnn`: the perfusion pipeline with a map model folder, loaded at its first run.
struct LazyCnn {
    dir: PathBuf,
    manifest: Manifest,
    device: Option<String>,
    registration: Option<Arc<dyn RigidRegistration + Send>>,
    loaded: OnceLock<Perfusion>,
}

impl LazyCnn {
    fn open(dir: &Path, options: &RegistryOptions) -> Result<Self> {
        let network = crate::Manifest::read(dir)?;
        network.check()?;
        let about = json!({"id": network.id, "version": network.version, "folder": dir.display().to_string(),
                           "training": network.training, "architecture": network.architecture.name});
        let mut manifest = Perfusion::learned_manifest(&network.version, about);
        manifest.source = Some(Source {
            kind: "package".into(),
            path: Some(dir.display().to_string()),
            plugin: None,
            isolated: false,
        });
        Ok(LazyCnn {
            dir: dir.to_path_buf(),
            manifest,
            device: options.device.clone(),
            registration: options.registration.clone(),
            loaded: OnceLock::new(),
        })
    }
}

impl Model for LazyCnn {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn run(
        &self,
        inputs: &[AnyVolumeView<'_>],
        options: &Map<String, Value>,
        control: &RunControl<'_>,
    ) -> Result<ModelOutput> {
        if self.loaded.get().is_none() {
            let model = PerfusionModel::load(&self.dir, &LoadOptions::new(self.device.clone(), Precision::F32))?;
            let about = self.manifest.extra.get("network").cloned().unwrap_or(Value::Null);
            let mut p = Perfusion::learned(ModelHandle(Arc::new(model)), &self.manifest.version, about);
            if let Some(r) = &self.registration {
                p = p.with_registration(r.clone());
            }
            let _ = self.loaded.set(p);
        }
        self.loaded.get().expect("set above").run(inputs, options, control)
    }
}
