//! The built-in models of the core: the temporal MIP and the perfusion pipeline (one model per
//! method; the learned method is registered by `imhost_models` with its loaded network).

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{Manifest, Model, ModelOutput, Source};
use crate::perfusion::aif::VesselSelection;
use crate::perfusion::model::ModelHandle;
use crate::perfusion::motion::RigidRegistration;
use crate::perfusion::{self, Method, PerfusionOptions};
use crate::{AnyVolume, AnyVolumeView, Error, Result, RunControl, Volume, with_view};

fn builtin() -> Option<Source> {
    Some(Source { kind: "builtin".into(), path: None, plugin: None, isolated: false })
}

fn parse(value: Value) -> Manifest {
    let mut manifest: Manifest = serde_json::from_value(value).expect("built-in manifests are valid");
    manifest.source = builtin();
    manifest
}

/// The temporal maximum intensity projection (`mip`).
#[derive(Debug)]
pub struct Mip {
    manifest: Manifest,
}

impl Default for Mip {
    fn default() -> Self {
        Mip {
            manifest: parse(json!({
                "format": super::MANIFEST_FORMAT, "id": "mip", "name": "Temporal MIP",
                "version": env!("CARGO_PKG_VERSION"), "licence": "Apache-2.0",
                "description": "Maximum over time of every voxel of a 4-D series (a vessel overview of a CT perfusion study). NaN frames are ignored.",
                "inputs": [{"name": "series", "modality": "any", "dims": 4}],
                "outputs": [{"name": "mip", "kind": "map", "unit": "as input",
                             "description": "per-voxel maximum over the frames, in the input's pixel type"}],
                "device": {"requires": "cpu"}
            })),
        }
    }
}

impl Model for Mip {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn run(
        &self,
        inputs: &[AnyVolumeView<'_>],
        _: &Map<String, Value>,
        control: &RunControl<'_>,
    ) -> Result<ModelOutput> {
        let mip = with_view!(&inputs[0], v => AnyVolume::from(crate::ops::temporal_mip(v, control)?));
        Ok(ModelOutput { volumes: vec![("mip".into(), mip)], ..ModelOutput::default() })
    }
}

/// Label values of the perfusion `lesions` map.
pub const LABEL_CORE: u8 = 1;
/// Hypoperfused but not core: the penumbra.
pub const LABEL_PENUMBRA: u8 = 2;

/// One perfusion method as a model (`perfusion-osvd`, …, `perfusion-cnn`).
pub struct Perfusion {
    manifest: Manifest,
    method: Method,
    network: Option<ModelHandle>,
    registration: Option<Arc<dyn RigidRegistration + Send>>,
}

impl std::fmt::Debug for Perfusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Perfusion").field("method", &self.method).finish()
    }
}

impl Perfusion {
    /// A classical method (`method` is not [`Method::Cnn`]).
    pub fn classical(method: Method) -> Self {
        assert!(method != Method::Cnn, "the CNN needs its network: Perfusion::learned");
        Perfusion { manifest: perfusion_manifest(method, None), method, network: None, registration: None }
    }

    /// The learned method with its loaded network; `about` describes the network (its id,
    /// version and training, from its own manifest) and is kept in the model's manifest.
    pub fn learned(network: ModelHandle, version: &str, about: Value) -> Self {
        Perfusion {
            manifest: Perfusion::learned_manifest(version, about),
            method: Method::Cnn,
            network: Some(network),
            registration: None,
        }
    }

    /// The manifest of the learned method (`perfusion-cnn`) before its network is loaded.
    pub fn learned_manifest(version: &str, about: Value) -> Manifest {
        let mut manifest = perfusion_manifest(Method::Cnn, Some(version));
        manifest.extra.insert("network".into(), about);
        manifest
    }

