//! DICOM results: every output of a model written as standard DICOM linked to its source series,
//! so that a PACS, Orthanc/OHIF or Slicer keeps them next to the study.
//!
//! - float maps → one **Parametric Map** per map (float32 pixels, Real World Value Mapping in
//!   UCUM units, the manifest's quantity code);
//! - label maps → one binary **Segmentation** per label map, one segment per declared label
//!   (label, CIELab colour, SNOMED CT category/type, algorithm identification);
//! - scores, QC flags and the reperfusion criteria → one **TID 1500 measurement report**
//!   (Comprehensive SR) whose measurements reference the SEG segment they were measured on
//!   (the manifest's `measured_on`), with a research-use-only statement;
//! - a preview PNG → one **Secondary Capture** (RGB) so that a PACS shows the summary;
//! - a 4-D source (CTP) → one derived **CT series**, the temporal average of its frames, which
//!   the maps and segmentations reference first: a 3-D anatomical image on their grid, which
//!   viewers that overlay a map or a segmentation on a volume (OHIF's Parametric Map and SEG
//!   viewports) need and a 4-D series cannot give them ([`ResultSource::with_temporal_average`]).
//!
//! Every instance copies the Patient and Study modules of the source, has the source's Frame of
//! Reference and grid (Image Position per frame, Image Orientation, Pixel Spacing, slice spacing),
//! references the source instances, carries a content date/time, manufacturer and software
//! version, and says "RESEARCH USE ONLY" in its Series Description. New UIDs are UUID-derived
//! (`2.25.…`, PS3.5 §B.2: unique without a registered root) or under a configured root; with
//! [`ResultOptions::uid_seed`] and a fixed content time the bytes are deterministic (tests).
//!
//! The attribute layout follows what highdicom 0.28 writes for the same IODs; the tests read
//! every output back with highdicom and validate it with dciodvfy.

use std::collections::BTreeMap;

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Length, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use ndarray::ShapeBuilder;
use serde_json::Value;

use super::{DicomSeries, InstanceIds, SourceInstance};
use crate::error::{Error, Result};
use crate::geometry::Geometry;
use crate::registry::manifest::Code;
use crate::registry::{Manifest, ModelOutput, OutputKind, OutputSpec};
use crate::volume::{AnyVolume, Volume};

type Obj = InMemDicomObject;
type Elem = dicom_object::mem::InMemElement;

/// The Parametric Map Storage SOP class.
pub const PARAMETRIC_MAP_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.30";
/// The Segmentation Storage SOP class.
pub const SEGMENTATION_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.66.4";
/// The Comprehensive SR Storage SOP class (the measurement report).
pub const COMPREHENSIVE_SR_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.88.33";
/// The Secondary Capture Image Storage SOP class (the preview).
pub const SECONDARY_CAPTURE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.7";
/// The CT Image Storage SOP class (the temporal average of a 4-D source).
pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
/// imhost's Implementation Class UID (UUID-derived, fixed).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.193874310526728163990117226930165713";
/// The UID root used when none is configured: UUID-derived UIDs (PS3.5 §B.2).
pub const DEFAULT_UID_ROOT: &str = "2.25";
/// The statement every result carries.
pub const RESEARCH_USE_STATEMENT: &str =
    "RESEARCH USE ONLY: not a medical device; not for diagnosis or treatment decisions.";

/// How results are written.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ResultOptions {
    /// Root of new UIDs (digits and dots, at most 24 characters; default `2.25`). Use your
    /// organisation's registered root in a deployment.
    pub uid_root: String,
    /// Derive every new UID from this text (and the instance's role) instead of randomly: the
    /// same inputs then give the same bytes. For tests; leave `None` in practice.
    pub uid_seed: Option<String>,
    /// Content date and time (`YYYYMMDD`, `HHMMSS`); default the current UTC time.
    pub content_date_time: Option<(String, String)>,
    /// Series Number of the first result series; each further one adds 1.
    pub first_series_number: u32,
    /// Manufacturer.
    pub manufacturer: String,
    /// Software Versions (default imhost's version).
    pub software_version: String,
}

impl Default for ResultOptions {
    fn default() -> Self {
        ResultOptions {
            uid_root: DEFAULT_UID_ROOT.to_string(),
            uid_seed: None,
            content_date_time: None,
            first_series_number: 900,
            manufacturer: "imhost".to_string(),
            software_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

impl ResultOptions {
    /// Options from a JSON object: `uid_root`, `uid_seed`, `content_date` with `content_time`,
    /// `first_series_number` (every key optional; unknown keys are refused). Validated.
    pub fn from_json(value: &Value) -> Result<ResultOptions> {
        let bad = |m: String| Error::invalid_argument(format!("DICOM options: {m}"));
        let object = value.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
        let mut o = ResultOptions::default();
        let text = |key: &str| -> Result<Option<String>> {
            match object.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(bad(format!("{key} must be a string"))),
            }
        };
        for key in object.keys() {
            if !["uid_root", "uid_seed", "content_date", "content_time", "first_series_number"].contains(&key.as_str())
            {
                return Err(bad(format!("unknown key '{key}'")));
            }
        }
        if let Some(root) = text("uid_root")? {
            o.uid_root = root;
        }
        o.uid_seed = text("uid_seed")?;
        match (text("content_date")?, text("content_time")?) {
            (Some(d), Some(t)) => o.content_date_time = Some((d, t)),
            (None, None) => {}
            _ => return Err(bad("content_date and content_time go together".into())),
        }
        if let Some(n) = object.get("first_series_number") {
            o.first_series_number = n
                .as_u64()
                .filter(|&n| (1..=1_000_000).contains(&n))
                .ok_or_else(|| bad("first_series_number must be an integer from 1 to 1000000".into()))?
                as u32;
        }
        o.validate()?;
        Ok(o)
    }

    /// Check the UID root and the fixed content date/time.
    pub fn validate(&self) -> Result<()> {
        let root = &self.uid_root;
        let digits_ok = root
            .split('.')
            .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) && (c == "0" || !c.starts_with('0')));
        if root.is_empty() || root.len() > 24 || !digits_ok {
            return Err(Error::invalid_argument(format!(
                "UID root '{root}' must be digits separated by dots (no leading zeros), at most 24 characters"
            )));
        }
        if let Some((d, t)) = &self.content_date_time
            && (d.len() != 8
                || !d.bytes().all(|b| b.is_ascii_digit())
                || t.len() < 6
                || !t.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
        {
            return Err(Error::invalid_argument("content date/time must be YYYYMMDD and HHMMSS"));
        }
        Ok(())
    }
}

/// What results are derived from: the source series' identifiers and grid.
#[derive(Debug, Clone)]
pub struct ResultSource {
    /// Study-level identifiers (patient, study, frame of reference).
    pub study: InstanceIds,
    /// The source Series Instance UID (`None`: no DICOM source; results start a new study).
    pub series_instance_uid: Option<String>,
    /// The source instances (by frame then slice).
    pub instances: Vec<SourceInstance>,
    /// The spatial grid of the source: results must lie on it.
    pub geometry: Geometry,
    /// Its size `[ni, nj, nk]`.
    pub shape: [usize; 3],
    /// The temporal average of a 4-D source (HU), written as a CT series the maps reference
    /// first; `None` for a 3-D source or where not asked for.
    pub average: Option<std::sync::Arc<Volume<i16>>>,
}

impl ResultSource {
    /// The source of a series read from DICOM.
    pub fn from_series(series: &DicomSeries) -> Result<ResultSource> {
        let study =
            series.study().cloned().ok_or_else(|| Error::invalid_argument("the DICOM series has no instances"))?;
        let [ni, nj, nk, _] = series.volume.shape();
        Ok(ResultSource {
            study,
            series_instance_uid: Some(series.series_instance_uid.clone()),
            instances: series.instances.clone(),
            geometry: *series.volume.geometry(),
            shape: [ni, nj, nk],
            average: None,
        })
    }

    /// The same source with the temporal average of `volume` (the 4-D series it describes)
    /// attached, so that the results include it as a derived CT series: each voxel the mean of
    /// its finite values over the frames, rounded to whole HU (−1024 where no frame has one).
    /// A 3-D volume, a volume off the source's grid or a source that is not DICOM is returned
    /// unchanged.
    pub fn with_temporal_average(mut self, volume: &AnyVolume) -> Result<ResultSource> {
        let [ni, nj, nk, nt] = volume.shape();
        if !volume.is_4d() || nt < 2 || [ni, nj, nk] != self.shape || self.series_instance_uid.is_none() {
            return Ok(self);
        }
        let n = ni * nj * nk;
        crate::memory::check(crate::memory::bytes_of(&[n], 8 + 4 + 2), "the temporal average")?;
        let mut sum = ndarray::Array3::<f64>::zeros((ni, nj, nk).f());
        let mut count = ndarray::Array3::<u32>::zeros((ni, nj, nk).f());
        crate::with_volume!(volume, v => {
            for t in 0..nt {
                ndarray::Zip::from(&mut sum).and(&mut count).and(v.view().frame(t)).for_each(|s, c, &x| {
                    let x = crate::dtype::Voxel::to_f64(x);
                    if x.is_finite() {
                        *s += x;
                        *c += 1;
                    }
                });
            }
        });
        let mut mean = ndarray::Array3::<i16>::zeros((ni, nj, nk).f());
        ndarray::Zip::from(&mut mean).and(&sum).and(&count).for_each(|m, &s, &c| {
            *m = if c == 0 { -1024 } else { (s / f64::from(c)).round().clamp(-32768.0, 32767.0) as i16 };
        });
        self.average = Some(std::sync::Arc::new(Volume::new_3d(mean, *volume.geometry())?));
        Ok(self)
    }

