//! # imhost-plugin-host
//!
//! Loads model plugins — shared libraries that speak `include/imhost_plugin.h` — and makes each
//! of their models an [`imhost_core::registry::Model`]:
//! - [`discover`]: where plugins are looked for, config;
//! - [`trust`]: which files may be loaded (owner and mode of the file and of every folder above
//!   it), checked on the descriptors that are then used;
//! - [`native`]: opening a library, the version check, reading the descriptor with the
//!   plugin's struct sizes, one run through the host callback table;
//! - [`PluginModel`]: a model run in this process (inputs are the caller's memory, no copy);
//! - [`isolated`]: a model run in a child worker process (`imhost-plugin-worker`), so that a
//!   plugin that crashes or hangs fails the job, not the host; [`channel`] carries its messages
//!   and its pixels (anonymous memory passed as descriptors).

pub mod channel;
pub mod discover;
pub mod isolated;
pub mod native;
#[doc(hidden)]
pub mod testing;
pub mod trust;
pub mod worker;

use std::path::Path;
use std::sync::{Arc, Mutex};

use imhost_core::registry::{Manifest, Model, ModelOutput, Registry};
use imhost_core::{
    AnyVolume, AnyVolumeView, DType, Error, FrameTimes, Geometry, Result, RunControl, Volume, with_view,
};
use ndarray::{Array4, ShapeBuilder};
use serde_json::{Map, Value};

pub use discover::{Candidate, Discovery, PluginConfig};
pub use native::LoadedPlugin;

/// The spatial grid of an input: shape, geometry, frame times.
#[derive(Debug, Clone)]
pub struct Grid {
    /// `[ni, nj, nk, nt]`.
    pub shape: [usize; 4],
    /// Geometry.
    pub geometry: Geometry,
    /// Frame times of a 4-D input.
    pub times: Option<FrameTimes>,
}

impl Grid {
    /// The grid of a view.
    pub fn of(view: &AnyVolumeView<'_>) -> Result<Grid> {
        let times = with_view!(view, v => match (v.frame_times(), v.time_source()) {
            (Some(t), Some(s)) => Some(FrameTimes::new(t.to_vec(), s)?),
            _ => None,
        });
        Ok(Grid { shape: view.shape(), geometry: *view.geometry(), times })
    }

    /// The frame times of an output with `frames` frames on this grid.
    pub fn times_for(&self, frames: usize) -> Option<FrameTimes> {
        if frames > 1 { self.times.clone() } else { None }
    }
}

/// A zeroed volume of `dtype`, contiguous with i fastest; an error (not an abort) when its size
/// overflows or exceeds what this process may allocate.
pub fn zeroed_volume(
    dtype: DType,
    shape: [usize; 4],
    geometry: &Geometry,
    times: Option<FrameTimes>,
) -> Result<AnyVolume> {
    imhost_core::memory::check(
        imhost_core::memory::bytes_of(&shape, dtype.size_of()),
        &format!("a {dtype} volume of {shape:?} voxels"),
    )?;
    fn typed<T: imhost_core::Voxel>(shape: [usize; 4], g: &Geometry, times: Option<FrameTimes>) -> Result<Volume<T>> {
        Volume::from_parts(Array4::<T>::default(shape.f()), *g, times)
    }
    Ok(match dtype {
        DType::U8 => AnyVolume::U8(typed(shape, geometry, times)?),
        DType::I16 => AnyVolume::I16(typed(shape, geometry, times)?),
        DType::U16 => AnyVolume::U16(typed(shape, geometry, times)?),
        DType::I32 => AnyVolume::I32(typed(shape, geometry, times)?),
        DType::F32 => AnyVolume::F32(typed(shape, geometry, times)?),
        DType::F64 => AnyVolume::F64(typed(shape, geometry, times)?),
    })
}

/// The first byte of a volume's pixels.
pub fn volume_ptr(volume: &mut AnyVolume) -> *mut u8 {
    imhost_core::with_volume!(volume, v => v.data_mut().as_mut_ptr().cast::<u8>())
}

/// Outputs of an in-process run: volumes the host owns.
struct HostOutputs<'g> {
    grids: &'g [Grid],
    volumes: Vec<(String, AnyVolume)>,
}

impl native::OutputSink for HostOutputs<'_> {
    fn allocate(&mut self, name: &str, dtype: DType, shape: [usize; 4], geometry: &Geometry) -> Result<*mut u8> {
        let times = self.grids.iter().find(|g| g.geometry == *geometry).and_then(|g| g.times_for(shape[3]));
        let mut volume = zeroed_volume(dtype, shape, geometry, times)?;
        let ptr = volume_ptr(&mut volume);
        // Moving the volume moves its handle, not its heap buffer: `ptr` stays valid.
        self.volumes.push((name.to_string(), volume));
        Ok(ptr)
    }
}

