//! Model packages on this runtime: in the calling process (the `imhost` command passes
//! [`open_in_process`] as `imhost_registry::RegistryOptions::in_process`) or in the
//! `imhost-model-worker` program ([`open_for_worker`]), which is how every host that loads only
//! `libimhost.so` runs them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use imhost_core::perfusion::model::ModelHandle;
use imhost_core::perfusion::motion::RigidRegistration;
use imhost_core::registry::builtin::Perfusion;
use imhost_core::registry::{Manifest, Model, ModelOutput};
use imhost_core::{AnyVolumeView, Result, RunControl};
use imhost_registry::{PackageKind, RegistryOptions, network_about, package_kind, package_manifest};
use serde_json::{Map, Value};

use crate::torchscript::TorchScriptPackage;
use crate::{LoadOptions, PerfusionModel, Precision};

/// A package folder as a model of this process (weights loaded at the first run).
pub fn open_in_process(dir: &Path, options: &RegistryOptions) -> Result<Arc<dyn Model>> {
    match package_kind(dir)? {
        PackageKind::TorchScript => Ok(Arc::new(TorchScriptPackage::open(dir, options.device.clone())?)),
        PackageKind::PerfusionNetwork => Ok(Arc::new(LazyCnn {
            dir: dir.to_path_buf(),
            manifest: package_manifest(dir)?,
            device: options.device.clone(),
            registration: options.registration.clone(),
            loaded: OnceLock::new(),
        })),
        PackageKind::CacEnsemble => Ok(Arc::new(CacModel::new(dir, options.device.clone())?)),
        PackageKind::Segmenter2d => Ok(Arc::new(SegmenterModel::new(dir, options.device.clone())?)),
    }
}

/// The models `imhost-model-worker` serves for the package in `dir` (the folder the host
/// checked, as `/proc/self/fd/4/`): `options` holds the host's `device` and `precision`. The
/// perfusion network is loaded and verified now, so that a bad checksum or a missing device
/// reaches the host when the worker starts.
pub fn open_for_worker(dir: &Path, options: &Map<String, Value>) -> Result<Vec<Arc<dyn Model>>> {
    let device = options.get("device").and_then(Value::as_str).map(str::to_string);
    let precision = Precision::from_name(options.get("precision").and_then(Value::as_str).unwrap_or("f32"))?;
    let model: Arc<dyn Model> = match package_kind(dir)? {
        PackageKind::TorchScript => Arc::new(TorchScriptPackage::open(dir, device)?),
        PackageKind::PerfusionNetwork => {
            let network = PerfusionModel::load(dir, &LoadOptions::new(device, precision))?;
            let about = network_about(network.manifest(), dir);
            let version = network.manifest().version.clone();
            Arc::new(Perfusion::learned(ModelHandle(Arc::new(network)), &version, about))
        }
        PackageKind::CacEnsemble => {
            let model = CacModel::new(dir, device)?;
            model.ensemble()?;
            Arc::new(model)
        }
        PackageKind::Segmenter2d => {
            let model = SegmenterModel::new(dir, device)?;
            model.segmenter()?;
            Arc::new(model)
        }
    };
    Ok(vec![model])
}

/// `perfusion-cnn` in this process: the perfusion pipeline with a map model folder, loaded at
/// its first run.
struct LazyCnn {
    dir: PathBuf,
    manifest: Manifest,
    device: Option<String>,
    registration: Option<Arc<dyn RigidRegistration + Send>>,
    loaded: OnceLock<Perfusion>,
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

/// `cac-agatston`: the coronary-calcium ensemble of a model folder (loaded and verified at its
/// first run), scoring through `imhost_core::cac::run` as the command line does.
pub struct CacModel {
    dir: PathBuf,
    manifest: Manifest,
    device: Option<String>,
    loaded: OnceLock<crate::cac::CacEnsemble>,
}

impl CacModel {
    /// The model of `dir` (its manifest read and checked now, the weights at the first run).
    pub fn new(dir: &Path, device: Option<String>) -> Result<Self> {
        Ok(CacModel { dir: dir.to_path_buf(), manifest: package_manifest(dir)?, device, loaded: OnceLock::new() })
    }

