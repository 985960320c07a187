//! The model manifest: what a model takes and gives, in one JSON document that built-in models,
//! native plugins and model packages all describe themselves with (`"format": "imhost-manifest/1"`).
//!
//! ```json
//! {
//!   "format": "imhost-manifest/1",
//!   "id": "example.threshold", "name": "Threshold", "version": "1.0.0", "licence": "Apache-2.0",
//!   "description": "…",
//!   "inputs": [{"name": "image", "modality": "CT", "dims": 3, "dtypes": ["f32"]}],
//!   "options": {"level": {"type": "number", "default": 100, "unit": "HU"}},
//!   "outputs": [{"name": "mask", "kind": "labelmap",
//!                "labels": [{"value": 1, "name": "bright", "color": [230, 80, 60]}]},
//!               {"name": "volume_ml", "kind": "score", "unit": "ml"}],
//!   "device": {"requires": "cpu"}
//! }
//! ```
//!
//! The manifest's JSON Schema is `schemas/imhost-manifest-1.schema.json` in the repository.
//! What is known is validated by [`Manifest::validate`] before a model is registered (wrong
//! values are errors). Unknown keys are warnings, not errors — a newer manifest still loads, and
//! unknown top-level keys are kept — but each one is listed in [`Manifest::warnings`] with the
//! known key it most likely misspells (`outputs[1].units: did you mean "unit"?`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{DType, Error, Result};

/// The `format` string of this manifest version.
pub const MANIFEST_FORMAT: &str = "imhost-manifest/1";

/// A model's manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// Unique id: lower-case letters, digits, `.`, `-`, `_` (e.g. `perfusion-osvd`,
    /// `acme.liver-seg`). Plugins should prefix their vendor.
    pub id: String,
    /// Human-readable name (a button label).
    pub name: String,
    /// The model's version (semver recommended).
    pub version: String,
    /// What it does, for people.
    #[serde(default)]
    pub description: String,
    /// SPDX licence of the model (code and weights).
    #[serde(default = "unknown")]
    pub licence: String,
    /// The paper or source it implements, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Always true: no model here is a medical device.
    #[serde(default = "yes")]
    pub research_use_only: bool,
    /// The volumes it takes, in order.
    pub inputs: Vec<InputSpec>,
    /// Options it accepts (name → schema).
    #[serde(default)]
    pub options: BTreeMap<String, OptionSpec>,
    /// What it produces.
    pub outputs: Vec<OutputSpec>,
    /// Device needs.
    #[serde(default)]
    pub device: DeviceSpec,
    /// Limits the host enforces on a run.
    #[serde(default, skip_serializing_if = "Limits::is_default")]
    pub limits: Limits,
    /// Where the model came from (`builtin`, `plugin`, `package`); set by the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Keys this version does not know, kept as they are.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
    /// What [`Manifest::from_json`] found questionable but not wrong: unknown keys, each as
    /// `path: message`. Not part of the JSON.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// The DICOM modalities (PS3.3 C.7.3.1.1.1 defined terms) an input may name, or `any`.
pub const MODALITIES: &[&str] =
    &["any", "CT", "MR", "PT", "NM", "US", "CR", "DX", "MG", "XA", "RF", "OT", "SEG", "RTDOSE", "OCT", "OP", "SM"];

/// The orientations an input may name: `any` (the host passes the image as stored, with its
/// direction cosines), `LPS` or `RAS` (what the model expects its index axes to point to).
pub const ORIENTATIONS: &[&str] = &["any", "LPS", "RAS"];