    /// The pipeline's options from this model's options (a JSON object, checked against the
    /// manifest and completed with its defaults): the one mapping that the registry, the
    /// command's `perfusion` and `imh_perfusion_run` share.
    pub fn pipeline_options(&self, options: &Map<String, Value>) -> Result<PerfusionOptions> {
        let options = self.manifest.resolve_options(options)?;
        let flag = |k: &str| options.get(k).and_then(Value::as_bool).unwrap_or(true);
        let number = |k: &str| options.get(k).and_then(Value::as_f64);
        let known = |k: &str| number(k).filter(|v| *v >= 0.0);
        let mut pipeline = PerfusionOptions { method: self.method, model: self.network.clone(), ..Default::default() };
        if flag("bilateral_filter") {
            let b = pipeline.bilateral.get_or_insert_with(Default::default);
            b.sigma_spatial_mm = number("filter_sigma_mm").unwrap_or(b.sigma_spatial_mm);
            b.sigma_range_hu = number("filter_range_hu").unwrap_or(b.sigma_range_hu);
            b.adapt_to_noise = flag("filter_adapt_to_noise");
        } else {
            pipeline.bilateral = None;
        }
        pipeline.motion.correct = flag("motion_correction");
        let aif: Vec<i64> = ["aif_i", "aif_j", "aif_k"].iter().map(|k| options[*k].as_i64().unwrap_or(-1)).collect();
        match aif.iter().filter(|&&x| x >= 0).count() {
            0 => {}
            3 => pipeline.aif = VesselSelection::Voxel([aif[0] as usize, aif[1] as usize, aif[2] as usize]),
            _ => {
                return Err(Error::invalid_argument(
                    "a manual AIF needs all of aif_i, aif_j and aif_k (or none, for the automatic AIF)",
                ));
            }
        }
        pipeline.patient = perfusion::readout::Patient { age: known("age_years"), nihss: known("nihss") };
        Ok(pipeline)
    }

    /// Run the whole pipeline with this model's options ([`Perfusion::pipeline_options`]),
    /// keeping everything it computed (for the command's outputs, previews and validation).
    pub fn run_pipeline(
        &self,
        input: &AnyVolumeView<'_>,
        options: &Map<String, Value>,
        registration: Option<&dyn RigidRegistration>,
        control: &RunControl<'_>,
    ) -> Result<perfusion::PerfusionResult> {
        let pipeline = self.pipeline_options(options)?;
        let registration = registration.or(self.registration.as_deref().map(|r| r as &dyn RigidRegistration));
        perfusion::run(input, &pipeline, registration, control)
    }

    /// Correct motion with this registration back end (ITK in the command); without one the
    /// pipeline estimates motion and flags it, but does not correct it.
    pub fn with_registration(mut self, registration: Arc<dyn RigidRegistration + Send>) -> Self {
        self.registration = Some(registration);
        self
    }
}

/// A DICOM (DCM) concept.
fn dcm(value: &str, meaning: &str) -> Value {
    json!({"scheme": "DCM", "value": value, "meaning": meaning})
}

/// A SNOMED CT concept.
fn sct(value: &str, meaning: &str) -> Value {
    json!({"scheme": "SCT", "value": value, "meaning": meaning})
}

/// The oldest age the perfusion models accept (years; a plausibility bound).
pub const MAX_AGE: f64 = 130.0;
/// The largest voxel index an option can name.
const MAX_INDEX: i64 = 1 << 20;