    /// The ensemble, loaded (sha256 verified) on first use.
    pub fn ensemble(&self) -> Result<&crate::cac::CacEnsemble> {
        if self.loaded.get().is_none() {
            let e = crate::cac::CacEnsemble::load(&self.dir, self.device.as_deref())?;
            let _ = self.loaded.set(e);
        }
        Ok(self.loaded.get().expect("set above"))
    }
}

impl Model for CacModel {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn run(
        &self,
        inputs: &[AnyVolumeView<'_>],
        options: &Map<String, Value>,
        control: &RunControl<'_>,
    ) -> Result<ModelOutput> {
        use imhost_core::cac::run;
        let options = self.manifest.resolve_options(options)?;
        let agatston = run::options_from_json(&options)?;
        let ct = &inputs[0];
        let [ni, nj, nk, _] = ct.shape();
        let dims = [ni, nj, nk];
        let geometry = *ct.geometry();
        let hu = run::hu_of(ct)?;
        let ensemble = self.ensemble()?;
        let about = self.manifest.extra.get("network").cloned().unwrap_or(Value::Null);
        let mut segment = || -> Result<run::Segmented> {
            let seg = ensemble.segment(&hu, dims, geometry.spacing, control)?;
            let region = |m: &[bool]| m.iter().map(|&b| u32::from(b)).collect::<Vec<u32>>();
            Ok(run::Segmented {
                region: region(&seg.mask),
                members: seg.members.iter().map(|m| region(m)).collect(),
                about: about.clone(),
            })
        };
        let result = run::score_ct(&hu, dims, &geometry, &mut segment, &agatston)?;
        result.into_model_output(&hu, dims, geometry)
    }
}

/// A 2-D segmentation network folder (`multiresunet-nuclei`): loaded and verified at its first
/// run, applied slice by slice through `imhost_core::seg2d`.
pub struct SegmenterModel {
    dir: PathBuf,
    manifest: Manifest,
    device: Option<String>,
    loaded: OnceLock<crate::nuclei::Segmenter>,
}

impl SegmenterModel {
    /// The model of `dir` (its manifest read and checked now, the weights at the first run).
    pub fn new(dir: &Path, device: Option<String>) -> Result<Self> {
        Ok(SegmenterModel { dir: dir.to_path_buf(), manifest: package_manifest(dir)?, device, loaded: OnceLock::new() })
    }

    /// The network, loaded (sha256 verified) on first use.
    pub fn segmenter(&self) -> Result<&crate::nuclei::Segmenter> {
        if self.loaded.get().is_none() {
            let s = crate::nuclei::Segmenter::load(&self.dir, self.device.as_deref())?;
            let _ = self.loaded.set(s);
        }
        Ok(self.loaded.get().expect("set above"))
    }
}

impl Model for SegmenterModel {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn run(
        &self,
        inputs: &[AnyVolumeView<'_>],
        options: &Map<String, Value>,
        control: &RunControl<'_>,
    ) -> Result<ModelOutput> {
        use imhost_core::seg2d;
        let options = self.manifest.resolve_options(options)?;
        let threshold = options.get("threshold").and_then(Value::as_f64).unwrap_or(0.5);
        let image = &inputs[0];
        let [ni, nj, nk, _] = image.shape();
        let slices = seg2d::slices_of(image)?;
        let segmenter = self.segmenter()?;
        let probability = segmenter.probabilities(&slices, ni, nj, control)?;
        let about = self.manifest.extra.get("network").cloned().unwrap_or(Value::Null);
        let label = &segmenter.manifest().label.name;
        seg2d::outputs(&slices, &probability, [ni, nj, nk], *image.geometry(), threshold, label, &about)
    }
}
