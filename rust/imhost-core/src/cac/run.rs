//! One calcium-scoring run as every front end does it (the command line, the registry's
//! `cac-agatston` model and so the C ABI, Slicer and Orthanc): check the CT, segment it (a
//! given mask or the model), score, and describe the result (report, read-out lines, preview).

use serde_json::{Map, Value, json};

use super::qc::{self, CtCheck};
use super::{AgatstonOptions, CacScore, Category, Connectivity2d};
use crate::registry::{Manifest, ModelOutput};
use crate::{AnyVolume, AnyVolumeView, Error, Geometry, Result, Volume, Voxel, with_view};

/// What a segmenter found: a region label per voxel (0 = not counted) and, for an ensemble,
/// each member's own region.
#[derive(Debug, Clone, Default)]
pub struct Segmented {
    /// Region labels of the result.
    pub region: Vec<u32>,
    /// Each member's region (empty for a single mask).
    pub members: Vec<Vec<u32>>,
    /// About the segmenter (model id, version, device; `null` for a given mask).
    pub about: Value,
}

/// The outcome of [`score_ct`].
#[derive(Debug, Clone)]
pub struct CacRun {
    /// The CT's checks.
    pub check: CtCheck,
    /// The scores (not to be shown when `check.blocked()`).
    pub score: CacScore,
    /// Region label of every counted lesion pixel.
    pub map: Vec<u32>,
    /// Each ensemble member's scores.
    pub members: Vec<CacScore>,
    /// report.json.
    pub report: Value,
    /// The read-out: totals and QC, one line each.
    pub lines: Vec<String>,
}

/// A 3-D CT view as f32 HU, `i` fastest; 4-D is refused.
pub fn hu_of(ct: &AnyVolumeView<'_>) -> Result<Vec<f32>> {
    let [.., nt] = ct.shape();
    if nt != 1 {
        return Err(Error::shape(format!(
            "calcium scoring takes one 3-D CT; this is a 4-D series of {nt} frames (pick one phase)"
        )));
    }
    fn values<T: Voxel>(v: &crate::VolumeView<'_, T>) -> Vec<f32> {
        v.data().t().iter().map(|x| x.to_f64() as f32).collect()
    }
    Ok(with_view!(ct, v => values(v)))
}

/// Check `hu` (on `geometry`, `dims`), segment it with `segment` unless a check blocks the
/// score, and score it.
pub fn score_ct(
    hu: &[f32],
    dims: [usize; 3],
    geometry: &Geometry,
    segment: &mut dyn FnMut() -> Result<Segmented>,
    options: &AgatstonOptions,
) -> Result<CacRun> {
    options.validate()?;
    let started = std::time::Instant::now();
    let check = qc::check_ct(hu, dims, 1, geometry)?;
    let checked = started.elapsed().as_secs_f64();
    let seg = if check.blocked() { Segmented { region: vec![0; hu.len()], ..Default::default() } } else { segment()? };
    let segmented = started.elapsed().as_secs_f64();
    let (score, map) = super::agatston_with_map(hu, dims, geometry.spacing, Some(&seg.region), options)?;
    let members: Vec<CacScore> = seg
        .members
        .iter()
        .map(|r| super::agatston(hu, dims, geometry.spacing, Some(r), options))
        .collect::<Result<_>>()?;
    let mut report = report_json(&score, &check, geometry);
    report["seconds"] = json!({"checks": checked, "segmentation": segmented - checked,
                               "scoring": started.elapsed().as_secs_f64() - segmented});
    if !seg.about.is_null() {
        report["model"] = seg.about.clone();
    }
    if !members.is_empty() {
        report["ensemble"] = json!({
            "vote": "per voxel, more than half of the members",
            "members": members.iter().map(|m| json!({"agatston": m.agatston, "category": m.category.letter()})).collect::<Vec<_>>(),
            "members_agreeing_with_the_category": members.iter().filter(|m| m.category == score.category).count(),
        });
    }
    let lines = read_out(&score, &check, &members);
    Ok(CacRun { check, score, map, members, report, lines })
}

impl CacRun {
    /// The lesion map as a uint16 label volume on `geometry`.
    pub fn mask_volume(&self, dims: [usize; 3], geometry: Geometry) -> Result<Volume<u16>> {
        use ndarray::ShapeBuilder;
        let data: Vec<u16> = self.map.iter().map(|&l| l.min(u32::from(u16::MAX)) as u16).collect();
        let array = ndarray::Array3::from_shape_vec((dims[0], dims[1], dims[2]).f(), data)
            .map_err(|e| Error::internal(e.to_string()))?;
        Volume::new_3d(array, geometry)
    }