    /// A source without DICOM (a NIfTI file): results start a new study and frame of reference
    /// (UIDs from `options`) with empty patient identifiers.
    pub fn new_study(geometry: Geometry, shape: [usize; 3], options: &ResultOptions) -> ResultSource {
        let mut uids = Uids::new(options);
        let (date, time) = options.content_date_time.clone().unwrap_or_else(utc_now);
        let study = InstanceIds {
            study_date: date,
            study_time: time,
            study_id: "1".into(),
            study_instance_uid: uids.next("study"),
            frame_of_reference_uid: uids.next("frame-of-reference"),
            ..InstanceIds::default()
        };
        ResultSource { study, series_instance_uid: None, instances: vec![], geometry, shape, average: None }
    }

    /// The instance of the first frame at slice `k`.
    fn slice_instance(&self, k: usize) -> Option<&SourceInstance> {
        self.instances.iter().find(|i| i.frame == 0 && i.slice == k)
    }
}

/// What kind of DICOM object a result is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultKind {
    /// A Parametric Map (one float map).
    ParametricMap,
    /// A binary Segmentation (one label map).
    Segmentation,
    /// A TID 1500 measurement report (Comprehensive SR).
    MeasurementReport,
    /// A Secondary Capture of the preview.
    SecondaryCapture,
    /// One slice of the derived CT series (the temporal average of a 4-D source).
    ReferenceImage,
}

/// One DICOM instance written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DicomResult {
    /// The model output it holds (`cbf`, `lesions`, `report`, `preview`).
    pub output: String,
    /// Its kind.
    pub kind: ResultKind,
    /// A file name for it (`pm_cbf.dcm`).
    pub file_name: String,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Series Instance UID (one series per result).
    pub series_instance_uid: String,
    /// The Part 10 file's bytes.
    #[serde(skip)]
    pub bytes: Vec<u8>,
}

/// The results of one run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DicomResults {
    /// The instances, in the order maps, segmentations, report, preview.
    pub instances: Vec<DicomResult>,
    /// Outputs not written, with the reason (e.g. a 4-D map).
    pub skipped: Vec<(String, String)>,
}

impl DicomResults {
    /// What the results hold (`imhost-dicom-results/1`): the model, the source series and
    /// study, every instance (output, kind, file name, SOP class/instance and series UIDs) and
    /// the outputs skipped with their reason. `dicom-results.json` and `imh_dicom_results_json`.
    pub fn index_json(&self, manifest: &Manifest, source: &ResultSource) -> Value {
        serde_json::json!({
            "schema": "imhost-dicom-results/1",
            "research_use_only": true,
            "model": {"id": manifest.id, "version": manifest.version},
            "source_series_instance_uid": source.series_instance_uid,
            "study_instance_uid": source.study.study_instance_uid,
            "instances": self.instances,
            "skipped": self.skipped.iter().map(|(n, why)| serde_json::json!({"output": n, "reason": why})).collect::<Vec<_>>(),
        })
    }

    /// Write every instance into `dir` (created if needed), each file atomically.
    pub fn write_to(&self, dir: &std::path::Path) -> Result<()> {
        // File names come from output names: never a path (a manifest used unvalidated).
        if let Some(r) = self.instances.iter().find(|r| !crate::registry::manifest::valid_output_name(&r.file_name)) {
            return Err(Error::invalid_argument(format!("'{}' is not a plain file name", r.file_name)));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::from(e).in_file(dir))?;
        for r in &self.instances {
            crate::io::output::write_atomically(&dir.join(&r.file_name), |w| Ok(w.write_all(&r.bytes)?))?;
        }
        Ok(())
    }
}

/// New UIDs: random (UUID-style) or derived from the seed and each UID's role.
struct Uids {
    root: String,
    seed: Option<String>,
}

impl Uids {
    fn new(options: &ResultOptions) -> Uids {
        Uids { root: options.uid_root.clone(), seed: options.uid_seed.clone() }
    }

    fn next(&mut self, role: &str) -> String {
        let n: u128 = match &self.seed {
            Some(seed) => fnv1a_128(format!("{seed}\u{0}{role}").as_bytes()),
            None => {
                let a = u64::from_str_radix(&crate::io::output::random_name(), 16).unwrap_or(0);
                let b = u64::from_str_radix(&crate::io::output::random_name(), 16).unwrap_or(0);
                (u128::from(a) << 64) | u128::from(b)
            }
        };
        // At most 64 characters: the root is ≤ 24, a u128 ≤ 39 digits; no leading zero.
        format!("{}.{}", self.root, n.max(1))
    }
}

/// FNV-1a, 128-bit: a stable hash (the standard library's may change between releases).
fn fnv1a_128(bytes: &[u8]) -> u128 {
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for &b in bytes {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000000001000000000000000000013B);
    }
    h
}

// --- elements -----------------------------------------------------------------------------------

/// The most characters a value of `vr` may hold (per value).
fn max_chars(vr: VR) -> usize {
    match vr {
        VR::CS | VR::SH => 16,
        VR::LO | VR::PN => 64,
        VR::ST => 1024,
        VR::LT => 10240,
        _ => usize::MAX,
    }
}

/// A text element, cut to what its VR allows (CS upper-cased, backslashes replaced where the
/// VR is single-valued text).
fn text(tag: Tag, vr: VR, value: &str) -> Elem {
    let mut v: String = match vr {
        VR::CS => value
            .to_uppercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == ' ' { c } else { '_' })
            .collect(),
        VR::LO | VR::SH | VR::ST | VR::LT | VR::UT => value.replace('\\', "/"),
        _ => value.to_string(),
    };
    if v.chars().count() > max_chars(vr) {
        v = v.chars().take(max_chars(vr)).collect();
    }
    DataElement::new(tag, vr, PrimitiveValue::from(v))
}

/// A multi-valued code string (`DERIVED\\PRIMARY`), each value as [`text`] makes it.
fn cs_values(tag: Tag, values: &[&str]) -> Elem {
    let cleaned: Vec<String> = values
        .iter()
        .map(|v| {
            v.to_uppercase().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ' ').take(16).collect()
        })
        .collect();
    DataElement::new(tag, VR::CS, PrimitiveValue::from(cleaned.join("\\")))
}

fn uid(tag: Tag, value: &str) -> Elem {
    DataElement::new(tag, VR::UI, PrimitiveValue::from(value))
}

fn us(tag: Tag, value: u16) -> Elem {
    DataElement::new(tag, VR::US, PrimitiveValue::from(value))
}

fn int_string(tag: Tag, value: i64) -> Elem {
    DataElement::new(tag, VR::IS, PrimitiveValue::from(value.to_string()))
}

fn fd(tag: Tag, value: f64) -> Elem {
    DataElement::new(tag, VR::FD, PrimitiveValue::from(value))
}

/// A decimal string of at most 16 characters (DS), as exact as fits: the shortest exact form
/// when it fits, else the closest of the fixed and exponent forms that fit.
fn ds_value(v: f64) -> String {
    if !v.is_finite() {
        return "0".into();
    }
    let plain = format!("{v}");
    if plain.len() <= 16 {
        return plain;
    }
    let error = |s: &str| s.parse::<f64>().map_or(f64::INFINITY, |x| (x - v).abs());
    (0..=15)
        .flat_map(|p| [format!("{v:.p$}"), format!("{v:.p$e}")])
        .filter(|s| s.len() <= 16)
        .min_by(|a, b| error(a).total_cmp(&error(b)))
        .unwrap_or_else(|| "0".into())
}

fn ds(tag: Tag, values: &[f64]) -> Elem {
    let s = values.iter().map(|v| ds_value(*v)).collect::<Vec<_>>().join("\\");
    DataElement::new(tag, VR::DS, PrimitiveValue::from(s))
}

fn empty(tag: Tag, vr: VR) -> Elem {
    DataElement::new(tag, vr, PrimitiveValue::Empty)
}

fn seq(tag: Tag, items: Vec<Obj>) -> Elem {
    DataElement::new(tag, VR::SQ, DataSetSequence::new(items, Length::UNDEFINED))
}

fn obj(elements: Vec<Elem>) -> Obj {
    InMemDicomObject::from_element_iter(elements)
}

fn code_item(c: &Code) -> Obj {
    obj(vec![
        text(tags::CODE_VALUE, VR::SH, &c.value),
        text(tags::CODING_SCHEME_DESIGNATOR, VR::SH, &c.scheme),
        text(tags::CODE_MEANING, VR::LO, &c.meaning),
    ])
}

fn code_seq(tag: Tag, c: &Code) -> Elem {
    seq(tag, vec![code_item(c)])
}

/// A code (`scheme`, `value`, `meaning`).
fn code(scheme: &str, value: &str, meaning: &str) -> Code {
    Code { scheme: scheme.into(), value: value.into(), meaning: meaning.into() }
}

/// A code of imhost's private coding scheme (`99IMHOST`: the `99` prefix marks a private scheme).
fn own_code(value: &str, meaning: &str) -> Code {
    code("99IMHOST", value, meaning)
}