/// The keys this version knows, per kind of object (`top` = the manifest itself).
const KNOWN_KEYS: &[(&str, &[&str])] = &[
    (
        "top",
        &[
            "format",
            "id",
            "name",
            "version",
            "description",
            "licence",
            "reference",
            "research_use_only",
            "inputs",
            "options",
            "outputs",
            "device",
            "limits",
            "source",
            "runtime",
            "$schema",
        ],
    ),
    ("input", &["name", "modality", "dims", "channels", "dtypes", "spacing_mm", "orientation", "min_frames"]),
    ("option", &["type", "default", "enum", "minimum", "maximum", "unit", "description"]),
    (
        "output",
        &[
            "name",
            "kind",
            "unit",
            "unit_ucum",
            "quantity",
            "labels",
            "measured_on",
            "grid",
            "frames",
            "optional",
            "description",
        ],
    ),
    ("label", &["value", "name", "color", "category", "property"]),
    ("code", &["scheme", "value", "meaning"]),
    ("measured_on", &["output", "label"]),
    ("device", &["requires", "memory_mib"]),
    ("limits", &["timeout_s"]),
    ("source", &["kind", "path", "plugin", "isolated"]),
];

fn known(kind: &str) -> &'static [&'static str] {
    KNOWN_KEYS.iter().find(|(k, _)| *k == kind).map_or(&[], |(_, keys)| keys)
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// The unknown keys of a manifest's JSON, as `path: message` lines, in document order.
pub fn unknown_keys(value: &Value) -> Vec<String> {
    fn object(value: &Value, kind: &str, path: &str, out: &mut Vec<String>) {
        let Some(map) = value.as_object() else { return };
        let keys = known(kind);
        for (key, child) in map {
            let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            if !keys.contains(&key.as_str()) {
                // A near spelling, or a known key that the unknown one begins (`spacing` for
                // `spacing_mm`).
                let near = keys
                    .iter()
                    .map(|k| (distance(key, k), *k))
                    .filter(|(d, k)| *d <= 2 || (key.len() >= 4 && k.starts_with(key.as_str())))
                    .min();
                out.push(match near {
                    Some((_, k)) => format!("{here}: unknown key, ignored; did you mean \"{k}\"?"),
                    None => format!("{here}: unknown key, ignored (known here: {})", keys.join(", ")),
                });
                continue;
            }
            let each = |kind: &str, out: &mut Vec<String>| {
                for (n, item) in child.as_array().into_iter().flatten().enumerate() {
                    object(item, kind, &format!("{here}[{n}]"), out);
                }
            };
            match (kind, key.as_str()) {
                ("top", "inputs") => each("input", out),
                ("top", "outputs") => each("output", out),
                ("top", "options") => {
                    for (name, spec) in child.as_object().into_iter().flatten() {
                        object(spec, "option", &format!("{here}.{name}"), out);
                    }
                }
                ("top", "device" | "limits" | "source") => object(child, key, &here, out),
                ("output", "labels") => {
                    for (n, label) in child.as_array().into_iter().flatten().enumerate() {
                        let at = format!("{here}[{n}]");
                        object(label, "label", &at, out);
                        for code in ["category", "property"] {
                            if let Some(c) = label.get(code) {
                                object(c, "code", &format!("{at}.{code}"), out);
                            }
                        }
                    }
                }
                ("output", "quantity") => object(child, "code", &here, out),
                ("output", "measured_on") => object(child, "measured_on", &here, out),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    object(value, "top", "", &mut out);
    out
}

fn unknown() -> String {
    "unknown".into()
}
fn yes() -> bool {
    true
}

/// Where a registered model comes from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Source {
    /// `builtin`, `plugin` (a native library) or `package` (a model folder run by the host).
    pub kind: String,
    /// The library or folder (absent for built-ins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The plugin's name and version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// Whether runs go through a child worker process.
    #[serde(default)]
    pub isolated: bool,
}

/// One input volume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InputSpec {
    /// Its name (`ctp`, `ct`, `pet`).
    pub name: String,
    /// DICOM modality (`CT`, `PT`, `MR`) or `any`.
    #[serde(default = "any")]
    pub modality: String,
    /// 3 (a volume) or 4 (a time series: the 4th axis is time, frame times required).
    pub dims: u8,
    /// Channels (1 for images; a multi-channel input is several inputs).
    #[serde(default = "one")]
    pub channels: u32,
    /// Pixel types the model reads without conversion (names as in [`DType::name`]); an input of
    /// another type is converted to the first. Empty: any type, passed as is.
    #[serde(default)]
    pub dtypes: Vec<String>,
    /// Spacing (mm, i j k) the model needs; the host or the model resamples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spacing_mm: Option<[f64; 3]>,
    /// Orientation the model expects (`LPS`, `RAS`, `any`).
    #[serde(default = "any")]
    pub orientation: String,
    /// Minimum number of frames of a 4-D input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_frames: Option<usize>,
}

fn any() -> String {
    "any".into()
}
fn one() -> u32 {
    1
}

/// The type of an option.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OptionType {
    /// A finite number.
    Number,
    /// A whole number.
    Integer,
    /// true / false.
    Boolean,
    /// Text (with `enum`, one of a list).
    String,
}

/// One option's schema (a small subset of JSON Schema).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OptionSpec {
    /// Its type.
    #[serde(rename = "type")]
    pub kind: OptionType,
    /// The value when none is given (required: every option has a default).
    pub default: Value,
    /// Allowed values (strings).
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<String>>,
    /// Lower bound (numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<f64>,
    /// Upper bound (numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<f64>,
    /// Unit of a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// What it does.
    #[serde(default)]
    pub description: String,
}