    /// The preview PNG.
    pub fn preview_png(&self, hu: &[f32], dims: [usize; 3]) -> Result<Vec<u8>> {
        super::preview::render(hu, dims, &self.map, &self.score, &self.lines).png_bytes()
    }

    /// As a registry model's output: the `calcium` label map, the scores (none under a blocking
    /// flag), the report and the preview.
    pub fn into_model_output(self, hu: &[f32], dims: [usize; 3], geometry: Geometry) -> Result<ModelOutput> {
        use ndarray::ShapeBuilder;
        let data: Vec<u8> = self.map.iter().map(|&l| u8::from(l != 0)).collect();
        let array = ndarray::Array3::from_shape_vec((dims[0], dims[1], dims[2]).f(), data)
            .map_err(|e| Error::internal(e.to_string()))?;
        let calcium = Volume::new_3d(array, geometry)?;
        let preview = self.preview_png(hu, dims)?;
        let mut scores = Vec::new();
        if !self.check.blocked() {
            scores.push(("agatston".to_string(), self.score.agatston));
            scores.push(("volume_mm3".to_string(), self.score.volume_mm3));
            scores.push(("category".to_string(), self.score.category.index() as f64));
            if let Some(m) = self.score.mass_mg {
                scores.push(("mass_mg".to_string(), m));
            }
        }
        Ok(ModelOutput {
            volumes: vec![("calcium".into(), AnyVolume::from(calcium))],
            scores,
            report: self.report,
            preview_png: Some(preview),
        })
    }
}

/// The read-out lines (preview header and the command's text output).
pub fn read_out(score: &CacScore, check: &CtCheck, members: &[CacScore]) -> Vec<String> {
    let mut lines = Vec::new();
    if check.blocked() {
        lines.push("NO VALID SCORE (see the QC flags)".to_string());
    } else {
        lines.push(format!(
            "AGATSTON {:.1}  CATEGORY {} ({})",
            score.agatston,
            score.category.letter(),
            score.category.description()
        ));
        let mass = score.mass_mg.map_or("MASS: NO CALIBRATION".to_string(), |m| format!("MASS {m:.1} MG"));
        lines.push(format!("VOLUME {:.1} MM3  {mass}  LESIONS {} (3-D)", score.volume_mm3, score.lesions_3d));
        if !members.is_empty() {
            let cats: Vec<&str> = members.iter().map(|m| m.category.letter()).collect();
            lines.push(format!("ENSEMBLE MEMBERS' CATEGORIES: {}", cats.join(" ")));
        }
    }
    for f in &check.flags {
        lines.push(format!("QC {}: {}", f.code, f.message));
    }
    lines
}

/// report.json (without the file names, which the caller adds).
pub fn report_json(score: &CacScore, check: &CtCheck, geometry: &Geometry) -> Value {
    let valid = !check.blocked();
    let num = |x: f64| if valid { json!(x) } else { Value::Null };
    json!({
        "research_use_only": true,
        "caveat": "Research use only; not for diagnosis. Conventions: docs/CAC.md.",
        "valid": valid,
        "agatston": num(score.agatston),
        "volume_mm3": num(score.volume_mm3),
        "mass_mg": if valid { json!(score.mass_mg) } else { Value::Null },
        "category": if valid { json!(score.category.letter()) } else { Value::Null },
        "category_range": if valid { json!(score.category.description()) } else { Value::Null },
        "lesions_3d": score.lesions_3d,
        "per_region": score.per_region,
        "lesions": score.lesions,
        "slice_mm": geometry.spacing[2],
        "slice_factor": score.slice_factor,
        "pixel_area_mm2": geometry.spacing[0] * geometry.spacing[1],
        "conventions": {
            "threshold_hu": score.options.threshold_hu,
            "min_voxels": score.options.min_voxels,
            "min_area_mm2": score.options.min_area_mm2,
            "connectivity_2d": score.options.connectivity.number(),
            "density_factor": "from the lesion's maximum HU: 130-199 → 1, 200-299 → 2, 300-399 → 3, ≥ 400 → 4",
            "category": "A: 0, B: (0, 10], C: (10, 100], D: (100, 400], E: > 400, on the unrounded score",
            "mass_calibration": score.options.mass_calibration,
        },
        "qc": {
            "flags": check.flags,
            "largest_enhancing_region_ml": check.largest_enhancing_ml,
        },
    })
}