/// sRGB (0–255) to DICOM's scaled CIELab (D65): L* 0–100 → 0–65535, a*/b* −128–127 → 0–65535.
pub fn srgb_to_dicom_lab(rgb: [u8; 3]) -> [u16; 3] {
    let lin = |c: u8| {
        let c = f64::from(c) / 255.0;
        if c <= 0.04045 { c / 12.92 } else { ((c + 0.055) / 1.055).powf(2.4) }
    };
    let (r, g, b) = (lin(rgb[0]), lin(rgb[1]), lin(rgb[2]));
    let x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
    let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    let z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
    let f =
        |t: f64| if t > (6.0f64 / 29.0).powi(3) { t.cbrt() } else { t / (3.0 * (6.0f64 / 29.0).powi(2)) + 4.0 / 29.0 };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    let (l, a, bb) = (116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz));
    let scale = |v: f64, lo: f64, hi: f64| (((v - lo) / (hi - lo)).clamp(0.0, 1.0) * 65535.0).round() as u16;
    [scale(l, 0.0, 100.0), scale(a, -128.0, 127.0), scale(bb, -128.0, 127.0)]
}

/// The current UTC date and time as DICOM DA and TM.
fn utc_now() -> (String, String) {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (format!("{y:04}{m:02}{d:02}"), format!("{:02}{:02}{:02}", rem / 3600, (rem % 3600) / 60, rem % 60))
}

// --- the writer ---------------------------------------------------------------------------------

/// Everything one run's instances share.
struct Writer<'a> {
    source: &'a ResultSource,
    manifest: &'a Manifest,
    options: &'a ResultOptions,
    uids: Uids,
    date: String,
    time: String,
    series_number: u32,
    /// The UIDs of the temporal-average series (series, then one instance per slice), drawn
    /// before any result so that each map and segmentation can reference it.
    average: Option<(String, Vec<String>)>,
}

/// One instance's identity.
struct Identity {
    sop_class: &'static str,
    sop_instance: String,
    series: String,
    series_number: u32,
}

impl Writer<'_> {
    fn identity(&mut self, sop_class: &'static str, role: &str) -> Identity {
        let series_number = self.series_number;
        self.series_number += 1;
        Identity {
            sop_class,
            sop_instance: self.uids.next(&format!("{role}/instance")),
            series: self.uids.next(&format!("{role}/series")),
            series_number,
        }
    }

    /// SOP Common, Patient, General Study, General Series, General Equipment (and the Enhanced
    /// General Equipment attributes, which are the same four).
    fn common(&self, id: &Identity, modality: &str, description: &str) -> Vec<Elem> {
        let s = &self.source.study;
        let (study_date, study_time) = (s.study_date.clone(), s.study_time.clone());
        let mut e = vec![
            text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
            text(tags::INSTANCE_CREATION_DATE, VR::DA, &self.date),
            text(tags::INSTANCE_CREATION_TIME, VR::TM, &self.time),
            uid(tags::SOP_CLASS_UID, id.sop_class),
            uid(tags::SOP_INSTANCE_UID, &id.sop_instance),
            text(tags::STUDY_DATE, VR::DA, &study_date),
            text(tags::CONTENT_DATE, VR::DA, &self.date),
            text(tags::STUDY_TIME, VR::TM, &study_time),
            text(tags::CONTENT_TIME, VR::TM, &self.time),
            text(tags::ACCESSION_NUMBER, VR::SH, &s.accession_number),
            text(tags::MODALITY, VR::CS, modality),
            text(tags::MANUFACTURER, VR::LO, &self.options.manufacturer),
            text(tags::REFERRING_PHYSICIAN_NAME, VR::PN, &s.referring_physician_name),
            text(tags::STUDY_DESCRIPTION, VR::LO, &s.study_description),
            text(tags::SERIES_DESCRIPTION, VR::LO, &format!("{description} - RESEARCH USE ONLY")),
            text(tags::MANUFACTURER_MODEL_NAME, VR::LO, &format!("imhost {}", self.manifest.id)),
            text(tags::PATIENT_NAME, VR::PN, &s.patient_name),
            text(tags::PATIENT_ID, VR::LO, &s.patient_id),
            text(tags::PATIENT_BIRTH_DATE, VR::DA, &s.patient_birth_date),
            text(tags::PATIENT_SEX, VR::CS, &s.patient_sex),
            text(tags::DEVICE_SERIAL_NUMBER, VR::LO, "imhost"),
            text(tags::SOFTWARE_VERSIONS, VR::LO, &self.options.software_version),
            uid(tags::STUDY_INSTANCE_UID, &s.study_instance_uid),
            uid(tags::SERIES_INSTANCE_UID, &id.series),
            text(tags::STUDY_ID, VR::SH, &s.study_id),
            int_string(tags::SERIES_NUMBER, i64::from(id.series_number)),
            int_string(tags::INSTANCE_NUMBER, 1),
        ];
        // Images (not the SR document) say what was examined: viewers and validators then know
        // whether laterality applies.
        if modality != "SR" {
            if s.body_part_examined.is_empty() {
                // Unknown body part: for the Parametric Map and Secondary Capture IODs dciodvfy
                // then requires Laterality (Type 2C: empty, as it is unknown); for a SEG it
                // refuses it.
                if modality == "OT" {
                    e.push(empty(tags::LATERALITY, VR::CS));
                }
            } else {
                e.push(text(tags::BODY_PART_EXAMINED, VR::CS, &s.body_part_examined));
            }
        }
        e
    }

    /// Frame of Reference, Common Instance Reference and the source images.
    fn references(&self) -> Vec<Elem> {
        let mut out = vec![
            uid(tags::FRAME_OF_REFERENCE_UID, &self.source.study.frame_of_reference_uid),
            empty(tags::POSITION_REFERENCE_INDICATOR, VR::LO),
        ];
        if let Some(series) = &self.source.series_instance_uid {
            // Each instance once (a multi-frame source fills several slots).
            let mut seen = std::collections::BTreeSet::new();
            let instances: Vec<Obj> = self
                .source
                .instances
                .iter()
                .filter(|i| seen.insert(i.ids.sop_instance_uid.as_str()))
                .map(|i| referenced_instance(&i.ids))
                .collect();
            let mut series_items = Vec::with_capacity(2);
            // The temporal average first: viewers that overlay a map on a volume (OHIF) take the
            // first referenced series as the one to draw it on, and that must be 3-D.
            if let Some((average, slices)) = &self.average {
                let items = slices
                    .iter()
                    .map(|i| {
                        obj(vec![
                            uid(tags::REFERENCED_SOP_CLASS_UID, CT_IMAGE_STORAGE),
                            uid(tags::REFERENCED_SOP_INSTANCE_UID, i),
                        ])
                    })
                    .collect();
                series_items.push(obj(vec![
                    seq(tags::REFERENCED_INSTANCE_SEQUENCE, items),
                    uid(tags::SERIES_INSTANCE_UID, average),
                ]));
            }
            series_items.push(obj(vec![
                seq(tags::REFERENCED_INSTANCE_SEQUENCE, instances),
                uid(tags::SERIES_INSTANCE_UID, series),
            ]));
            out.push(seq(tags::REFERENCED_SERIES_SEQUENCE, series_items));
            let slices: Vec<Obj> = (0..self.source.shape[2])
                .filter_map(|k| self.source.slice_instance(k))
                .map(|i| referenced_instance(&i.ids))
                .collect();
            out.push(seq(tags::SOURCE_IMAGE_SEQUENCE, slices));
        }
        out
    }

    /// Shared functional groups: plane orientation and pixel measures.
    fn shared_geometry(&self) -> Vec<Elem> {
        let g = &self.source.geometry;
        let plane = g.dicom_plane(0);
        vec![
            seq(
                tags::PLANE_ORIENTATION_SEQUENCE,
                vec![obj(vec![ds(tags::IMAGE_ORIENTATION_PATIENT, &plane.image_orientation)])],
            ),
            seq(
                tags::PIXEL_MEASURES_SEQUENCE,
                vec![obj(vec![
                    ds(tags::SLICE_THICKNESS, &[g.spacing[2]]),
                    ds(tags::SPACING_BETWEEN_SLICES, &[g.spacing[2]]),
                    ds(tags::PIXEL_SPACING, &plane.pixel_spacing),
                ])],
            ),
        ]
    }

    /// A per-frame item's position and derivation for slice `k`.
    fn frame_geometry(&self, k: usize, derivation: &Code) -> Vec<Elem> {
        let mut out = vec![seq(
            tags::PLANE_POSITION_SEQUENCE,
            vec![obj(vec![ds(tags::IMAGE_POSITION_PATIENT, &self.source.geometry.dicom_plane(k).image_position)])],
        )];
        if let Some(i) = self.source.slice_instance(k) {
            let mut source = referenced_frame(i);
            source.put(text(tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, "YES"));
            source.put(code_seq(
                tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                &code("DCM", "121322", "Source image for image processing operation"),
            ));
            out.push(seq(
                tags::DERIVATION_IMAGE_SEQUENCE,
                vec![obj(vec![
                    seq(tags::SOURCE_IMAGE_SEQUENCE, vec![source]),
                    code_seq(tags::DERIVATION_CODE_SEQUENCE, derivation),
                ])],
            ));
        }
        out
    }

    fn dimensions(&mut self, role: &str, indices: &[(Tag, Tag, &str)]) -> Vec<Elem> {
        let organisation = self.uids.next(&format!("{role}/dimensions"));
        vec![
            seq(
                tags::DIMENSION_ORGANIZATION_SEQUENCE,
                vec![obj(vec![uid(tags::DIMENSION_ORGANIZATION_UID, &organisation)])],
            ),
            seq(
                tags::DIMENSION_INDEX_SEQUENCE,
                indices
                    .iter()
                    .map(|(pointer, group, label)| {
                        obj(vec![
                            uid(tags::DIMENSION_ORGANIZATION_UID, &organisation),
                            DataElement::new(
                                tags::DIMENSION_INDEX_POINTER,
                                VR::AT,
                                PrimitiveValue::Tags(vec![*pointer].into()),
                            ),
                            DataElement::new(
                                tags::FUNCTIONAL_GROUP_POINTER,
                                VR::AT,
                                PrimitiveValue::Tags(vec![*group].into()),
                            ),
                            text(tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label),
                        ])
                    })
                    .collect(),
            ),
        ]
    }

    /// The Part 10 bytes of an instance: `elements` through dicom-rs, then `pixels` (the last
    /// element: tag, VR and little-endian bytes) appended as explicit VR little endian straight
    /// from the caller's buffer, so a map's 16 MB are copied once.
    fn file(&self, id: &Identity, elements: Vec<Elem>, pixels: Option<(Tag, VR, &[u8])>) -> Result<Vec<u8>> {
        let meta = FileMetaTableBuilder::new()
            .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
            .media_storage_sop_class_uid(id.sop_class)
            .media_storage_sop_instance_uid(id.sop_instance.as_str())
            .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
            .implementation_version_name(format!("IMHOST_{}", env!("CARGO_PKG_VERSION").replace('.', "_")));
        let file = obj(elements).with_meta(meta).map_err(|e| Error::internal(format!("DICOM meta: {e}")))?;
        let size = pixels.map_or(0, |(_, _, b)| b.len());
        let mut bytes = Vec::with_capacity(size + (1 << 20));
        file.write_all(&mut bytes).map_err(|e| Error::internal(format!("DICOM write: {e}")))?;
        if let Some((tag, vr, data)) = pixels {
            let padded = data.len() + data.len() % 2;
            let length = u32::try_from(padded).ok().filter(|&l| l < u32::MAX).ok_or_else(|| {
                Error::too_large(format!("{} bytes of pixel data do not fit one DICOM element", data.len()))
            })?;
            bytes.extend_from_slice(&tag.group().to_le_bytes());
            bytes.extend_from_slice(&tag.element().to_le_bytes());
            bytes.extend_from_slice(vr.to_bytes().as_slice());
            bytes.extend_from_slice(&[0, 0]);
            bytes.extend_from_slice(&length.to_le_bytes());
            bytes.extend_from_slice(data);
            if padded > data.len() {
                bytes.push(0);
            }
        }
        Ok(bytes)
    }

    fn result(&self, output: &str, kind: ResultKind, file_name: String, id: Identity, bytes: Vec<u8>) -> DicomResult {
        DicomResult {
            output: output.to_string(),
            kind,
            file_name,
            sop_class_uid: id.sop_class.to_string(),
            sop_instance_uid: id.sop_instance,
            series_instance_uid: id.series,
            bytes,
        }
    }

    /// Where the model came from, for the algorithm identification.
    fn learned(&self) -> bool {
        let id = &self.manifest.id;
        !(id == "mip" || (id.starts_with("perfusion-") && id != "perfusion-cnn"))
    }
}