/// What an output is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// A parametric map (float32, with a unit).
    Map,
    /// A label map (uint8; labels with names and colours).
    Labelmap,
    /// A number (a volume in ml, a score).
    Score,
}

/// One output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutputSpec {
    /// Its name (`cbf`, `lesion`, `core_ml`).
    pub name: String,
    /// Map, label map or score.
    pub kind: OutputKind,
    /// Unit (`ml/100g/min`, `s`, `ml`, `1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The unit as a UCUM code (`mL/(100.g.min)`, `s`, `mL`, `1`), for DICOM and FHIR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_ucum: Option<String>,
    /// What a map measures, as a coded concept (e.g. DCM 113055 "Regional Cerebral Blood Flow").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<Code>,
    /// Labels of a label map.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<Label>,
    /// Scores: the segment the score was measured on (a label of a label-map output), so that
    /// the DICOM measurement report references that segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_on: Option<MeasuredOn>,
    /// Volumes: the input whose grid they share (index into `inputs`, default 0). Outputs are
    /// 3-D on that input's spatial grid unless `frames` is `"input"`.
    #[serde(default)]
    pub grid: usize,
    /// `"one"` (3-D, the default) or `"input"` (as many frames as the input).
    #[serde(default = "frames_one")]
    pub frames: String,
    /// Whether the model may leave it out (e.g. a map a method does not produce).
    #[serde(default)]
    pub optional: bool,
    /// What it is.
    #[serde(default)]
    pub description: String,
}

fn frames_one() -> String {
    "one".into()
}

/// The segment a score was measured on: `{"output": "lesions", "label": 1}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MeasuredOn {
    /// The label-map output.
    pub output: String,
    /// The label's value.
    pub label: u8,
}

/// A label of a label map.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Label {
    /// Voxel value (1–255; 0 is background).
    pub value: u8,
    /// Name (`core`, `penumbra`).
    pub name: String,
    /// Display colour, sRGB 0–255.
    pub color: [u8; 3],
    /// The segment's category (SNOMED CT, DICOM SEG's Segmented Property Category).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Code>,
    /// The segment's type (SNOMED CT, DICOM SEG's Segmented Property Type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<Code>,
}

/// A coded concept: `{"scheme": "SCT", "value": "12738006", "meaning": "Brain"}` (DICOM's
/// coding scheme designators: `SCT` SNOMED CT, `DCM` DICOM, `UCUM`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Code {
    /// Coding scheme designator.
    pub scheme: String,
    /// Code value.
    pub value: String,
    /// Code meaning.
    pub meaning: String,
}