fn perfusion_manifest(method: Method, version: Option<&str>) -> Manifest {
    let name = method.name();
    let filter = crate::perfusion::filter::BilateralOptions::default();
    let hypoperfusion = if method == Method::Cnn {
        "hypoperfused tissue: relative TTP > 4.5 s (core included)"
    } else {
        "hypoperfused tissue: Tmax > 6 s (core included where it is hypoperfused)"
    };
    let (label, about) = match method {
        Method::Ssvd => ("sSVD", "standard truncated SVD deconvolution (delay-sensitive)"),
        Method::Bsvd => ("bSVD", "block-circulant SVD deconvolution (delay-insensitive)"),
        Method::Osvd => ("oSVD", "block-circulant SVD with the oscillation-index threshold (delay-insensitive)"),
        Method::Tikhonov => ("Tikhonov", "block-circulant Tikhonov-regularised deconvolution"),
        Method::Nlr => ("NLR", "non-linear regression of a box residue function (Bennink)"),
        Method::Cnn => {
            ("CNN", "U-Net perfusion maps (Gava 2023) from the preprocessed time curves; hypoperfusion by relative TTP")
        }
    };
    parse(json!({
        "format": super::MANIFEST_FORMAT,
        "id": format!("perfusion-{name}"),
        "name": format!("Perfusion maps ({label})"),
        "version": version.unwrap_or(env!("CARGO_PKG_VERSION")),
        "licence": "Apache-2.0",
        "description": format!("CT perfusion: CBF, CBV, MTT, TTP and Tmax maps, ischemic core and penumbra with volumes and mismatch; {about}. QC flags (no AIF, truncated bolus, motion) withhold the volumes."),
        "reference": if method == Method::Cnn { "perfusion-cnn-gava2023" } else { "../shared/notes/perfusion.md" },
        "inputs": [{"name": "ctp", "modality": "CT", "dims": 4, "min_frames": 2, "orientation": "any"}],
        "options": {
            "bilateral_filter": {"type": "boolean", "default": true, "description": "edge-preserving denoising before analysis"},
            "filter_sigma_mm": {"type": "number", "default": filter.sigma_spatial_mm, "minimum": 0.1, "maximum": 20, "unit": "mm", "description": "bilateral filter: spatial σ (widened on noisy studies unless filter_adapt_to_noise is false)"},
            "filter_adapt_to_noise": {"type": "boolean", "default": true, "description": "classical methods: widen the spatial σ with the measured baseline noise above 5 HU per frame at 1 s sampling (up to 2×; the report gives the noise and the σ used)"},
            "filter_range_hu": {"type": "number", "default": filter.sigma_range_hu, "minimum": 0.1, "maximum": 1000, "unit": "HU", "description": "bilateral filter: range σ on the temporal mean"},
            "motion_correction": {"type": "boolean", "default": true, "description": "register frames to the first when motion is found (where the host provides registration; otherwise motion is estimated and flagged)"},
            "aif_i": {"type": "integer", "default": -1, "minimum": -1, "maximum": MAX_INDEX, "description": "manual AIF voxel, index i (with aif_j and aif_k; -1 = automatic AIF)"},
            "aif_j": {"type": "integer", "default": -1, "minimum": -1, "maximum": MAX_INDEX, "description": "manual AIF voxel, index j"},
            "aif_k": {"type": "integer", "default": -1, "minimum": -1, "maximum": MAX_INDEX, "description": "manual AIF voxel, index k"},
            "age_years": {"type": "number", "default": -1, "minimum": -1, "maximum": MAX_AGE, "unit": "years", "description": "for the DAWN criteria; -1 = unknown"},
            "nihss": {"type": "number", "default": -1, "minimum": -1, "maximum": 42, "description": "NIH stroke scale for DAWN; -1 = unknown"}
        },
        "outputs": [
            {"name": "cbf", "kind": "map", "unit": "ml/100g/min", "unit_ucum": "mL/(100.g.min)", "quantity": dcm("126390", "Absolute Regional Blood Flow"), "description": "cerebral blood flow"},
            {"name": "cbv", "kind": "map", "unit": "ml/100g", "unit_ucum": "mL/(100.g)", "quantity": dcm("126391", "Absolute Regional Blood Volume"), "description": "cerebral blood volume"},
            {"name": "mtt", "kind": "map", "unit": "s", "unit_ucum": "s", "quantity": dcm("113052", "Mean Transit Time"), "description": "mean transit time"},
            {"name": "ttp", "kind": "map", "unit": "s", "unit_ucum": "s", "quantity": dcm("113069", "Time To Peak"), "description": "time to peak from the first frame"},
            {"name": "tmax", "kind": "map", "unit": "s", "unit_ucum": "s", "quantity": dcm("113084", "Tmax"), "optional": true, "description": "time to the residue function's maximum; absent for the CNN"},
            {"name": "delay", "kind": "map", "unit": "s", "unit_ucum": "s", "quantity": dcm("126371", "Bolus Arrival Time"), "optional": true, "description": "bolus arrival delay relative to the AIF; absent for the CNN"},
            {"name": "lesions", "kind": "labelmap", "labels": [
                {"value": LABEL_CORE, "name": "ischemic core", "color": [220, 40, 40],
                 "category": sct("49755003", "Morphologically Altered Structure"), "property": sct("55641003", "Infarct")},
                {"value": LABEL_PENUMBRA, "name": "penumbra", "color": [240, 200, 40],
                 "category": sct("49755003", "Morphologically Altered Structure"), "property": sct("52674009", "Ischemia")}]},
            {"name": "hypoperfusion", "kind": "labelmap", "description": hypoperfusion, "labels": [
                {"value": 1, "name": "hypoperfusion", "color": [250, 140, 30],
                 "category": sct("49755003", "Morphologically Altered Structure"), "property": sct("52674009", "Ischemia")}]},
            {"name": "brain", "kind": "labelmap", "labels": [{"value": 1, "name": "brain", "color": [120, 160, 220],
                 "category": sct("85756007", "Tissue"), "property": sct("12738006", "Brain")}]},
            {"name": "core_ml", "kind": "score", "unit": "ml", "unit_ucum": "mL", "measured_on": {"output": "lesions", "label": LABEL_CORE}, "optional": true, "description": "withheld under a QC flag"},
            {"name": "hypoperfusion_ml", "kind": "score", "unit": "ml", "unit_ucum": "mL", "measured_on": {"output": "hypoperfusion", "label": 1}, "optional": true},
            {"name": "mismatch_ml", "kind": "score", "unit": "ml", "unit_ucum": "mL", "quantity": {"scheme": "99IMHOST", "value": "mismatch_ml", "meaning": "Hypoperfusion-core mismatch volume"}, "optional": true},
            {"name": "mismatch_ratio", "kind": "score", "unit": "1", "unit_ucum": "1", "quantity": {"scheme": "99IMHOST", "value": "mismatch_ratio", "meaning": "Mismatch ratio (hypoperfusion/core)"}, "optional": true, "description": "absent when the core is empty"}
        ],
        "device": {"requires": if method == Method::Cnn { "any" } else { "cpu" }}
    }))
}