/// The Image Pixel attributes of a one-sample grey image of `ni` columns and `nj` rows, all
/// `bits` bits stored.
fn monochrome_pixels(ni: usize, nj: usize, bits: u16, signed: bool) -> [Elem; 8] {
    [
        us(tags::SAMPLES_PER_PIXEL, 1),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        us(tags::ROWS, nj as u16),
        us(tags::COLUMNS, ni as u16),
        us(tags::BITS_ALLOCATED, bits),
        us(tags::BITS_STORED, bits),
        us(tags::HIGH_BIT, bits - 1),
        us(tags::PIXEL_REPRESENTATION, u16::from(signed)),
    ]
}

fn referenced_instance(ids: &InstanceIds) -> Obj {
    obj(vec![
        uid(tags::REFERENCED_SOP_CLASS_UID, &ids.sop_class_uid),
        uid(tags::REFERENCED_SOP_INSTANCE_UID, &ids.sop_instance_uid),
    ])
}

/// A per-frame Frame Content item with the frame's dimension index values (1-based).
fn frame_content(indices: &[u32]) -> Elem {
    seq(
        tags::FRAME_CONTENT_SEQUENCE,
        vec![obj(vec![DataElement::new(
            tags::DIMENSION_INDEX_VALUES,
            VR::UL,
            PrimitiveValue::U32(indices.to_vec().into()),
        )])],
    )
}

/// A reference to the instance (and, in a multi-frame source, the frame) of one source slice.
fn referenced_frame(i: &SourceInstance) -> Obj {
    let mut item = referenced_instance(&i.ids);
    if let Some(f) = i.instance_frame {
        item.put(int_string(tags::REFERENCED_FRAME_NUMBER, f as i64 + 1));
    }
    item
}

/// Check that a result volume lies on the source's grid.
fn on_grid(
    name: &str,
    geometry: &Geometry,
    shape: [usize; 4],
    source: &ResultSource,
) -> std::result::Result<(), String> {
    if shape[3] != 1 {
        return Err(format!("{} frames (only 3-D results are written as DICOM)", shape[3]));
    }
    if shape[..3] != source.shape {
        return Err(format!("{name} is {:?}, the source series {:?}", &shape[..3], source.shape));
    }
    let g = &source.geometry;
    let close = |a: &[f64], b: &[f64], tol: f64| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol);
    let same = close(&geometry.spacing, &g.spacing, 1e-4)
        && close(&geometry.origin, &g.origin, 1e-3)
        && (0..3).all(|r| close(&geometry.direction[r], &g.direction[r], 1e-4));
    if !same {
        return Err(format!("{name} is not on the source series' grid"));
    }
    Ok(())
}

/// Window centre and width from the 1st and 99th percentiles of the finite values (of at most
/// 262 144 of them, evenly strided: a display default, found in linear time).
fn window(values: &[f32]) -> (f64, f64) {
    let stride = values.len().div_ceil(1 << 18).max(1);
    let mut finite: Vec<f32> = values.iter().step_by(stride).copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return (0.0, 1.0);
    }
    let mut at = |q: f64| {
        let n = ((finite.len() - 1) as f64 * q).round() as usize;
        f64::from(*finite.select_nth_unstable_by(n, f32::total_cmp).1)
    };
    let (lo, hi) = (at(0.01), at(0.99));
    let width = hi - lo;
    ((lo + hi) / 2.0, if width > 1e-6 { width } else { 1.0 })
}

