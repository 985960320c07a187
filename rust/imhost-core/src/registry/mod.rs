//! The model registry: one list of every model a host can run — built-in operations, the
//! perfusion methods, learned models and third-party plugins — each described by a
//! [`Manifest`] and run through one call, [`Registry::run`], which checks the inputs against the
//! manifest before the model sees them and the outputs after.
//!
//! The core knows only the [`Model`] trait; the crates that own a kind of model (LibTorch
//! models, native plugins) implement it, and `imhost_models::registry` assembles the list.

pub mod builtin;
pub mod manifest;

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

pub use manifest::{
    DeviceSpec, InputSpec, Label, Limits, MANIFEST_FORMAT, Manifest, MeasuredOn, OptionSpec, OptionType, OutputKind,
    OutputSpec, Source,
};

use crate::{AnyVolume, AnyVolumeView, DType, Error, FrameTimes, Result, RunControl, Volume, VolumeView, Voxel};

/// What a model produced: volumes (maps, label maps) and scores, by output name, plus a free
/// report (QC flags, details) that hosts show or store as is.
#[derive(Debug, Default)]
pub struct ModelOutput {
    /// Maps and label maps, in the order the model produced them.
    pub volumes: Vec<(String, AnyVolume)>,
    /// Scalar scores (finite).
    pub scores: Vec<(String, f64)>,
    /// Anything else worth keeping (JSON object; `null` when nothing).
    pub report: Value,
    /// A PNG summary a clinician glances at (the perfusion models draw one: maps, outlines,
    /// curves, volumes, QC flags); DICOM results store it as a Secondary Capture.
    pub preview_png: Option<Vec<u8>>,
}

impl ModelOutput {
    /// The volume called `name`.
    pub fn volume(&self, name: &str) -> Option<&AnyVolume> {
        self.volumes.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The score called `name`.
    pub fn score(&self, name: &str) -> Option<f64> {
        self.scores.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// The result as one JSON object ([`RESULT_SCHEMA`]): `{"schema", "research_use_only",
    /// "model": {id, version}, "scores": {name: value}, "volumes": [{name, dtype, shape}],
    /// "outputs": [...], "report"}` where `outputs` describes every output present with what the
    /// manifest declares of it — kind, unit and its UCUM code, the coded quantity, label names,
    /// colours and SNOMED CT category/type — so a host can display and export it (DICOM SEG,
    /// Parametric Maps) without knowing the model.
    pub fn summary_json(&self, manifest: &Manifest) -> Value {
        let scores: Map<String, Value> = self.scores.iter().map(|(n, v)| (n.clone(), Value::from(*v))).collect();
        let volumes: Vec<Value> = self
            .volumes
            .iter()
            .map(|(n, v)| serde_json::json!({"name": n, "dtype": v.dtype().name(), "shape": v.shape()}))
            .collect();
        let present = |name: &str| self.volume(name).is_some() || self.score(name).is_some();
        let outputs: Vec<Value> = manifest
            .outputs
            .iter()
            .filter(|o| present(&o.name))
            .map(|o| {
                let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
                if let Some(m) = v.as_object_mut() {
                    for internal in ["grid", "frames", "optional"] {
                        m.remove(internal);
                    }
                }
                v
            })
            .collect();
        serde_json::json!({
            "schema": RESULT_SCHEMA,
            "research_use_only": manifest.research_use_only,
            "model": {"id": manifest.id, "version": manifest.version},
            "scores": scores,
            "volumes": volumes,
            "outputs": outputs,
            "report": self.report,
        })
    }
}

/// The version of the layout of [`ModelOutput::summary_json`] (`imh_model_result_json`).
pub const RESULT_SCHEMA: &str = "imhost-model-result/1";

/// A model the registry can run.
pub trait Model: Send + Sync {
    /// Its manifest (validated when registered).
    fn manifest(&self) -> &Manifest;

    /// Run on `inputs` (as many as the manifest declares, already checked against it) with
    /// `options` (resolved: every declared option present and valid).
    fn run(
        &self,
        inputs: &[AnyVolumeView<'_>],
        options: &Map<String, Value>,
        control: &RunControl<'_>,
    ) -> Result<ModelOutput>;
}

/// A file or folder that did not become a model, and why. Loading goes on with the others.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LoadProblem {
    /// The plugin file or model folder.
    pub path: String,
    /// What was wrong, in one line.
    pub message: String,
}

/// The `tracing` target of the "not loaded" warnings of [`Registry::note_problem`].
pub const LOAD_PROBLEM_TARGET: &str = "imhost::load_problem";

/// The `tracing` target of the manifest warnings (unknown keys) of [`Registry::add`].
pub const MANIFEST_WARNING_TARGET: &str = "imhost::manifest_warning";

/// Every model a host can run.
#[derive(Default, Clone)]
pub struct Registry {
    models: Vec<Arc<dyn Model>>,
    problems: Vec<LoadProblem>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("models", &self.ids()).field("problems", &self.problems).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Register a model: its manifest must be valid and its id new.
    pub fn add(&mut self, model: Arc<dyn Model>) -> Result<()> {
        let manifest = model.manifest();
        manifest.validate()?;
        if let Some(other) = self.get(&manifest.id) {
            let from =
                |m: &Manifest| m.source.as_ref().and_then(|s| s.path.clone()).unwrap_or_else(|| "built in".to_string());
            return Err(Error::invalid_argument(format!(
                "duplicate model id '{}': already registered from {}",
                manifest.id,
                from(other.manifest())
            )));
        }
        for warning in &manifest.warnings {
            tracing::warn!(target: MANIFEST_WARNING_TARGET, "manifest of '{}': {warning}", manifest.id);
        }
        self.models.push(model);
        Ok(())
    }

    /// Record a file or folder that did not load.
    pub fn note_problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let (path, message) = (path.into(), message.into());
        // Under its own target, so that a host which shows `problems()` itself (the command
        // line) can keep the log from saying it a second time.
        tracing::warn!(target: LOAD_PROBLEM_TARGET, path = %path, "not loaded: {message}");
        self.problems.push(LoadProblem { path, message });
    }

    /// What did not load.
    pub fn problems(&self) -> &[LoadProblem] {
        &self.problems
    }

    /// The models, in registration order.
    pub fn models(&self) -> impl Iterator<Item = &Arc<dyn Model>> {
        self.models.iter()
    }

    /// Number of models.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The ids, in registration order.
    pub fn ids(&self) -> Vec<&str> {
        self.models.iter().map(|m| m.manifest().id.as_str()).collect()
    }

    /// The model with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<dyn Model>> {
        self.models.iter().find(|m| m.manifest().id == id)
    }