impl Model for Perfusion {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn run(
        &self,
        inputs: &[AnyVolumeView<'_>],
        options: &Map<String, Value>,
        control: &RunControl<'_>,
    ) -> Result<ModelOutput> {
        let pipeline = self.pipeline_options(options)?;
        let registration = self.registration.as_deref().map(|r| r as &dyn RigidRegistration);
        let result = perfusion::run(&inputs[0], &pipeline, registration, control)?;
        model_output(result)
    }
}

/// A perfusion result as the perfusion models' outputs (their manifest's names): the maps, the
/// `lesions` label map (core 1, penumbra 2), `hypoperfusion` and `brain`, the volumes as scores
/// (absent when withheld) and the report.
pub fn model_output(result: perfusion::PerfusionResult) -> Result<ModelOutput> {
    let preview_png = Some(perfusion::preview::png(&result)?);
    let lesions = lesion_labels(&result.core, &result.hypoperfusion)?;
    let maps = result.maps;
    let mut volumes = vec![
        ("cbf".to_string(), AnyVolume::F32(maps.cbf)),
        ("cbv".into(), AnyVolume::F32(maps.cbv)),
        ("mtt".into(), AnyVolume::F32(maps.mtt)),
        ("ttp".into(), AnyVolume::F32(maps.ttp)),
    ];
    if result.report.method != Method::Cnn {
        volumes.push(("tmax".into(), AnyVolume::F32(maps.tmax)));
        volumes.push(("delay".into(), AnyVolume::F32(maps.delay)));
    }
    volumes.push(("lesions".into(), AnyVolume::U8(lesions)));
    volumes.push(("hypoperfusion".into(), AnyVolume::U8(result.hypoperfusion)));
    volumes.push(("brain".into(), AnyVolume::U8(result.brain)));
    let mut scores = Vec::new();
    if let Some(v) = &result.report.readout.volumes {
        scores.push(("core_ml".to_string(), v.core_ml));
        scores.push(("hypoperfusion_ml".into(), v.hypoperfusion_ml));
        scores.push(("mismatch_ml".into(), v.mismatch_ml));
        if let Some(r) = v.mismatch_ratio {
            scores.push(("mismatch_ratio".into(), r));
        }
    }
    let report = serde_json::to_value(&result.report).map_err(|e| Error::internal(e.to_string()))?;
    Ok(ModelOutput { volumes, scores, report, preview_png })
}

/// One label map from the core and hypoperfusion masks: core 1, hypoperfused-not-core 2.
fn lesion_labels(core: &Volume<u8>, hypoperfusion: &Volume<u8>) -> Result<Volume<u8>> {
    let mut out = core.clone();
    ndarray::Zip::from(out.data_mut()).and(core.data()).and(hypoperfusion.data()).for_each(|o, &c, &h| {
        *o = if c != 0 {
            LABEL_CORE
        } else if h != 0 {
            LABEL_PENUMBRA
        } else {
            0
        };
    });
    Ok(out)
}

/// The core's built-in models: `mip` and the five classical perfusion methods, which correct
/// motion with `registration` when one is given.
pub fn core_models(registration: Option<Arc<dyn RigidRegistration + Send>>) -> Vec<Arc<dyn Model>> {
    let mut models: Vec<Arc<dyn Model>> = vec![Arc::new(Mip::default())];
    models.extend(Method::ALL.into_iter().map(|m| {
        let p = Perfusion::classical(m);
        Arc::new(match &registration {
            Some(r) => p.with_registration(r.clone()),
            None => p,
        }) as Arc<dyn Model>
    }));
    models
}