fn parametric_map(w: &mut Writer<'_>, spec: &OutputSpec, map: &Volume<f32>) -> Result<DicomResult> {
    let [ni, nj, nk, _] = map.shape();
    let id = w.identity(PARAMETRIC_MAP_STORAGE, &format!("map/{}", spec.name));
    let description = if spec.description.is_empty() { spec.name.clone() } else { spec.description.clone() };
    let mut e = w.common(&id, "OT", &format!("{} {}", spec.name.to_uppercase(), w.manifest.name));
    e.extend(w.references());
    // Pixels, frame k = slice k, row j, column i (float32, little endian).
    let data = map.data();
    let pixels: std::borrow::Cow<'_, [f32]> = match data.as_slice_memory_order() {
        // Column-major (i fastest, then j, then k) is DICOM's frame order: no gather needed.
        Some(s) if data.strides()[0] == 1 && data.strides()[1] == ni as isize => std::borrow::Cow::Borrowed(s),
        _ => {
            let mut gathered = Vec::with_capacity(ni * nj * nk);
            for k in 0..nk {
                for j in 0..nj {
                    for i in 0..ni {
                        gathered.push(data[[i, j, k, 0]]);
                    }
                }
            }
            std::borrow::Cow::Owned(gathered)
        }
    };
    let (mut min, mut max) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in pixels.iter() {
        // NaN compares false both ways; ±inf are left out.
        if v.is_finite() {
            min = min.min(v);
            max = max.max(v);
        }
    }
    let (min, max) = if min.is_finite() { (f64::from(min), f64::from(max)) } else { (0.0, 0.0) };
    let (center, width) = window(&pixels);
    let image_type = ["DERIVED", "PRIMARY", "VOLUME", "QUANTITY"];
    let unit = spec.unit_ucum.clone().unwrap_or_else(|| "1".into());
    let unit_meaning = spec.unit.clone().unwrap_or_else(|| unit.clone());
    let mut mapping = vec![
        text(tags::LUT_EXPLANATION, VR::LO, &description),
        code_seq(tags::MEASUREMENT_UNITS_CODE_SEQUENCE, &code("UCUM", &unit, &unit_meaning)),
        text(tags::LUT_LABEL, VR::SH, &spec.name.to_uppercase()),
        fd(tags::DOUBLE_FLOAT_REAL_WORLD_VALUE_LAST_VALUE_MAPPED, max),
        fd(tags::DOUBLE_FLOAT_REAL_WORLD_VALUE_FIRST_VALUE_MAPPED, min),
        fd(tags::REAL_WORLD_VALUE_INTERCEPT, 0.0),
        fd(tags::REAL_WORLD_VALUE_SLOPE, 1.0),
    ];
    if let Some(q) = &spec.quantity {
        mapping.push(seq(
            tags::QUANTITY_DEFINITION_SEQUENCE,
            vec![obj(vec![
                text(tags::VALUE_TYPE, VR::CS, "CODE"),
                code_seq(tags::CONCEPT_NAME_CODE_SEQUENCE, &code("SCT", "246205007", "Quantity")),
                code_seq(tags::CONCEPT_CODE_SEQUENCE, q),
            ])],
        ));
    }
    let mut shared = w.shared_geometry();
    shared.extend([
        seq(
            tags::FRAME_VOILUT_SEQUENCE,
            vec![obj(vec![
                ds(tags::WINDOW_CENTER, &[center]),
                ds(tags::WINDOW_WIDTH, &[width]),
                // Maps span less than 1 unit (CBV in ml/100 g): an exact linear window.
                text(tags::VOILUT_FUNCTION, VR::CS, "LINEAR_EXACT"),
            ])],
        ),
        seq(
            tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
            vec![obj(vec![
                ds(tags::RESCALE_INTERCEPT, &[0.0]),
                ds(tags::RESCALE_SLOPE, &[1.0]),
                text(tags::RESCALE_TYPE, VR::LO, "US"),
            ])],
        ),
        seq(tags::PARAMETRIC_MAP_FRAME_TYPE_SEQUENCE, vec![obj(vec![cs_values(tags::FRAME_TYPE, &image_type)])]),
        seq(tags::REAL_WORLD_VALUE_MAPPING_SEQUENCE, vec![obj(mapping)]),
    ]);
    let derivation = code("DCM", "112187", "Unspecified method of calculation");
    let per_frame: Vec<Obj> = (0..nk)
        .map(|k| {
            let mut f = w.frame_geometry(k, &derivation);
            f.push(frame_content(&[k as u32 + 1]));
            obj(f)
        })
        .collect();
    e.extend(w.dimensions(
        &format!("map/{}", spec.name),
        &[(tags::IMAGE_POSITION_PATIENT, tags::PLANE_POSITION_SEQUENCE, "Image Position Patient")],
    ));
    e.extend([
        cs_values(tags::IMAGE_TYPE, &image_type),
        text(tags::PIXEL_PRESENTATION, VR::CS, "MONOCHROME"),
        text(tags::CONTENT_QUALIFICATION, VR::CS, "RESEARCH"),
        text(tags::DIMENSION_ORGANIZATION_TYPE, VR::CS, "3D"),
        us(tags::SAMPLES_PER_PIXEL, 1),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        int_string(tags::NUMBER_OF_FRAMES, nk as i64),
        us(tags::ROWS, nj as u16),
        us(tags::COLUMNS, ni as u16),
        us(tags::BITS_ALLOCATED, 32),
        text(tags::BURNED_IN_ANNOTATION, VR::CS, "NO"),
        text(tags::RECOGNIZABLE_VISUAL_FEATURES, VR::CS, "NO"),
        text(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
        seq(tags::ACQUISITION_CONTEXT_SEQUENCE, vec![]),
        text(tags::CONTENT_LABEL, VR::CS, &spec.name),
        text(tags::CONTENT_DESCRIPTION, VR::LO, &description),
        empty(tags::CONTENT_CREATOR_NAME, VR::PN),
        text(tags::PRESENTATION_LUT_SHAPE, VR::CS, "IDENTITY"),
        seq(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![obj(shared)]),
        seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame),
    ]);
    let little_endian = float_bytes(&pixels);
    let bytes = w.file(&id, e, Some((tags::FLOAT_PIXEL_DATA, VR::OF, &little_endian)))?;
    Ok(w.result(&spec.name, ResultKind::ParametricMap, format!("pm_{}.dcm", spec.name), id, bytes))
}

/// float32 values as little-endian bytes.
fn float_bytes(values: &[f32]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        return std::borrow::Cow::Borrowed(bytemuck::cast_slice::<f32, u8>(values));
    }
    std::borrow::Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// A written segmentation: its instance and the segment number of each label value.
struct WrittenSegmentation {
    sop_instance_uid: String,
    series_instance_uid: String,
    segments: BTreeMap<u8, u16>,
}