/// Device needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceSpec {
    /// `cpu` (runs on the CPU only), `any` (CUDA when present, else CPU) or `cuda` (needs a GPU).
    #[serde(default = "cpu")]
    pub requires: String,
    /// Peak memory per run in MiB, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
}

fn cpu() -> String {
    "cpu".into()
}

/// Limits the host enforces on a run (`"limits": {"timeout_s": 600}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Limits {
    /// Longest a run may take, in seconds, before an isolated worker is stopped and the run fails
    /// with a time-out. A run can set its own (`RunControl::with_time_limit`,
    /// `imh_run_options.timeout_s`, `imhost run --timeout`); without either the host uses one
    /// hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<f64>,
}

impl Limits {
    fn is_default(&self) -> bool {
        *self == Limits::default()
    }
}

impl Default for DeviceSpec {
    fn default() -> Self {
        DeviceSpec { requires: cpu(), memory_mib: None }
    }
}

/// Whether `id` is a valid model id.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && id.as_bytes()[0].is_ascii_alphanumeric()
}

/// Whether `name` may name an output (it becomes part of file names).
pub fn valid_output_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

impl Manifest {
    /// Parse and validate a manifest from JSON text.
    pub fn from_json(text: &str) -> Result<Manifest> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| Error::format(format!("invalid manifest JSON: {e}")))?;
        let warnings = unknown_keys(&value);
        let mut manifest: Manifest = serde_json::from_value(value).map_err(|e| {
            Error::format(format!(
                "invalid manifest: {e} (the manifest's schema: schemas/imhost-manifest-1.schema.json)"
            ))
        })?;
        manifest.warnings = warnings;
        manifest.validate()?;
        Ok(manifest)
    }

    /// The manifest as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a manifest serialises")
    }

    /// Check what this version knows: format, id, inputs, options (defaults valid), outputs
    /// (unique names, labels of label maps, grid in range), device.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::format(format!("manifest of '{}': {m}", self.id)));
        if self.format != MANIFEST_FORMAT {
            return bad(format!("format is '{}', expected '{MANIFEST_FORMAT}'", self.format));
        }
        if !valid_id(&self.id) {
            return bad("id must be 1-64 of a-z 0-9 . - _, starting with a letter or digit".into());
        }
        if self.name.trim().is_empty() || self.version.trim().is_empty() {
            return bad("name and version must not be empty".into());
        }
        if !self.research_use_only {
            return bad("research_use_only must be true: imhost runs no cleared medical device".into());
        }
        if self.inputs.is_empty() {
            return bad("declares no inputs".into());
        }
        for input in &self.inputs {
            if input.dims != 3 && input.dims != 4 {
                return bad(format!("input '{}' has dims {} (3 or 4)", input.name, input.dims));
            }
            if !MODALITIES.contains(&input.modality.as_str()) {
                return bad(format!(
                    "input '{}' has modality '{}' (a DICOM modality: {})",
                    input.name,
                    input.modality,
                    MODALITIES.join(", ")
                ));
            }
            if !ORIENTATIONS.contains(&input.orientation.as_str()) {
                return bad(format!(
                    "input '{}' has orientation '{}' ({})",
                    input.name,
                    input.orientation,
                    ORIENTATIONS.join(", ")
                ));
            }
            if input.channels != 1 {
                return bad(format!(
                    "input '{}' has {} channels: an input is one channel; declare several inputs instead",
                    input.name, input.channels
                ));
            }
            if input.min_frames.is_some() && input.dims != 4 {
                return bad(format!("input '{}' gives min_frames, which only a 4-D input (dims 4) has", input.name));
            }
            for d in &input.dtypes {
                if DType::from_name(d).is_none() {
                    return bad(format!("input '{}' lists unknown dtype '{d}'", input.name));
                }
            }
            if let Some(s) = input.spacing_mm
                && s.iter().any(|v| !v.is_finite() || *v <= 0.0)
            {
                return bad(format!("input '{}' has a non-positive spacing", input.name));
            }
        }
        for (name, spec) in &self.options {
            if let Err(e) = spec.check(name, &spec.default) {
                return bad(format!("default of {}", e.message()));
            }
        }
        let volumes = self.outputs.iter().filter(|o| o.kind != OutputKind::Score).count();
        if self.outputs.is_empty() || volumes > 255 {
            return bad("must declare 1 to 255 outputs".into());
        }
        for (n, output) in self.outputs.iter().enumerate() {
            if output.name.is_empty() || self.outputs[..n].iter().any(|o| o.name == output.name) {
                return bad(format!("output names must be unique and non-empty ('{}')", output.name));
            }
            // Output names become file names (`NAME.nii.gz`, `pm_NAME.dcm`): plain names only,
            // so that no manifest can make a host write outside its output folder.
            if !valid_output_name(&output.name) {
                return bad(format!(
                    "output name '{}' must be 1-64 of A-Z a-z 0-9 . - _, starting with a letter or digit",
                    output.name
                ));
            }
            if output.grid >= self.inputs.len() {
                return bad(format!(
                    "output '{}' has grid {}, but the manifest declares {} input(s): grid is the 0-based index of the input whose grid the output shares (0 to {})",
                    output.name,
                    output.grid,
                    self.inputs.len(),
                    self.inputs.len() - 1
                ));
            }
            if output.frames != "one" && output.frames != "input" {
                return bad(format!("output '{}' has frames '{}' (one or input)", output.name, output.frames));
            }
            if output.kind == OutputKind::Labelmap {
                if output.labels.is_empty() {
                    return bad(format!("label map '{}' lists no labels", output.name));
                }
                if output.labels.iter().any(|l| l.value == 0) {
                    return bad(format!("label map '{}' uses value 0 (background)", output.name));
                }
            }
            if let Some(on) = &output.measured_on {
                let target = self.outputs.iter().find(|o| o.name == on.output);
                let known = target
                    .is_some_and(|t| t.kind == OutputKind::Labelmap && t.labels.iter().any(|l| l.value == on.label));
                if output.kind != OutputKind::Score || !known {
                    return bad(format!(
                        "output '{}': measured_on must name a label of a label-map output, on a score ('{}' label {})",
                        output.name, on.output, on.label
                    ));
                }
            }
            let codes =
                output.quantity.iter().chain(output.labels.iter().flat_map(|l| l.category.iter().chain(&l.property)));
            for code in codes {
                if code.scheme.is_empty() || code.value.is_empty() || code.meaning.is_empty() || code.value.len() > 64 {
                    return bad(format!(
                        "output '{}': a code needs a scheme, a value (≤ 64 characters) and a meaning",
                        output.name
                    ));
                }
            }
        }
        if !["cpu", "any", "cuda"].contains(&self.device.requires.as_str()) {
            return bad(format!("device.requires is '{}' (cpu, any or cuda)", self.device.requires));
        }
        if let Some(t) = self.limits.timeout_s
            && !(t.is_finite() && t > 0.0 && t <= 7.0 * 86400.0)
        {
            return bad(format!("limits.timeout_s is {t} (seconds, more than 0 and at most a week)"));
        }
        Ok(())
    }

    /// The output called `name`.
    pub fn output(&self, name: &str) -> Option<&OutputSpec> {
        self.outputs.iter().find(|o| o.name == name)
    }

    /// Resolve options: `given` (JSON object) over the defaults, each value checked against its
    /// schema; an unknown name is an error listing the known ones.
    pub fn resolve_options(&self, given: &serde_json::Map<String, Value>) -> Result<serde_json::Map<String, Value>> {
        let mut out = serde_json::Map::new();
        for (name, value) in given {
            let Some(spec) = self.options.get(name) else {
                let known: Vec<&str> = self.options.keys().map(String::as_str).collect();
                return Err(Error::invalid_argument(format!(
                    "model '{}' has no option '{name}' (options: {})",
                    self.id,
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                )));
            };
            spec.check(name, value)?;
            out.insert(name.clone(), value.clone());
        }
        for (name, spec) in &self.options {
            out.entry(name.clone()).or_insert_with(|| spec.default.clone());
        }
        Ok(out)
    }

    /// Parse `k=v` strings (command line) into a JSON object using the option types.
    pub fn parse_options(&self, pairs: &[String]) -> Result<serde_json::Map<String, Value>> {
        let mut out = serde_json::Map::new();
        for pair in pairs {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(Error::invalid_argument(format!("option '{pair}' is not key=value")));
            };
            let value = match self.options.get(k).map(|s| s.kind) {
                Some(OptionType::Number) => v
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(|| Error::invalid_argument(format!("option {k}: '{v}' is not a number")))?,
                Some(OptionType::Integer) => Value::from(
                    v.parse::<i64>()
                        .map_err(|_| Error::invalid_argument(format!("option {k}: '{v}' is not an integer")))?,
                ),
                Some(OptionType::Boolean) => Value::Bool(match v {
                    "true" | "1" | "yes" | "on" => true,
                    "false" | "0" | "no" | "off" => false,
                    _ => return Err(Error::invalid_argument(format!("option {k}: '{v}' is not true/false"))),
                }),
                _ => Value::String(v.to_string()),
            };
            out.insert(k.to_string(), value);
        }
        self.resolve_options(&out)
    }
}