    /// `{"models": [manifest, …], "problems": [{path, message}, …]}`.
    pub fn list_json(&self) -> Value {
        let models: Vec<Value> =
            self.models.iter().map(|m| serde_json::to_value(m.manifest()).expect("manifest serialises")).collect();
        serde_json::json!({"models": models, "problems": self.problems})
    }

    /// Run model `id`: check the inputs against its manifest (count, dimensionality, frames,
    /// frame times; pixel types converted to the first declared one when needed), resolve the
    /// options, run, then check every output against the manifest (declared, on the input's
    /// grid, label values declared, scores finite).
    pub fn run(
        &self,
        id: &str,
        inputs: &[AnyVolumeView<'_>],
        options: &Map<String, Value>,
        control: &RunControl<'_>,
    ) -> Result<ModelOutput> {
        let model = self
            .get(id)
            .ok_or_else(|| Error::invalid_argument(format!("no model '{id}' (known: {})", self.ids().join(", "))))?;
        run_checked(model.as_ref(), inputs, options, control)
    }
}

/// [`Registry::run`] for one model.
pub fn run_checked(
    model: &dyn Model,
    inputs: &[AnyVolumeView<'_>],
    options: &Map<String, Value>,
    control: &RunControl<'_>,
) -> Result<ModelOutput> {
    let manifest = model.manifest();
    check_inputs(manifest, inputs)?;
    let converted: Vec<Option<AnyVolume>> = manifest
        .inputs
        .iter()
        .zip(inputs)
        .map(|(spec, input)| {
            let accepted: Vec<DType> = spec.dtypes.iter().filter_map(|d| DType::from_name(d)).collect();
            match accepted.first() {
                Some(&first) if !accepted.contains(&input.dtype()) => Some(convert(input, first)).transpose(),
                _ => Ok(None),
            }
        })
        .collect::<Result<_>>()?;
    let views: Vec<AnyVolumeView<'_>> = converted
        .iter()
        .zip(inputs)
        .map(|(c, input)| -> AnyVolumeView<'_> {
            match c {
                Some(owned) => owned.view(),
                None => input.reborrow(),
            }
        })
        .collect();
    let options = manifest.resolve_options(options)?;
    let output = model.run(&views, &options, control)?;
    check_outputs(manifest, &views, &output)?;
    Ok(output)
}

/// Inputs against the manifest.
pub fn check_inputs(manifest: &Manifest, inputs: &[AnyVolumeView<'_>]) -> Result<()> {
    if inputs.len() != manifest.inputs.len() {
        return Err(Error::invalid_argument(format!(
            "model '{}' takes {} input(s) ({}); {} given",
            manifest.id,
            manifest.inputs.len(),
            manifest.inputs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", "),
            inputs.len()
        )));
    }
    for (spec, input) in manifest.inputs.iter().zip(inputs) {
        let frames = input.shape()[3];
        if spec.dims == 3 && input.is_4d() {
            return Err(Error::shape(format!(
                "input '{}' of '{}' must be 3-D; this one is 4-D with {frames} frame{}{}",
                spec.name,
                manifest.id,
                if frames == 1 { "" } else { "s" },
                if frames == 1 { " (a one-frame series: save it as a 3-D volume)" } else { "" }
            )));
        }
        if spec.dims == 4 {
            if !input.is_4d() {
                return Err(Error::shape(format!(
                    "input '{}' of '{}' must be 4-D (a time series); this one is 3-D",
                    spec.name, manifest.id
                )));
            }
            if let Some(min) = spec.min_frames
                && frames < min
            {
                return Err(Error::shape(format!(
                    "input '{}' of '{}' needs at least {min} frames; it has {frames}",
                    spec.name, manifest.id
                )));
            }
        }
    }
    Ok(())
}

/// Outputs against the manifest.
pub fn check_outputs(manifest: &Manifest, inputs: &[AnyVolumeView<'_>], output: &ModelOutput) -> Result<()> {
    let bad = |m: String| Err(Error::model(format!("model '{}' {m}", manifest.id)));
    for (n, (name, volume)) in output.volumes.iter().enumerate() {
        if output.volumes[..n].iter().any(|(other, _)| other == name) {
            return bad(format!("returned output '{name}' twice"));
        }
        let Some(spec) = manifest.output(name).filter(|s| s.kind != OutputKind::Score) else {
            return bad(format!("returned a volume '{name}' its manifest does not declare"));
        };
        let grid = &inputs[spec.grid];
        let [ni, nj, nk, nt] = grid.shape();
        let expected = [ni, nj, nk, if spec.frames == "input" { nt } else { 1 }];
        if volume.shape() != expected {
            return bad(format!(
                "returned '{name}' with shape {:?}; its manifest says the grid of input {} = {expected:?}",
                volume.shape(),
                spec.grid
            ));
        }
        if spec.kind == OutputKind::Labelmap {
            let AnyVolume::U8(labels) = volume else {
                return bad(format!("returned label map '{name}' as {}, not u8", volume.dtype()));
            };
            if let Some(v) = labels.data().iter().find(|&&v| v != 0 && !spec.labels.iter().any(|l| l.value == v)) {
                return bad(format!("wrote label {v} into '{name}', which its manifest does not declare"));
            }
        }
    }
    for (name, value) in &output.scores {
        if manifest.output(name).is_none_or(|s| s.kind != OutputKind::Score) {
            return bad(format!("returned a score '{name}' its manifest does not declare"));
        }
        if !value.is_finite() {
            return bad(format!(
                "returned a non-finite score '{name}' (a result that cannot be trusted needs a QC flag)"
            ));
        }
    }
    for spec in manifest.outputs.iter().filter(|s| !s.optional) {
        let present = match spec.kind {
            OutputKind::Score => output.score(&spec.name).is_some(),
            _ => output.volume(&spec.name).is_some(),
        };
        if !present {
            return bad(format!("did not produce its output '{}'", spec.name));
        }
    }
    Ok(())
}

/// A copy of `input` converted to `to` (rounded and saturated for integer types).
pub fn convert(input: &AnyVolumeView<'_>, to: DType) -> Result<AnyVolume> {
    fn typed<S: Voxel, D: Voxel>(v: &VolumeView<'_, S>) -> Result<Volume<D>> {
        let data = v.data().mapv(|x| D::from_f64_saturating(x.to_f64()));
        let times = match (v.frame_times(), v.time_source()) {
            (Some(t), Some(source)) => Some(FrameTimes::new(t.to_vec(), source)?),
            _ => None,
        };
        Volume::from_parts(data, *v.geometry(), times)
    }
    crate::memory::check(
        crate::memory::bytes_of(&input.shape(), to.size_of()),
        &format!("converting an input to {to}"),
    )?;
    crate::with_view!(input, v => Ok(match to {
        DType::U8 => AnyVolume::U8(typed(v)?),
        DType::I16 => AnyVolume::I16(typed(v)?),
        DType::U16 => AnyVolume::U16(typed(v)?),
        DType::I32 => AnyVolume::I32(typed(v)?),
        DType::F32 => AnyVolume::F32(typed(v)?),
        DType::F64 => AnyVolume::F64(typed(v)?),
    }))
}