fn segmentation(
    w: &mut Writer<'_>,
    spec: &OutputSpec,
    labels: &Volume<u8>,
) -> Result<(DicomResult, WrittenSegmentation)> {
    let [ni, nj, nk, _] = labels.shape();
    let id = w.identity(SEGMENTATION_STORAGE, &format!("seg/{}", spec.name));
    let mut e = w.common(&id, "SEG", &format!("{} {}", spec.name, w.manifest.name));
    e.extend(w.references());
    let family = if w.learned() {
        code("DCM", "123110", "Artificial Intelligence")
    } else {
        // Thresholds of filtered maps: the nearest family of CID 7162.
        code("DCM", "123101", "Neighborhood Analysis")
    };
    let default_category = code("SCT", "85756007", "Tissue");
    let mut segments = BTreeMap::new();
    let mut items = Vec::new();
    for (n, label) in spec.labels.iter().enumerate() {
        let number = n as u16 + 1;
        segments.insert(label.value, number);
        let mut algorithm = vec![
            code_seq(tags::ALGORITHM_FAMILY_CODE_SEQUENCE, &family),
            text(tags::ALGORITHM_VERSION, VR::LO, &w.manifest.version),
            text(tags::ALGORITHM_NAME, VR::LO, &w.manifest.name),
        ];
        if let Some(reference) = &w.manifest.reference {
            algorithm.push(text(tags::ALGORITHM_SOURCE, VR::LO, reference));
        }
        items.push(obj(vec![
            code_seq(
                tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
                label.category.as_ref().unwrap_or(&default_category),
            ),
            us(tags::SEGMENT_NUMBER, number),
            text(tags::SEGMENT_LABEL, VR::LO, &label.name),
            seq(tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE, vec![obj(algorithm)]),
            text(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC"),
            text(tags::SEGMENT_ALGORITHM_NAME, VR::LO, &w.manifest.name),
            DataElement::new(
                tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE,
                VR::US,
                PrimitiveValue::U16(srgb_to_dicom_lab(label.color).to_vec().into()),
            ),
            code_seq(tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE, label.property.as_ref().unwrap_or(&default_category)),
        ]));
    }
    // Frames: every slice of every segment, bits packed across frames, least significant first.
    let frames = spec.labels.len() * nk;
    let total_bits = frames * ni * nj;
    let mut bits = vec![0u8; total_bits.div_ceil(8) + (total_bits.div_ceil(8) % 2)];
    let data = labels.data();
    let mut at = 0usize;
    let derivation = code("DCM", "113076", "Segmentation");
    let mut per_frame = Vec::with_capacity(frames);
    for (n, label) in spec.labels.iter().enumerate() {
        for k in 0..nk {
            for j in 0..nj {
                for i in 0..ni {
                    if data[[i, j, k, 0]] == label.value {
                        bits[at / 8] |= 1 << (at % 8);
                    }
                    at += 1;
                }
            }
            let mut f = w.frame_geometry(k, &derivation);
            f.push(frame_content(&[n as u32 + 1, k as u32 + 1]));
            f.push(seq(
                tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                vec![obj(vec![us(tags::REFERENCED_SEGMENT_NUMBER, n as u16 + 1)])],
            ));
            per_frame.push(obj(f));
        }
    }
    e.extend(w.dimensions(
        &format!("seg/{}", spec.name),
        &[
            (tags::REFERENCED_SEGMENT_NUMBER, tags::SEGMENT_IDENTIFICATION_SEQUENCE, "Referenced Segment Number"),
            (tags::IMAGE_POSITION_PATIENT, tags::PLANE_POSITION_SEQUENCE, "Image Position Patient"),
        ],
    ));
    e.extend(monochrome_pixels(ni, nj, 1, false));
    e.extend([
        cs_values(tags::IMAGE_TYPE, &["DERIVED", "PRIMARY"]),
        int_string(tags::NUMBER_OF_FRAMES, frames as i64),
        text(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
        text(tags::SEGMENTATION_TYPE, VR::CS, "BINARY"),
        seq(tags::SEGMENT_SEQUENCE, items),
        text(tags::SEGMENTS_OVERLAP, VR::CS, "NO"),
        text(tags::CONTENT_LABEL, VR::CS, &spec.name),
        text(tags::CONTENT_DESCRIPTION, VR::LO, &spec.description),
        empty(tags::CONTENT_CREATOR_NAME, VR::PN),
        seq(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![obj(w.shared_geometry())]),
        seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame),
    ]);
    let bytes = w.file(&id, e, Some((tags::PIXEL_DATA, VR::OB, &bits)))?;
    let written = WrittenSegmentation {
        sop_instance_uid: id.sop_instance.clone(),
        series_instance_uid: id.series.clone(),
        segments,
    };
    Ok((w.result(&spec.name, ResultKind::Segmentation, format!("seg_{}.dcm", spec.name), id, bytes), written))
}

// --- the measurement report ---------------------------------------------------------------------

fn content_item(relationship: &str, value_type: &str, concept: &Code, mut rest: Vec<Elem>) -> Obj {
    let mut e = vec![
        text(tags::RELATIONSHIP_TYPE, VR::CS, relationship),
        text(tags::VALUE_TYPE, VR::CS, value_type),
        code_seq(tags::CONCEPT_NAME_CODE_SEQUENCE, concept),
    ];
    e.append(&mut rest);
    obj(e)
}

fn text_item(relationship: &str, concept: &Code, value: &str) -> Obj {
    content_item(relationship, "TEXT", concept, vec![text(tags::TEXT_VALUE, VR::UT, value)])
}

fn code_value_item(relationship: &str, concept: &Code, value: &Code) -> Obj {
    content_item(relationship, "CODE", concept, vec![code_seq(tags::CONCEPT_CODE_SEQUENCE, value)])
}

fn uid_item(relationship: &str, concept: &Code, value: &str) -> Obj {
    content_item(relationship, "UIDREF", concept, vec![uid(tags::UID, value)])
}

fn container(relationship: &str, concept: &Code, template: Option<&str>, children: Vec<Obj>) -> Obj {
    let mut rest = vec![text(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE")];
    if let Some(t) = template {
        rest.push(template_seq(t));
    }
    rest.push(seq(tags::CONTENT_SEQUENCE, children));
    content_item(relationship, "CONTAINER", concept, rest)
}

fn template_seq(id: &str) -> Elem {
    seq(
        tags::CONTENT_TEMPLATE_SEQUENCE,
        vec![obj(vec![text(tags::MAPPING_RESOURCE, VR::CS, "DCMR"), text(tags::TEMPLATE_IDENTIFIER, VR::CS, id)])],
    )
}

fn num_item(concept: &Code, value: f64, unit: &Code) -> Obj {
    content_item(
        "CONTAINS",
        "NUM",
        concept,
        vec![seq(
            tags::MEASURED_VALUE_SEQUENCE,
            vec![obj(vec![
                code_seq(tags::MEASUREMENT_UNITS_CODE_SEQUENCE, unit),
                fd(tags::FLOATING_POINT_VALUE, value),
                ds(tags::NUMERIC_VALUE, &[value]),
            ])],
        )],
    )
}

/// The concept a score is measured as: its manifest quantity, else "Volume" for a volume of a
/// segment, else a code of imhost's scheme named after the output.
fn score_concept(spec: &OutputSpec) -> Code {
    if let Some(q) = &spec.quantity {
        return q.clone();
    }
    if spec.measured_on.is_some() && spec.unit_ucum.as_deref() == Some("mL") {
        return code("SCT", "118565006", "Volume");
    }
    let meaning = if spec.description.is_empty() { spec.name.clone() } else { spec.description.clone() };
    own_code(&spec.name, &meaning)
}

fn score_unit(spec: &OutputSpec) -> Code {
    let ucum = spec.unit_ucum.clone().unwrap_or_else(|| "1".into());
    let meaning = match ucum.as_str() {
        "1" => "no units".to_string(),
        _ => spec.unit.clone().unwrap_or_else(|| ucum.clone()),
    };
    code("UCUM", &ucum, &meaning)
}

fn measurement_report(
    w: &mut Writer<'_>,
    output: &ResultParts<'_>,
    segmentations: &BTreeMap<String, WrittenSegmentation>,
) -> Result<DicomResult> {
    let id = w.identity(COMPREHENSIVE_SR_STORAGE, "report");
    let mut e = w.common(&id, "SR", &format!("{} measurements", w.manifest.name));
    let manifest = w.manifest;
    // Groups: one per segment measured on (TID 1411), one for the other scores (TID 1501).
    let mut per_segment: BTreeMap<(String, u8), Vec<Obj>> = BTreeMap::new();
    let mut other = Vec::new();
    for (name, value) in output.scores {
        let Some(spec) = manifest.output(name) else { continue };
        let item = num_item(&score_concept(spec), *value, &score_unit(spec));
        match &spec.measured_on {
            Some(on) if segmentations.get(&on.output).is_some_and(|s| s.segments.contains_key(&on.label)) => {
                per_segment.entry((on.output.clone(), on.label)).or_default().push(item);
            }
            _ => other.push(item),
        }
    }
    let mut groups = Vec::new();
    for ((seg_name, label_value), measurements) in per_segment {
        let seg = &segmentations[&seg_name];
        let number = seg.segments[&label_value];
        let label = manifest.output(&seg_name).and_then(|o| o.labels.iter().find(|l| l.value == label_value));
        let label_name = label.map_or_else(|| format!("{seg_name} {label_value}"), |l| l.name.clone());
        let mut children = vec![
            text_item("HAS OBS CONTEXT", &code("DCM", "112039", "Tracking Identifier"), &label_name),
            uid_item(
                "HAS OBS CONTEXT",
                &code("DCM", "112040", "Tracking Unique Identifier"),
                &w.uids.next(&format!("tracking/{seg_name}/{label_value}")),
            ),
        ];
        if let Some(property) = label.and_then(|l| l.property.as_ref()) {
            children.push(code_value_item("CONTAINS", &code("DCM", "121071", "Finding"), property));
        }
        children.extend(measurements);
        let mut reference = obj(vec![
            uid(tags::REFERENCED_SOP_CLASS_UID, SEGMENTATION_STORAGE),
            uid(tags::REFERENCED_SOP_INSTANCE_UID, &seg.sop_instance_uid),
        ]);
        reference.put(us(tags::REFERENCED_SEGMENT_NUMBER, number));
        children.push(content_item(
            "CONTAINS",
            "IMAGE",
            &code("DCM", "121191", "Referenced Segment"),
            vec![seq(tags::REFERENCED_SOP_SEQUENCE, vec![reference])],
        ));
        if let Some(series) = &w.source.series_instance_uid {
            children.push(uid_item("CONTAINS", &code("DCM", "121232", "Source series for segmentation"), series));
        }
        groups.push(container("CONTAINS", &code("DCM", "125007", "Measurement Group"), Some("1411"), children));
    }
    if !other.is_empty() {
        let mut children = vec![
            text_item(
                "HAS OBS CONTEXT",
                &code("DCM", "112039", "Tracking Identifier"),
                &format!("{} scores", manifest.id),
            ),
            uid_item(
                "HAS OBS CONTEXT",
                &code("DCM", "112040", "Tracking Unique Identifier"),
                &w.uids.next("tracking/scores"),
            ),
        ];
        children.extend(other);
        groups.push(container("CONTAINS", &code("DCM", "125007", "Measurement Group"), Some("1501"), children));
    }
    // Qualitative evaluations: the statement, criteria, QC flags, what was withheld.
    let mut evaluations = vec![text_item("CONTAINS", &code("DCM", "121106", "Comment"), RESEARCH_USE_STATEMENT)];
    let report = output.report;
    if let Some(criteria) = report.pointer("/readout/criteria").and_then(Value::as_object) {
        for (key, meaning) in
            [("defuse3", "DEFUSE 3 imaging criteria met"), ("dawn", "DAWN clinical-core mismatch met")]
        {
            let Some(c) = criteria.get(key) else { continue };
            if let Some(met) = c.get("met").and_then(Value::as_bool) {
                let value = if met { code("SCT", "373066001", "Yes") } else { code("SCT", "373067005", "No") };
                evaluations.push(code_value_item("CONTAINS", &own_code(key, meaning), &value));
            }
            if let Some(detail) = c.get("detail").and_then(Value::as_str) {
                evaluations.push(text_item(
                    "CONTAINS",
                    &own_code(&format!("{key}_detail"), &format!("{key} detail")),
                    detail,
                ));
            }
        }
    }
    if let Some(flags) = report.get("qc_flags").and_then(Value::as_array) {
        for f in flags {
            let flag = f.get("flag").and_then(Value::as_str).unwrap_or("qc");
            let message = f.get("message").and_then(Value::as_str).unwrap_or("");
            evaluations.push(text_item(
                "CONTAINS",
                &own_code("qc_flag", "Quality control flag"),
                &format!("{flag}: {message}"),
            ));
        }
    }
    if let Some(withheld) = report.pointer("/readout/withheld").and_then(Value::as_str) {
        evaluations.push(text_item("CONTAINS", &own_code("withheld", "Measurements withheld"), withheld));
    }
    let procedure = if manifest.id.starts_with("perfusion-") {
        code("DCM", "126301", "Perfusion analysis by IV Iodinated Contrast CT technique")
    } else {
        code("SCT", "363679005", "Imaging")
    };
    let mut root_children = vec![
        code_value_item(
            "HAS CONCEPT MOD",
            &code("DCM", "121049", "Language of Content Item and Descendants"),
            &code("RFC5646", "en-US", "English (United States)"),
        ),
        code_value_item("HAS OBS CONTEXT", &code("DCM", "121005", "Observer Type"), &code("DCM", "121007", "Device")),
        uid_item("HAS OBS CONTEXT", &code("DCM", "121012", "Device Observer UID"), &w.uids.next("device")),
        text_item(
            "HAS OBS CONTEXT",
            &code("DCM", "121013", "Device Observer Name"),
            &format!("imhost {}", manifest.id),
        ),
        code_value_item("HAS CONCEPT MOD", &code("DCM", "121058", "Procedure reported"), &procedure),
    ];
    // A container holds at least one item: a model without scores reports no measurements.
    if !groups.is_empty() {
        root_children.push(container("CONTAINS", &code("DCM", "126010", "Imaging Measurements"), None, groups));
    }
    root_children.push(container("CONTAINS", &code("UMLS", "C0034375", "Qualitative Evaluations"), None, evaluations));
    // Evidence: the segmentations the measurements reference, one series each.
    let evidence: Vec<Obj> = segmentations
        .values()
        .map(|s| {
            let instance = obj(vec![
                uid(tags::REFERENCED_SOP_CLASS_UID, SEGMENTATION_STORAGE),
                uid(tags::REFERENCED_SOP_INSTANCE_UID, &s.sop_instance_uid),
            ]);
            obj(vec![
                seq(tags::REFERENCED_SOP_SEQUENCE, vec![instance]),
                uid(tags::SERIES_INSTANCE_UID, &s.series_instance_uid),
            ])
        })
        .collect();
    e.extend([
        seq(tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE, vec![]),
        text(tags::VALUE_TYPE, VR::CS, "CONTAINER"),
        code_seq(tags::CONCEPT_NAME_CODE_SEQUENCE, &code("DCM", "126000", "Imaging Measurement Report")),
        text(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE"),
        seq(tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, vec![]),
        text(tags::COMPLETION_FLAG, VR::CS, "COMPLETE"),
        text(tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED"),
        text(tags::PRELIMINARY_FLAG, VR::CS, "PRELIMINARY"),
        template_seq("1500"),
        seq(tags::CONTENT_SEQUENCE, root_children),
    ]);
    if !evidence.is_empty() {
        e.push(seq(
            tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
            vec![obj(vec![
                seq(tags::REFERENCED_SERIES_SEQUENCE, evidence),
                uid(tags::STUDY_INSTANCE_UID, &w.source.study.study_instance_uid),
            ])],
        ));
    }
    let bytes = w.file(&id, e, None)?;
    Ok(w.result("report", ResultKind::MeasurementReport, "sr_report.dcm".into(), id, bytes))
}

fn secondary_capture(w: &mut Writer<'_>, png_bytes: &[u8]) -> Result<DicomResult> {
    let (width, height, rgb) = decode_png(png_bytes)?;
    let id = w.identity(SECONDARY_CAPTURE_STORAGE, "preview");
    let mut e = w.common(&id, "OT", &format!("{} preview", w.manifest.name));
    e.extend([
        cs_values(tags::IMAGE_TYPE, &["DERIVED", "SECONDARY"]),
        text(tags::CONVERSION_TYPE, VR::CS, "WSD"),
        empty(tags::PATIENT_ORIENTATION, VR::CS),
        us(tags::SAMPLES_PER_PIXEL, 3),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB"),
        us(tags::PLANAR_CONFIGURATION, 0),
        us(tags::ROWS, height),
        us(tags::COLUMNS, width),
        us(tags::BITS_ALLOCATED, 8),
        us(tags::BITS_STORED, 8),
        us(tags::HIGH_BIT, 7),
        us(tags::PIXEL_REPRESENTATION, 0),
        text(tags::BURNED_IN_ANNOTATION, VR::CS, "NO"),
        text(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
    ]);
    let bytes = w.file(&id, e, Some((tags::PIXEL_DATA, VR::OB, &rgb)))?;
    Ok(w.result("preview", ResultKind::SecondaryCapture, "sc_preview.dcm".into(), id, bytes))
}

/// The temporal average of a 4-D source as a derived CT series of single-frame CT Images (one
/// per slice, on the source grid), each deriving from every frame of its slice; int16 HU,
/// a brain window by default.
fn temporal_average(w: &mut Writer<'_>, average: &Volume<i16>) -> Result<Vec<DicomResult>> {
    let Some((series, instances)) = w.average.clone() else { return Ok(vec![]) };
    let [ni, nj, nk, _] = average.shape();
    let series_number = w.series_number;
    w.series_number += 1;
    let frames = w.source.instances.iter().map(|i| i.frame).max().map_or(0, |t| t + 1);
    let data = average.data();
    let g = &w.source.geometry;
    let mut out = Vec::with_capacity(nk);
    for (k, sop_instance) in instances.into_iter().enumerate().take(nk) {
        let id = Identity { sop_class: CT_IMAGE_STORAGE, sop_instance, series: series.clone(), series_number };
        let mut e: Vec<Elem> = w
            .common(&id, "CT", &format!("CTP average ({frames} frames)"))
            .into_iter()
            .filter(|el| dicom_core::header::Header::tag(el) != tags::INSTANCE_NUMBER)
            .collect();
        let plane = g.dicom_plane(k);
        let sources: Vec<Obj> = w
            .source
            .instances
            .iter()
            .filter(|i| i.slice == k)
            .map(|i| {
                let mut item = referenced_frame(i);
                item.put(code_seq(
                    tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                    &code("DCM", "121322", "Source image for image processing operation"),
                ));
                item
            })
            .collect();
        e.extend([
            int_string(tags::INSTANCE_NUMBER, k as i64 + 1),
            uid(tags::FRAME_OF_REFERENCE_UID, &w.source.study.frame_of_reference_uid),
            empty(tags::POSITION_REFERENCE_INDICATOR, VR::LO),
            empty(tags::PATIENT_POSITION, VR::CS),
            cs_values(tags::IMAGE_TYPE, &["DERIVED", "SECONDARY", "AXIAL"]),
            text(
                tags::DERIVATION_DESCRIPTION,
                VR::ST,
                &format!("Temporal average of the {frames} frames of the source series, per voxel"),
            ),
            seq(tags::SOURCE_IMAGE_SEQUENCE, sources),
            text(tags::BURNED_IN_ANNOTATION, VR::CS, "NO"),
            text(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
            ds(tags::IMAGE_POSITION_PATIENT, &plane.image_position),
            ds(tags::IMAGE_ORIENTATION_PATIENT, &plane.image_orientation),
            ds(tags::PIXEL_SPACING, &plane.pixel_spacing),
            ds(tags::SLICE_THICKNESS, &[g.spacing[2]]),
            ds(tags::RESCALE_INTERCEPT, &[0.0]),
            ds(tags::RESCALE_SLOPE, &[1.0]),
            empty(tags::KVP, VR::DS),
            empty(tags::ACQUISITION_NUMBER, VR::IS),
            ds(tags::WINDOW_CENTER, &[40.0]),
            ds(tags::WINDOW_WIDTH, &[80.0]),
        ]);
        e.extend(monochrome_pixels(ni, nj, 16, true));
        let mut pixels = Vec::with_capacity(ni * nj * 2);
        for j in 0..nj {
            for i in 0..ni {
                pixels.extend_from_slice(&data[[i, j, k, 0]].to_le_bytes());
            }
        }
        let bytes = w.file(&id, e, Some((tags::PIXEL_DATA, VR::OW, &pixels)))?;
        out.push(w.result("average", ResultKind::ReferenceImage, format!("ct_average_{:03}.dcm", k + 1), id, bytes));
    }
    Ok(out)
}

/// Decode an 8-bit RGB or RGBA PNG (at most 8192 pixels a side) to RGB bytes (even length).
fn decode_png(bytes: &[u8]) -> Result<(u16, u16, Vec<u8>)> {
    let (width, height, mut rgb) =
        crate::io::png::decode_rgb(bytes).map_err(|e| Error::format(format!("preview {}", e.message())))?;
    if rgb.len() % 2 == 1 {
        rgb.push(0);
    }
    Ok((width as u16, height as u16, rgb))
}

/// Write every output of `output` (a run of the model `manifest` describes) as DICOM linked to
/// `source`: maps → Parametric Maps, label maps → Segmentations, scores and the report's QC
/// flags and criteria → one measurement report, `preview_png` (else the output's own preview)
/// → a Secondary Capture. Outputs
/// that cannot be written (a 4-D map, a volume off the source grid) are listed in `skipped`.
pub fn model_results(
    output: &ModelOutput,
    manifest: &Manifest,
    source: &ResultSource,
    preview_png: Option<&[u8]>,
    options: &ResultOptions,
) -> Result<DicomResults> {
    let parts = ResultParts {
        volumes: output.volumes.iter().map(|(n, v)| (n.as_str(), v)).collect(),
        scores: &output.scores,
        report: &output.report,
    };
    write_results(&parts, manifest, source, preview_png.or(output.preview_png.as_deref()), options)
}

/// A run's outputs, borrowed (what [`ModelOutput`] holds, where a host keeps them apart).
#[derive(Debug)]
pub struct ResultParts<'a> {
    /// Maps and label maps by output name.
    pub volumes: Vec<(&'a str, &'a AnyVolume)>,
    /// Scores by output name.
    pub scores: &'a [(String, f64)],
    /// The run's report (QC flags, criteria).
    pub report: &'a Value,
}

/// [`model_results`] on borrowed outputs.
pub fn write_results(
    output: &ResultParts<'_>,
    manifest: &Manifest,
    source: &ResultSource,
    preview_png: Option<&[u8]>,
    options: &ResultOptions,
) -> Result<DicomResults> {
    options.validate()?;
    let (date, time) = options.content_date_time.clone().unwrap_or_else(utc_now);
    let mut uids = Uids::new(options);
    let average = source.average.as_ref().map(|a| {
        let series = uids.next("average/series");
        (series, (0..a.shape()[2]).map(|k| uids.next(&format!("average/instance/{k}"))).collect())
    });
    let mut w =
        Writer { source, manifest, options, uids, date, time, series_number: options.first_series_number, average };
    let mut results = DicomResults::default();
    let mut segmentations = BTreeMap::new();
    let mut maps = Vec::new();
    let mut label_maps = Vec::new();
    for &(name, volume) in &output.volumes {
        let Some(spec) = manifest.output(name) else {
            results.skipped.push((name.to_string(), "not declared in the manifest".into()));
            continue;
        };
        if let Err(why) = on_grid(name, volume.geometry(), volume.shape(), source) {
            results.skipped.push((name.to_string(), why));
            continue;
        }
        match spec.kind {
            OutputKind::Map => maps.push((spec, volume)),
            OutputKind::Labelmap => label_maps.push((spec, volume)),
            OutputKind::Score => results.skipped.push((name.to_string(), "a volume declared as a score".into())),
        }
    }
    for (spec, volume) in maps {
        let map = match volume {
            AnyVolume::F32(v) => std::borrow::Cow::Borrowed(v),
            other => match crate::registry::convert(&other.view(), crate::DType::F32)? {
                AnyVolume::F32(v) => std::borrow::Cow::Owned(v),
                _ => return Err(Error::internal("conversion to float32")),
            },
        };
        results.instances.push(parametric_map(&mut w, spec, &map)?);
    }
    for (spec, volume) in label_maps {
        let AnyVolume::U8(labels) = volume else {
            results.skipped.push((spec.name.clone(), format!("a label map of {} (uint8 expected)", volume.dtype())));
            continue;
        };
        let (result, written) = segmentation(&mut w, spec, labels)?;
        segmentations.insert(spec.name.clone(), written);
        results.instances.push(result);
    }
    results.instances.push(measurement_report(&mut w, output, &segmentations)?);
    if let Some(png) = preview_png {
        results.instances.push(secondary_capture(&mut w, png)?);
    }
    if let Some(average) = &source.average {
        results.instances.extend(temporal_average(&mut w, average)?);
    }
    for (name, why) in &results.skipped {
        tracing::warn!("output {name} is not written as DICOM: {why}");
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporal_average_by_hand_and_only_for_a_4d_dicom_source() {
        use crate::volume::{FrameTimes, TimeSource};
        let geometry = Geometry::axis_aligned([1.0, 1.0, 2.0], [0.0; 3]).unwrap();
        // Voxel (0,0,0): 10, 20, 31 → 20.33 → 20; (1,0,0): 1.5, NaN, 2.5 → 2 (NaN left out);
        // (0,1,0): NaN in every frame → −1024; (1,1,0): −3.5, −3.5, −3.5 → −4 (half away from 0).
        let frames = [[10.0, 1.5, f32::NAN, -3.5], [20.0, f32::NAN, f32::NAN, -3.5], [31.0, 2.5, f32::NAN, -3.5]];
        let data = ndarray::Array4::from_shape_fn((2, 2, 1, 3).f(), |(i, j, _, t)| frames[t][i + 2 * j]);
        let times = FrameTimes::uniform(3, 0.0, 1.0, TimeSource::Caller).unwrap();
        let ctp = AnyVolume::F32(Volume::new_4d(data, geometry, times).unwrap());
        let options = ResultOptions::default();
        let nifti = ResultSource::new_study(geometry, [2, 2, 1], &options);
        // No DICOM source series: nothing to derive the series from.
        assert!(nifti.clone().with_temporal_average(&ctp).unwrap().average.is_none());
        let mut dicom = nifti;
        dicom.series_instance_uid = Some("1.2.3".into());
        let average = dicom.clone().with_temporal_average(&ctp).unwrap().average.expect("an average");
        assert_eq!(average.shape(), [2, 2, 1, 1]);
        let got: Vec<i16> = (0..4).map(|n| average.data()[[n % 2, n / 2, 0, 0]]).collect();
        assert_eq!(got, vec![20, 2, -1024, -4]);
        // A 3-D source, or one off the grid, gets none.
        let one = AnyVolume::F32(Volume::filled([2, 2, 1, 1], 1.0, geometry, None).unwrap());
        assert!(dicom.clone().with_temporal_average(&one).unwrap().average.is_none());
        let times = FrameTimes::uniform(2, 0.0, 1.0, TimeSource::Caller).unwrap();
        let other = AnyVolume::F32(Volume::filled([3, 2, 1, 2], 1.0, geometry, Some(times)).unwrap());
        assert!(dicom.with_temporal_average(&other).unwrap().average.is_none());
    }

    #[test]
    fn cielab_of_known_colours() {
        // D65 CIELab of sRGB primaries (standard values): white (100, 0, 0), red (53.24, 80.09, 67.20).
        let scaled = |l: f64, a: f64, b: f64| {
            [l / 100.0 * 65535.0, (a + 128.0) / 255.0 * 65535.0, (b + 128.0) / 255.0 * 65535.0]
        };
        for (rgb, lab) in [
            ([255, 255, 255], scaled(100.0, 0.0, 0.0)),
            ([255, 0, 0], scaled(53.24, 80.09, 67.20)),
            ([0, 0, 0], scaled(0.0, 0.0, 0.0)),
        ] {
            let got = srgb_to_dicom_lab(rgb);
            for c in 0..3 {
                assert!((f64::from(got[c]) - lab[c]).abs() < 40.0, "{rgb:?}: {got:?} vs {lab:?}");
            }
        }
    }

    #[test]
    fn decimal_strings_fit_sixteen_characters() {
        for v in [0.0, 12.5, -123.456789012345, 1e-20, 1.234_567_890_123_456_7e300, -0.000123456789, 65535.0] {
            let s = ds_value(v);
            assert!(s.len() <= 16, "{v}: {s}");
            let back: f64 = s.parse().unwrap();
            assert!((back - v).abs() <= 1e-6 * v.abs().max(1e-300), "{v}: {s}");
        }
        assert_eq!(ds_value(f64::NAN), "0");
    }

    #[test]
    fn uids_are_valid_and_seeded_ones_repeat() {
        let mut options = ResultOptions::default();
        let random = (Uids::new(&options).next("a"), Uids::new(&options).next("a"));
        assert_ne!(random.0, random.1);
        options.uid_seed = Some("s".into());
        let (a, b) = (Uids::new(&options).next("x"), Uids::new(&options).next("x"));
        assert_eq!(a, b);
        assert_ne!(a, Uids::new(&options).next("y"));
        options.uid_root = "1.2.840.99999.123456789".into();
        for uid in [a, random.0, Uids::new(&options).next("z")] {
            assert!(
                uid.len() <= 64 && uid.split('.').all(|c| !c.is_empty() && (c == "0" || !c.starts_with('0'))),
                "{uid}"
            );
        }
        for bad in ["", "1..2", "01.2", "1.2a", "1.2.3.4.5.6.7.8.9.10.11.12"] {
            options.uid_root = bad.into();
            assert!(options.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn options_from_json_refuse_what_they_do_not_know() {
        let o = ResultOptions::from_json(&serde_json::json!({"uid_root": "1.2.3", "first_series_number": 7})).unwrap();
        assert_eq!((o.uid_root.as_str(), o.first_series_number), ("1.2.3", 7));
        for bad in [
            serde_json::json!({"colour": 1}),
            serde_json::json!({"content_date": "20260101"}),
            serde_json::json!({"first_series_number": 0}),
            serde_json::json!({"uid_root": 5}),
            serde_json::json!([]),
        ] {
            assert!(ResultOptions::from_json(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn codestream_sizes_by_hand() {
        // JPEG lossless: SOI, then SOF3 (length 11, precision 16, height 18, width 20, 1 component).
        let jpeg = [0xFF, 0xD8, 0xFF, 0xC3, 0x00, 0x0B, 0x10, 0x00, 0x12, 0x00, 0x14, 0x01, 0x01, 0x11, 0x00];
        assert_eq!(super::super::codestream_size(&jpeg), Some((20, 18)));
        // A JPEG with an APP0 segment before the frame header.
        let mut with_app = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0xAA, 0xBB];
        with_app.extend_from_slice(&jpeg[2..]);
        assert_eq!(super::super::codestream_size(&with_app), Some((20, 18)));
        // JPEG 2000: SOC, SIZ with Xsiz 100, Ysiz 50, XOsiz 10, YOsiz 0.
        let mut j2k = vec![0xFF, 0x4F, 0xFF, 0x51, 0x00, 0x29, 0x00, 0x00];
        for v in [100u32, 50, 10, 0] {
            j2k.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(super::super::codestream_size(&j2k), Some((90, 50)));
        assert_eq!(super::super::codestream_size(&[1, 2, 3]), None);
    }

    /// Frames of 3×3 pixels are not byte-aligned: the bits run on across frames (PS3.5 §8.1.1).
    #[test]
    fn segmentation_bits_run_across_frames() {
        use ndarray::ShapeBuilder;
        let labels = ndarray::Array4::from_shape_fn((3, 3, 2, 1).f(), |(i, j, k, _)| ((i + 2 * j + k) % 3) as u8);
        let geometry = Geometry::axis_aligned([1.0, 1.0, 2.0], [0.0; 3]).unwrap();
        let volume = Volume::from_parts(labels.clone(), geometry, None).unwrap();
        let manifest = Manifest::from_json(
            &serde_json::json!({"format": "imhost-manifest/1", "id": "t", "name": "t", "version": "1", "research_use_only": true,
                "inputs": [{"name": "x", "modality": "CT", "dims": 3}],
                "outputs": [{"name": "l", "kind": "labelmap", "labels": [{"value": 1, "name": "one", "color": [1, 2, 3]}, {"value": 2, "name": "two", "color": [4, 5, 6]}]}]})
            .to_string(),
        )
        .unwrap();
        let options = ResultOptions { uid_seed: Some("bits".into()), ..ResultOptions::default() };
        let source = ResultSource::new_study(geometry, [3, 3, 2], &options);
        let output = ModelOutput { volumes: vec![("l".into(), AnyVolume::U8(volume))], ..ModelOutput::default() };
        let results = model_results(&output, &manifest, &source, None, &options).unwrap();
        let seg = results.instances.iter().find(|r| r.kind == ResultKind::Segmentation).unwrap();
        let obj = dicom_object::OpenFileOptions::new().from_reader(&seg.bytes[128..]).unwrap();
        let bits = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
        // Segment 1's two frames, then segment 2's: 36 bits.
        let mut at = 0;
        for label in [1u8, 2] {
            for k in 0..2 {
                for j in 0..3 {
                    for i in 0..3 {
                        let bit = bits[at / 8] >> (at % 8) & 1;
                        assert_eq!(bit == 1, labels[[i, j, k, 0]] == label, "label {label} at {i},{j},{k}");
                        at += 1;
                    }
                }
            }
        }
        assert_eq!(bits.len(), 6, "36 bits in 5 bytes, padded to even");
    }
}