impl OptionSpec {
    /// Check one value against this schema.
    pub fn check(&self, name: &str, value: &Value) -> Result<()> {
        let err = |m: &str| Err(Error::invalid_argument(format!("option {name}: {m}")));
        match self.kind {
            OptionType::Number | OptionType::Integer => {
                let Some(x) = value.as_f64() else { return err(&format!("{value} is not a number")) };
                if self.kind == OptionType::Integer && !(value.is_i64() || value.is_u64()) {
                    return err(&format!("{value} is not an integer"));
                }
                if self.minimum.is_some_and(|m| x < m) || self.maximum.is_some_and(|m| x > m) {
                    return err(&format!(
                        "{x} is outside [{}, {}]",
                        self.minimum.map_or("-inf".into(), |m| m.to_string()),
                        self.maximum.map_or("inf".into(), |m| m.to_string())
                    ));
                }
            }
            OptionType::Boolean => {
                if !value.is_boolean() {
                    return err(&format!("{value} is not true/false"));
                }
            }
            OptionType::String => {
                let Some(s) = value.as_str() else { return err(&format!("{value} is not a string")) };
                if let Some(choices) = &self.choices
                    && !choices.iter().any(|c| c == s)
                {
                    return err(&format!("'{s}' is not one of {}", choices.join(", ")));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        r#"{"format": "imhost-manifest/1", "id": "x.thr", "name": "T", "version": "1",
            "inputs": [{"name": "ct", "dims": 3, "dtypes": ["f32"]}],
            "options": {"level": {"type": "number", "default": 100, "minimum": -1000, "maximum": 3000},
                        "mode": {"type": "string", "default": "a", "enum": ["a", "b"]},
                        "n": {"type": "integer", "default": 2}},
            "outputs": [{"name": "mask", "kind": "labelmap", "labels": [{"value": 1, "name": "x", "color": [1,2,3]}]}],
            "future_key": {"kept": true}}"#
            .into()
    }

    /// Output names become file names: a path, a hidden name or an empty one is refused.
    #[test]
    fn output_names_are_plain_file_names() {
        for bad in ["../escape", "a/b", ".hidden", "/abs", "x\\y", "", "é"] {
            let text = sample().replace(r#""name": "mask""#, &format!(r#""name": {}"#, serde_json::json!(bad)));
            let e = Manifest::from_json(&text).unwrap_err();
            assert!(e.message().contains("output name") || e.message().contains("non-empty"), "{bad}: {e}");
        }
        for good in ["mask", "core_ml", "cbf.v2", "T1-map"] {
            let text = sample().replace(r#""name": "mask""#, &format!(r#""name": "{good}""#));
            Manifest::from_json(&text).unwrap();
        }
    }

    #[test]
    fn parses_validates_and_keeps_unknown_keys() {
        let m = Manifest::from_json(&sample()).unwrap();
        assert_eq!(m.licence, "unknown");
        assert!(m.research_use_only);
        assert!(m.to_json().contains("future_key"));
    }

    /// Unknown keys anywhere are warnings with a suggestion; wrong values of known keys are
    /// errors.
    #[test]
    fn unknown_keys_are_warnings_and_bad_values_errors() {
        let text = sample()
            .replace(r#""kind": "labelmap""#, r#""kind": "labelmap", "units": "ml""#)
            .replace(r#""dims": 3"#, r#""dims": 3, "spacing": [1, 1, 1]"#)
            .replace(r#""future_key""#, r#""outputz""#);
        let m = Manifest::from_json(&text).unwrap();
        assert_eq!(
            m.warnings,
            [
                r#"inputs[0].spacing: unknown key, ignored; did you mean "spacing_mm"?"#.to_string(),
                r#"outputs[0].units: unknown key, ignored; did you mean "unit"?"#.to_string(),
                r#"outputz: unknown key, ignored; did you mean "outputs"?"#.to_string(),
            ]
        );
        assert!(
            Manifest::from_json(&sample().replace(r#""future_key": {"kept": true}"#, r#""zzz": 1"#)).unwrap().warnings
                [0]
            .contains("known here: format, id")
        );
        for (edit, needle) in [
            ((r#""dims": 3"#, r#""dims": 3, "modality": "CAT""#), "modality 'CAT'"),
            ((r#""dims": 3"#, r#""dims": 3, "orientation": "RAI""#), "orientation 'RAI'"),
            ((r#""dims": 3"#, r#""dims": 3, "channels": 3"#), "declare several inputs"),
            ((r#""dims": 3"#, r#""dims": 3, "min_frames": 3"#), "only a 4-D input"),
            ((r#""kind": "labelmap""#, r#""kind": "labelmap", "grid": 1"#), "0-based index of the input"),
        ] {
            let e = Manifest::from_json(&sample().replace(edit.0, edit.1)).unwrap_err();
            assert!(e.message().contains(needle), "{edit:?}: {e}");
        }
        assert!(Manifest::from_json(&sample()).unwrap().warnings.iter().all(|w| w.starts_with("future_key")));
    }

    #[test]
    fn options_resolve_and_are_checked() {
        let m = Manifest::from_json(&sample()).unwrap();
        let o = m.parse_options(&["level=250.5".into(), "mode=b".into()]).unwrap();
        assert_eq!(o["level"], 250.5);
        assert_eq!(o["mode"], "b");
        assert_eq!(o["n"], 2);
        for bad in ["level=5000", "mode=c", "n=1.5", "nope=1", "level"] {
            let e = m.parse_options(&[bad.into()]).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument, "{bad}: {e}");
        }
    }

    #[test]
    fn invalid_manifests_are_refused_with_the_reason() {
        for (edit, needle) in [
            (("\"x.thr\"", "\"X Thr\""), "id must be"),
            (("imhost-manifest/1", "imhost-manifest/9"), "format"),
            (("\"dims\": 3", "\"dims\": 5"), "dims 5"),
            (("\"f32\"", "\"f128\""), "unknown dtype"),
            (("\"value\": 1", "\"value\": 0"), "background"),
            (("\"default\": 100", "\"default\": 9000"), "outside"),
        ] {
            let text = sample().replace(edit.0, edit.1);
            let e = Manifest::from_json(&text).unwrap_err();
            assert!(e.message().contains(needle), "{edit:?}: {e}");
        }
        assert!(Manifest::from_json("{not json").unwrap_err().message().contains("invalid manifest JSON"));
    }
}