/// Agatston options from a model's JSON options (`connectivity` 4/8, `min_area_mm2`,
/// `mass_calibration` ≤ 0 meaning none).
pub fn options_from_json(options: &Map<String, Value>) -> Result<AgatstonOptions> {
    let mut o = AgatstonOptions::default();
    match options.get("connectivity").and_then(Value::as_i64) {
        None | Some(8) => {}
        Some(4) => o.connectivity = Connectivity2d::Four,
        Some(c) => return Err(Error::invalid_argument(format!("connectivity is 4 or 8, not {c}"))),
    }
    if let Some(a) = options.get("min_area_mm2").and_then(Value::as_f64) {
        o.min_area_mm2 = a;
    }
    o.mass_calibration = options.get("mass_calibration").and_then(Value::as_f64).filter(|c| *c > 0.0);
    o.validate()?;
    Ok(o)
}

/// The registry manifest of the `cac-agatston` model (`about`: the loaded network folder).
pub fn model_manifest(version: &str, about: Value) -> Manifest {
    let mut manifest: Manifest = serde_json::from_value(json!({
        "format": crate::registry::MANIFEST_FORMAT,
        "id": "cac-agatston",
        "name": "Coronary calcium (Agatston)",
        "version": version,
        "licence": "Apache-2.0",
        "description": "Coronary artery calcium of a non-contrast ECG-gated cardiac CT: an ensemble of five 3D U-Nets (Gogin et al. 2021) segments it, then Agatston, volume and mass scores per lesion and in total, and the risk category A–E. QC: 4-D, non-axial, > 5 mm slices, all-air and non-HU input are refused; contrast withholds the scores. Phantom-trained default weights.",
        "reference": "cac-agatston-gogin2021",
        "inputs": [{"name": "ct", "modality": "CT", "dims": 3, "orientation": "any"}],
        "options": {
            "connectivity": {"type": "integer", "default": 8, "minimum": 4, "maximum": 8, "description": "2-D lesion connectivity within a slice: 8 or 4"},
            "min_area_mm2": {"type": "number", "default": 0, "minimum": 0, "maximum": 100, "unit": "mm2", "description": "smallest lesion area (0: the ≥ 3-pixel rule only; 1: Agatston's 1990 rule too)"},
            "mass_calibration": {"type": "number", "default": 0, "minimum": 0, "maximum": 10, "unit": "mg/ml/HU", "description": "mass score calibration factor (0: no mass score)"}
        },
        "outputs": [
            {"name": "calcium", "kind": "labelmap", "labels": [{"value": 1, "name": "coronary artery calcification", "color": [235, 80, 70],
              "category": {"scheme": "SCT", "value": "49755003", "meaning": "Morphologically Altered Structure"},
              "property": {"scheme": "SCT", "value": "250997004", "meaning": "Calcification of coronary artery"}}]},
            {"name": "agatston", "kind": "score", "unit": "1", "unit_ucum": "1", "measured_on": {"output": "calcium", "label": 1},
             "quantity": {"scheme": "99IMHOST", "value": "agatston", "meaning": "Agatston score"}, "optional": true, "description": "withheld under a blocking QC flag"},
            {"name": "volume_mm3", "kind": "score", "unit": "mm3", "unit_ucum": "mm3", "measured_on": {"output": "calcium", "label": 1}, "optional": true},
            {"name": "mass_mg", "kind": "score", "unit": "mg", "unit_ucum": "mg", "measured_on": {"output": "calcium", "label": 1}, "optional": true, "description": "with a calibration factor only"},
            {"name": "category", "kind": "score", "unit": "1", "unit_ucum": "1", "quantity": {"scheme": "99IMHOST", "value": "cac_category", "meaning": "CAC risk category index (0 = A … 4 = E)"}, "optional": true}
        ],
        "device": {"requires": "any"}
    }))
    .expect("the cac-agatston manifest is valid");
    manifest.extra.insert("network".into(), about);
    manifest
}

/// The category letter of a category score (0..=4).
pub fn category_letter(index: f64) -> Option<&'static str> {
    Category::ALL.get(index as usize).filter(|_| index >= 0.0 && index.fract() == 0.0).map(|c| c.letter())
}