/// Progress and cancellation of an in-process run.
struct ControlSink<'a, 'c>(&'a RunControl<'c>);

impl native::RunSink for ControlSink<'_, '_> {
    fn progress(&self, fraction: f64, stage: &str) -> bool {
        self.0.report(stage, fraction).is_ok()
    }
    fn cancelled(&self) -> bool {
        self.0.check().is_err()
    }
}

/// Describe the caller's views to the plugin (no copy).
pub fn tensors_of(manifest: &Manifest, inputs: &[AnyVolumeView<'_>]) -> Vec<native::TensorIn> {
    manifest
        .inputs
        .iter()
        .zip(inputs)
        .map(|(spec, view)| {
            with_view!(view, v => {
                let data = v.data();
                let strides: [isize; 4] = data.strides().try_into().expect("4-D");
                native::TensorIn::new(
                    &spec.name,
                    view.dtype(),
                    data.as_ptr().cast::<u8>(),
                    view.shape(),
                    strides,
                    view.geometry(),
                    v.frame_times(),
                )
            })
        })
        .collect()
}

/// A plugin model run in this process.
pub struct PluginModel {
    plugin: Arc<LoadedPlugin>,
    index: usize,
    manifest: Manifest,
    instance: Mutex<Option<native::Instance>>,
}

impl PluginModel {
    /// Model `index` of `plugin`.
    pub fn new(plugin: Arc<LoadedPlugin>, index: usize) -> Self {
        let manifest = plugin.models[index].manifest.clone();
        PluginModel { plugin, index, manifest, instance: Mutex::new(None) }
    }
}

impl Model for PluginModel {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn run(
        &self,
        inputs: &[AnyVolumeView<'_>],
        options: &Map<String, Value>,
        control: &RunControl<'_>,
    ) -> Result<ModelOutput> {
        let mut guard = self.instance.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(native::create(&self.plugin, self.index)?);
        }
        let instance = guard.as_mut().expect("created above");
        let grids: Vec<Grid> = inputs.iter().map(Grid::of).collect::<Result<_>>()?;
        let tensors = tensors_of(&self.manifest, inputs);
        let mut outputs = HostOutputs { grids: &grids, volumes: Vec::new() };
        let extras = native::run(
            &self.plugin,
            self.index,
            instance,
            &tensors,
            grids.iter().map(|g| (g.shape, g.geometry)).collect(),
            options,
            &mut outputs,
            &ControlSink(control),
        )?;
        Ok(ModelOutput { volumes: outputs.volumes, scores: extras.scores, report: extras.report, preview_png: None })
    }
}

/// Load every plugin library `discovery` finds into `registry`, in process or isolated as
/// `config` says (or `isolate_all`). Model packages are returned for the caller (the model
/// runtime) to load. A file that fails is recorded as a problem; the others still load.
pub fn load_plugins(
    registry: &mut Registry,
    discovery: &Discovery,
    config: &PluginConfig,
    isolate_all: bool,
) -> Vec<std::path::PathBuf> {
    let (candidates, problems) = discovery.find();
    for (path, message) in problems {
        registry.note_problem(path.display().to_string(), message);
    }
    let mut packages = Vec::new();
    for candidate in candidates {
        match candidate {
            Candidate::Package(dir) => packages.push(dir),
            Candidate::Library(path) => {
                let isolate = isolate_all || config.isolate(&path);
                if let Err(e) = load_one(registry, &path, isolate) {
                    registry.note_problem(path.display().to_string(), e.message().to_string());
                }
            }
        }
    }
    packages
}

/// Load one plugin library into `registry`; all of its models or none.
pub fn load_one(registry: &mut Registry, path: &Path, isolate: bool) -> Result<()> {
    let models: Vec<Arc<dyn Model>> = if isolate {
        isolated::IsolatedPlugin::start(path)?
    } else {
        let plugin = Arc::new(native::load(path)?);
        (0..plugin.models.len()).map(|i| Arc::new(PluginModel::new(plugin.clone(), i)) as Arc<dyn Model>).collect()
    };
    let mut trial = registry.clone();
    for model in &models {
        trial.add(model.clone()).map_err(|e| Error::format(format!("plugin {}: {}", path.display(), e.message())))?;
    }
    *registry = trial;
    Ok(())
}
