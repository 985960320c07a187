//! DICOM series: a folder or a set of in-memory instances holding one CT (perfusion) series,
//! read with dicom-rs; writing a volume as a DICOM CT series (phantom export); and, in
//! [`results`], every model result written as DICOM (Parametric Map, SEG, TID 1500 SR,
//! Secondary Capture).
//!
//! Reading: every file in the folder (recursively) that parses as DICOM with pixel data is
//! considered; the series with the most instances is taken (instances given in memory must all
//! be of one series). A multi-frame instance (enhanced or legacy-converted enhanced CT, a
//! Parametric Map) contributes one image per frame, placed by its functional groups (Plane
//! Position/Orientation, Pixel Measures, Pixel Value Transformation, Frame Content's Temporal
//! Position Index and frame date-time). Slices are ordered by their position along the slice
//! normal (from `ImageOrientationPatient`); frames are grouped by `TemporalPositionIdentifier`
//! (or Index), else `AcquisitionTime`, else `ContentTime`, else by `InstanceNumber` among the
//! instances at one position. Every frame must hold every position once; slice positions must be
//! evenly spaced (a gap is an error, not silently squeezed out). Frame times are the
//! acquisition (or content) time of each frame relative to the first. Pixels: little-endian,
//! one sample of 8 or 16 bits (or 32/64-bit float pixel data); compressed transfer syntaxes are
//! refused naming the syntax; `RescaleSlope`/`Intercept` applied (HU), delivered as `i16` when
//! exact, else `f32`. Sizes are checked before allocation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};
use ndarray::{Array4, ShapeBuilder};

use crate::error::{Error, Result};
use crate::geometry::{DicomPlane, Geometry};
use crate::volume::{AnyVolume, FrameTimes, TimeSource, Volume};

pub mod results;

/// Options of [`read_dicom_series`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DicomReadOptions {
    /// Refuse series whose pixels would need more bytes than this.
    pub max_bytes: u64,
}

impl Default for DicomReadOptions {
    fn default() -> Self {
        DicomReadOptions { max_bytes: crate::memory::available_bytes_or(16 << 30) }
    }
}

struct Instance {
    /// Its name in messages: the file's path, or `DICOM buffer N`.
    path: PathBuf,
    /// Index into the sources.
    source: usize,
    series: String,
    ids: InstanceIds,
    position: [f64; 3],
    orientation: [f64; 6],
    spacing: [f64; 2],
    rows: usize,
    columns: usize,
    temporal: Option<i64>,
    time: Option<f64>,
    instance_number: i64,
    /// The frame of a multi-frame instance (0-based); `None` for a single-frame one.
    frame: Option<usize>,
    /// Rescale slope and intercept: the frame's functional groups (multi-frame), else the
    /// instance's own (`None`: not in the header).
    rescale: Option<(f64, f64)>,
    /// Bits Allocated.
    bits: i64,
}

fn parse_tm(text: &str) -> Option<f64> {
    let t = text.trim().replace(':', "");
    if t.len() < 2 {
        return None;
    }
    let (hms, frac) = t.split_once('.').unwrap_or((&t, ""));
    let field = |a: usize| -> f64 { hms.get(a..a + 2).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0) };
    let frac: f64 = if frac.is_empty() { 0.0 } else { format!("0.{frac}").parse().ok()? };
    Some(field(0) * 3600.0 + field(2) * 60.0 + field(4) + frac)
}

fn dicom_err(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::format(format!("DICOM: {what}")).in_file(path)
}

/// Whether `bytes` start like a DICOM Part 10 file (128-byte preamble, then `DICM`).
fn has_dicom_preamble(bytes: &[u8]) -> bool {
    bytes.len() >= 132 && &bytes[128..132] == b"DICM"
}

/// The longest DICOM file read into memory at once.
const MAX_FILE_BYTES: u64 = 4 << 30;

/// Where the instances of a series come from: files of a folder, or buffers (what an Orthanc
/// plugin holds). One reader for both.
enum Source<'a> {
    File(PathBuf),
    Buffer(usize, &'a [u8]),
}

impl Source<'_> {
    /// Its name in messages.
    fn label(&self) -> PathBuf {
        match self {
            Source::File(p) => p.clone(),
            Source::Buffer(n, _) => PathBuf::from(format!("DICOM buffer {n}")),
        }
    }

    /// Its bytes (a file is read whole, after a size check).
    fn bytes(&self) -> std::result::Result<std::borrow::Cow<'_, [u8]>, String> {
        match self {
            Source::Buffer(_, b) => Ok(std::borrow::Cow::Borrowed(b)),
            Source::File(path) => {
                let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
                if len > MAX_FILE_BYTES.min(crate::memory::available_bytes_or(MAX_FILE_BYTES)) {
                    return Err(format!("the file is {} MiB, more than may be read", len >> 20));
                }
                std::fs::read(path).map(std::borrow::Cow::Owned).map_err(|e| e.to_string())
            }
        }
    }
}

/// Parse a DICOM file's bytes after checking that no element claims more bytes than they hold
/// ([`check_declared_lengths`]): dicom-rs sizes (and zero-fills) a value's buffer from its
/// declared length before reading it, so a file of a few hundred bytes could make it touch up to
/// 4 GiB per element. The checked bytes are what dicom-rs parses.
fn parse_checked(bytes: &[u8], until_pixels: bool) -> std::result::Result<dicom_object::DefaultDicomObject, String> {
    check_declared_lengths(bytes)?;
    let body = if has_dicom_preamble(bytes) { &bytes[128..] } else { bytes };
    let options = OpenFileOptions::new();
    // Float pixel data (7FE0,0008) comes before PixelData (7FE0,0010): stop at the first.
    let options = if until_pixels { options.read_until(tags::FLOAT_PIXEL_DATA) } else { options };
    options.from_reader(body).map_err(|e| e.to_string())
}

/// Walk the elements of a Part 10 file (meta group, then the data set in its transfer syntax,
/// into sequences and items; encapsulated pixel fragments skipped by their lengths) the way
/// dicom-rs reads them, and refuse one whose declared length runs past the end of the file (no
/// valid file has one). A deflated data set is left to the parser.
pub fn check_declared_lengths(bytes: &[u8]) -> std::result::Result<(), String> {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
    use dicom_core::{Tag, VR};
    #[derive(PartialEq)]
    enum Open {
        /// Items of a sequence; the encoding to restore at its end (explicit VR or not).
        Sequence(bool),
        Fragments,
    }
    let mut pos = if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        132
    } else if bytes.starts_with(b"DICM") {
        4
    } else {
        0
    };
    let (mut explicit, mut little) = (true, true);
    let mut in_meta = true;
    let mut syntax = String::new();
    let mut stack: Vec<Open> = Vec::new();
    let u16_at = |p: usize, le: bool| {
        let b = [bytes[p], bytes[p + 1]];
        if le { u16::from_le_bytes(b) } else { u16::from_be_bytes(b) }
    };
    let u32_at = |p: usize, le: bool| {
        let b = [bytes[p], bytes[p + 1], bytes[p + 2], bytes[p + 3]];
        if le { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) }
    };
    // The VRs with a 16-bit length (PS3.5 7.1.2), as dicom-rs reads them; every other code,
    // unknown ones included (read as UN), has a 32-bit length after two reserved bytes.
    const SHORT: [&[u8; 2]; 21] = [
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN", b"SH", b"SL", b"SS",
        b"ST", b"TM", b"UI", b"UL", b"US",
    ];
    while pos + 8 <= bytes.len() {
        let group = u16_at(pos, little || in_meta);
        if in_meta && group != 0x0002 {
            in_meta = false;
            match syntax.trim_end_matches(['\0', ' ']) {
                uids::IMPLICIT_VR_LITTLE_ENDIAN => explicit = false,
                "1.2.840.10008.1.2.2" => little = false,
                "1.2.840.10008.1.2.1.99" => return Ok(()), // deflated: nothing to follow
                _ => {}                                    // explicit VR little endian, and the encapsulated syntaxes
            }
            continue;
        }
        let le = little || in_meta;
        let element = u16_at(pos + 2, le);
        if group == 0xFFFE {
            let length = u32_at(pos + 4, le);
            pos += 8;
            let left = bytes.len() - pos;
            match element {
                0xE000 if stack.last() == Some(&Open::Fragments) && length != u32::MAX => {
                    if length as usize > left {
                        return Err(format!("a pixel data fragment claims {length} bytes; the file has {left} left"));
                    }
                    pos += length as usize;
                }
                0xE000 if length != u32::MAX && length as usize > left => {
                    return Err(format!("a sequence item claims {length} bytes; the file has {left} left"));
                }
                0xE0DD => {
                    if let Some(Open::Sequence(was_explicit)) = stack.pop() {
                        explicit = was_explicit;
                    }
                }
                _ => {}
            }
            continue;
        }
        let (vr, length, header): (Option<[u8; 2]>, u32, usize) = if explicit || in_meta {
            let vr = [bytes[pos + 4], bytes[pos + 5]];
            if SHORT.iter().any(|s| **s == vr) {
                (Some(vr), u32::from(u16_at(pos + 6, le)), 8)
            } else if pos + 12 > bytes.len() {
                return Err(format!("the file ends inside the header of element ({group:04X},{element:04X})"));
            } else {
                (Some(vr), u32_at(pos + 8, le), 12)
            }
        } else {
            (None, u32_at(pos + 4, le), 8)
        };
        let tag = Tag(group, element);
        let is_sequence = match vr {
            Some(vr) => &vr == b"SQ",
            None => dicom_dictionary_std::StandardDataDictionary
                .by_tag(tag)
                .is_some_and(|e| matches!(e.vr(), VirtualVr::Exact(VR::SQ))),
        };
        if length == u32::MAX {
            pos += header;
            if tag == tags::PIXEL_DATA && !is_sequence {
                stack.push(Open::Fragments);
            } else {
                // An unknown-VR value of undefined length is a sequence in implicit VR.
                let implicit_inside = vr.is_some_and(|v| &v != b"SQ");
                stack.push(Open::Sequence(explicit));
                if implicit_inside {
                    explicit = false;
                }
            }
            continue;
        }
        let left = (bytes.len() - pos).saturating_sub(header);
        if length as usize > left {
            return Err(format!("element ({group:04X},{element:04X}) claims {length} bytes; the file has {left} left"));
        }
        if in_meta && tag == tags::TRANSFER_SYNTAX_UID {
            syntax = String::from_utf8_lossy(&bytes[pos + header..pos + header + length as usize]).into_owned();
        }
        // A sequence of defined length: walk into its items; any other value: skip it.
        pos += header + if is_sequence { 0 } else { length as usize };
    }
    Ok(())
}

/// The header of one file: `None` for files that are not DICOM images (no Part 10 preamble and
/// unreadable as DICOM, or DICOM objects without an image position: a DICOMDIR, a report). A
/// file that says it is DICOM but cannot be read is an error naming it: skipping it could drop
/// a time point of the study without anyone noticing.
type Obj = dicom_object::InMemDicomObject;

/// The item of functional group `group` that applies to a frame: its per-frame item, else the
/// shared one.
fn functional_group<'o>(
    per_frame: Option<&'o Obj>,
    shared: Option<&'o Obj>,
    group: dicom_core::Tag,
) -> Option<&'o Obj> {
    let first = |o: &'o Obj| o.element_opt(group).ok().flatten().and_then(|e| e.items()).and_then(|i| i.first());
    per_frame.and_then(first).or_else(|| shared.and_then(first))
}

/// The images in one DICOM file or buffer: one for a single-frame instance, one per frame of a
/// multi-frame one (enhanced CT, Parametric Map: positions, orientation, spacing, rescale and
/// time from the functional groups). None: not an image with a position (skipped).
fn read_header(source: &Source<'_>, index: usize) -> Result<Vec<Instance>> {
    let label = source.label();
    let path = label.as_path();
    let bytes = source.bytes().map_err(|e| dicom_err(path, e))?;
    let obj = match parse_checked(&bytes, true) {
        Ok(obj) => obj,
        Err(e) if has_dicom_preamble(&bytes) => {
            return Err(dicom_err(
                path,
                format!("a corrupt DICOM file (it has the DICM preamble but cannot be read: {e})"),
            ));
        }
        Err(e) if matches!(source, Source::Buffer(..)) => {
            return Err(dicom_err(path, format!("not a readable DICOM instance ({e})")));
        }
        Err(_) => {
            tracing::debug!("{} is not a DICOM file; skipped", path.display());
            return Ok(vec![]);
        }
    };
    let opt_str = |tag| obj.element_opt(tag).ok().flatten().and_then(|e| e.to_str().ok().map(|s| s.trim().to_string()));
    let int = |tag, name: &str| -> Result<i64> {
        obj.element(tag)
            .map_err(|_| dicom_err(path, format!("missing {name}")))?
            .to_int::<i64>()
            .map_err(|_| dicom_err(path, format!("bad {name}")))
    };
    let floats_in = |o: &Obj, tag, n: usize, name: &str| -> Result<Vec<f64>> {
        let v = o
            .element(tag)
            .map_err(|_| dicom_err(path, format!("missing {name}")))?
            .to_multi_float64()
            .map_err(|_| dicom_err(path, format!("bad {name}")))?;
        if v.len() != n || v.iter().any(|x| !x.is_finite()) {
            return Err(dicom_err(path, format!("{name} must hold {n} finite numbers")));
        }
        Ok(v)
    };
    let ids = InstanceIds {
        sop_instance_uid: opt_str(tags::SOP_INSTANCE_UID).unwrap_or_default(),
        sop_class_uid: opt_str(tags::SOP_CLASS_UID).unwrap_or_default(),
        study_instance_uid: opt_str(tags::STUDY_INSTANCE_UID).unwrap_or_default(),
        frame_of_reference_uid: opt_str(tags::FRAME_OF_REFERENCE_UID).unwrap_or_default(),
        patient_id: opt_str(tags::PATIENT_ID).unwrap_or_default(),
        patient_name: opt_str(tags::PATIENT_NAME).unwrap_or_default(),
        study_id: opt_str(tags::STUDY_ID).unwrap_or_default(),
        accession_number: opt_str(tags::ACCESSION_NUMBER).unwrap_or_default(),
        study_date: opt_str(tags::STUDY_DATE).unwrap_or_default(),
        study_time: opt_str(tags::STUDY_TIME).unwrap_or_default(),
        modality: opt_str(tags::MODALITY).unwrap_or_default(),
        patient_birth_date: opt_str(tags::PATIENT_BIRTH_DATE).unwrap_or_default(),
        patient_sex: opt_str(tags::PATIENT_SEX).unwrap_or_default(),
        referring_physician_name: opt_str(tags::REFERRING_PHYSICIAN_NAME).unwrap_or_default(),
        study_description: opt_str(tags::STUDY_DESCRIPTION).unwrap_or_default(),
        body_part_examined: opt_str(tags::BODY_PART_EXAMINED).unwrap_or_default(),
    };
    let series = opt_str(tags::SERIES_INSTANCE_UID).unwrap_or_default();
    let instance_number =
        obj.element_opt(tags::INSTANCE_NUMBER).ok().flatten().and_then(|e| e.to_int::<i64>().ok()).unwrap_or(0);
    let per_frame_items =
        obj.element_opt(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).ok().flatten().and_then(|e| e.items());
    let number = |tag| obj.element_opt(tag).ok().flatten().and_then(|e| e.to_float64().ok());
    let own_rescale = match (number(tags::RESCALE_SLOPE), number(tags::RESCALE_INTERCEPT)) {
        (None, None) => None,
        (slope, intercept) => Some((slope.unwrap_or(1.0), intercept.unwrap_or(0.0))),
    };
    let bits = obj.element_opt(tags::BITS_ALLOCATED).ok().flatten().and_then(|e| e.to_int::<i64>().ok()).unwrap_or(16);
    let mut out = Vec::new();
    if let Some(per_frame) = per_frame_items {
        // A multi-frame image: every frame is an image of its own.
        let frames =
            obj.element_opt(tags::NUMBER_OF_FRAMES).ok().flatten().and_then(|e| e.to_int::<i64>().ok()).unwrap_or(1);
        if frames < 1 || frames as usize != per_frame.len() {
            return Err(dicom_err(
                path,
                format!(
                    "NumberOfFrames is {frames} but the per-frame functional groups hold {} items",
                    per_frame.len()
                ),
            ));
        }
        let shared = obj
            .element_opt(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
            .ok()
            .flatten()
            .and_then(|e| e.items())
            .and_then(|i| i.first());
        let (rows, columns) = (int(tags::ROWS, "Rows")?, int(tags::COLUMNS, "Columns")?);
        for (f, item) in per_frame.iter().enumerate() {
            let group = |tag| functional_group(Some(item), shared, tag);
            let what = |name: &str| format!("frame {} {name}", f + 1);
            let position = group(tags::PLANE_POSITION_SEQUENCE)
                .ok_or_else(|| dicom_err(path, what("has no Plane Position")))
                .and_then(|g| floats_in(g, tags::IMAGE_POSITION_PATIENT, 3, "ImagePositionPatient"))?;
            let orientation = group(tags::PLANE_ORIENTATION_SEQUENCE)
                .ok_or_else(|| dicom_err(path, what("has no Plane Orientation")))
                .and_then(|g| floats_in(g, tags::IMAGE_ORIENTATION_PATIENT, 6, "ImageOrientationPatient"))?;
            let spacing = group(tags::PIXEL_MEASURES_SEQUENCE)
                .ok_or_else(|| dicom_err(path, what("has no Pixel Measures")))
                .and_then(|g| floats_in(g, tags::PIXEL_SPACING, 2, "PixelSpacing"))?;
            let rescale = group(tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE).map(|g| {
                let get =
                    |tag, d: f64| g.element_opt(tag).ok().flatten().and_then(|e| e.to_float64().ok()).unwrap_or(d);
                (get(tags::RESCALE_SLOPE, 1.0), get(tags::RESCALE_INTERCEPT, 0.0))
            });
            let content = group(tags::FRAME_CONTENT_SEQUENCE);
            let temporal = content
                .and_then(|c| c.element_opt(tags::TEMPORAL_POSITION_INDEX).ok().flatten())
                .and_then(|e| e.to_int::<i64>().ok());
            let time = content.and_then(|c| {
                [tags::FRAME_ACQUISITION_DATE_TIME, tags::FRAME_REFERENCE_DATE_TIME].iter().find_map(|&tag| {
                    let dt = c.element_opt(tag).ok().flatten()?.to_str().ok()?.trim().to_string();
                    dt.get(8..).and_then(parse_tm)
                })
            });
            out.push(Instance {
                path: path.to_path_buf(),
                source: index,
                series: series.clone(),
                ids: ids.clone(),
                position: [position[0], position[1], position[2]],
                orientation: std::array::from_fn(|n| orientation[n]),
                spacing: [spacing[0], spacing[1]],
                rows: usize::try_from(rows).map_err(|_| dicom_err(path, "negative Rows"))?,
                columns: usize::try_from(columns).map_err(|_| dicom_err(path, "negative Columns"))?,
                temporal,
                time,
                instance_number: instance_number.saturating_mul(100_000).saturating_add(f as i64),
                frame: Some(f),
                rescale: rescale.or(own_rescale),
                bits,
            });
        }
        return Ok(out);
    }
    let Some(ipp) = obj.element_opt(tags::IMAGE_POSITION_PATIENT).ok().flatten() else {
        if matches!(source, Source::Buffer(..)) {
            // Given as an instance of the series: not one to skip silently.
            return Err(dicom_err(path, "no ImagePositionPatient (not an image of a series with a position)"));
        }
        tracing::debug!("{} is not an image with a position; skipped", path.display());
        return Ok(vec![]);
    };
    let position = ipp.to_multi_float64().map_err(|_| dicom_err(path, "bad ImagePositionPatient"))?;
    if position.len() != 3 || position.iter().any(|x| !x.is_finite()) {
        return Err(dicom_err(path, "ImagePositionPatient must hold 3 finite numbers"));
    }
    let orientation = floats_in(&obj, tags::IMAGE_ORIENTATION_PATIENT, 6, "ImageOrientationPatient")?;
    let spacing = floats_in(&obj, tags::PIXEL_SPACING, 2, "PixelSpacing")?;
    let time = opt_str(tags::ACQUISITION_TIME)
        .and_then(|s| parse_tm(&s))
        .or_else(|| opt_str(tags::CONTENT_TIME).and_then(|s| parse_tm(&s)));
    out.push(Instance {
        path: path.to_path_buf(),
        source: index,
        ids,
        series,
        position: [position[0], position[1], position[2]],
        orientation: std::array::from_fn(|n| orientation[n]),
        spacing: [spacing[0], spacing[1]],
        rows: usize::try_from(int(tags::ROWS, "Rows")?).map_err(|_| dicom_err(path, "negative Rows"))?,
        columns: usize::try_from(int(tags::COLUMNS, "Columns")?).map_err(|_| dicom_err(path, "negative Columns"))?,
        temporal: obj
            .element_opt(tags::TEMPORAL_POSITION_IDENTIFIER)
            .ok()
            .flatten()
            .and_then(|e| e.to_int::<i64>().ok()),
        time,
        instance_number,
        frame: None,
        rescale: own_rescale,
        bits,
    });
    Ok(out)
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::from(e).in_file(dir))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::from(e).in_file(dir))?.path();
        if path.is_dir() {
            files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Read the CT series in folder `dir` as a 3-D (one time point) or 4-D volume.
pub fn read_dicom_series(dir: &Path, options: &DicomReadOptions) -> Result<AnyVolume> {
    read_dicom_folder(dir, options).map(|s| s.volume)
}

/// Read the CT series in folder `dir` (files in any sub-folder; files that are not DICOM images
/// skipped), with the identifiers of its instances.
pub fn read_dicom_folder(dir: &Path, options: &DicomReadOptions) -> Result<DicomSeries> {
    let mut paths = Vec::new();
    files(dir, &mut paths)?;
    paths.sort();
    let sources: Vec<Source<'_>> = paths.into_iter().map(Source::File).collect();
    read_sources(&sources, dir, options, false)
}

/// Read a CT series from DICOM instances held in memory (Part 10 files, with or without the
/// 128-byte preamble), with the same series logic, checks and limits as [`read_dicom_folder`],
/// except that every buffer must be readable DICOM (a folder's other files are skipped; a
/// buffer was given as an instance) and all must belong to one series (a folder's largest
/// series is taken); multi-frame instances (enhanced CT, Parametric Maps) give one image per
/// frame; messages name an instance as `DICOM buffer N` (its index
/// in `buffers`).
pub fn read_dicom_buffers(buffers: &[&[u8]], options: &DicomReadOptions) -> Result<DicomSeries> {
    let sources: Vec<Source<'_>> = buffers.iter().enumerate().map(|(n, b)| Source::Buffer(n, b)).collect();
    read_sources(&sources, Path::new("the DICOM buffers"), options, true)
}

/// The identifiers of one instance (kept for the references of results written as DICOM).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct InstanceIds {
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Frame of Reference UID.
    pub frame_of_reference_uid: String,
    /// Patient ID.
    pub patient_id: String,
    /// Patient's Name.
    pub patient_name: String,
    /// Study ID.
    pub study_id: String,
    /// Accession Number.
    pub accession_number: String,
    /// Study Date.
    pub study_date: String,
    /// Study Time.
    pub study_time: String,
    /// Modality.
    pub modality: String,
    /// Patient's Birth Date.
    pub patient_birth_date: String,
    /// Patient's Sex.
    pub patient_sex: String,
    /// Referring Physician's Name.
    pub referring_physician_name: String,
    /// Study Description.
    pub study_description: String,
    /// Body Part Examined.
    pub body_part_examined: String,
}

/// One instance of a series read, and where its pixels went.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceInstance {
    /// Its identifiers.
    pub ids: InstanceIds,
    /// The slice (k) and frame (t) it filled.
    pub slice: usize,
    /// The frame.
    pub frame: usize,
    /// Its index among the files (sorted by path) or the buffers given.
    pub source: usize,
    /// The frame of a multi-frame instance it came from (0-based; `None`: a single-frame one).
    pub instance_frame: Option<usize>,
}

/// A series read from DICOM: the volume and the identifiers of the instances that made it.
#[derive(Debug)]
pub struct DicomSeries {
    /// The 3-D or 4-D volume (int16 HU when exact, else float32).
    pub volume: AnyVolume,
    /// Series Instance UID.
    pub series_instance_uid: String,
    /// The instances, by frame then slice.
    pub instances: Vec<SourceInstance>,
}

impl DicomSeries {
    /// The study-level identifiers (those of the first instance).
    pub fn study(&self) -> Option<&InstanceIds> {
        self.instances.first().map(|i| &i.ids)
    }
}

/// The width and height a compressed frame's codestream declares: JPEG and JPEG-LS (the start
/// of frame), JPEG 2000 (the SIZ marker of a codestream, bare or in a JP2 file). `None`: not
/// found (RLE, or a fragment that continues a frame).
pub(crate) fn codestream_size(b: &[u8]) -> Option<(usize, usize)> {
    let be16 = |at: usize| b.get(at..at + 2).map(|s| usize::from(u16::from_be_bytes([s[0], s[1]])));
    let be32 = |at: usize| b.get(at..at + 4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize);
    if b.starts_with(&[0xFF, 0xD8]) {
        let mut at = 2;
        while at + 4 <= b.len() && at < 1 << 20 {
            if b[at] != 0xFF {
                return None;
            }
            let marker = b[at + 1];
            let start_of_frame =
                matches!(marker, 0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC)) || marker == 0xF7;
            if start_of_frame {
                return Some((be16(at + 7)?, be16(at + 5)?));
            }
            if matches!(marker, 0xD0..=0xD9 | 0x01 | 0xFF) {
                at += if marker == 0xFF { 1 } else { 2 };
                continue;
            }
            at += 2 + be16(at + 2)?;
        }
        return None;
    }
    let siz = b.get(..b.len().min(1 << 16))?.windows(4).position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])?;
    let (x, y, x0, y0) = (be32(siz + 8)?, be32(siz + 12)?, be32(siz + 16)?, be32(siz + 20)?);
    Some((x.checked_sub(x0)?, y.checked_sub(y0)?))
}

/// Where the pixels of a series go.
enum Target {
    I16(Array4<i16>),
    F32(Array4<f32>),
}

/// The pixel data of one parsed instance, native (uncompressed, little endian).
struct Pixels<'a> {
    bytes: std::borrow::Cow<'a, [u8]>,
    /// Bytes per sample.
    width: usize,
    signed: bool,
    float: bool,
    frame_bytes: usize,
    slope: f64,
    intercept: f64,
}

impl<'a> Pixels<'a> {
    /// Check the pixel format (one sample of 8 or 16 bits, or 32/64-bit floats) and find the
    /// bytes; compressed transfer syntaxes are decoded ([`Pixels::decoded`]). `frames_used`:
    /// how many frames of this instance the series places.
    fn of(
        obj: &'a dicom_object::DefaultDicomObject,
        path: &Path,
        rows: usize,
        columns: usize,
        frames_used: usize,
    ) -> Result<Pixels<'a>> {
        let ts = obj.meta().transfer_syntax().trim_end_matches('\0').to_string();
        if ts != uids::IMPLICIT_VR_LITTLE_ENDIAN && ts != uids::EXPLICIT_VR_LITTLE_ENDIAN {
            return Pixels::decoded(obj, path, &ts, rows, columns, frames_used);
        }
        let int = |tag, default: i64| {
            obj.element_opt(tag).ok().flatten().and_then(|e| e.to_int::<i64>().ok()).unwrap_or(default)
        };
        let number = |tag, default: f64| {
            obj.element_opt(tag).ok().flatten().and_then(|e| e.to_float64().ok()).unwrap_or(default)
        };
        let (bits, signed, samples) =
            (int(tags::BITS_ALLOCATED, 16), int(tags::PIXEL_REPRESENTATION, 0) == 1, int(tags::SAMPLES_PER_PIXEL, 1));
        let float_data = [(tags::FLOAT_PIXEL_DATA, 32), (tags::DOUBLE_FLOAT_PIXEL_DATA, 64)]
            .into_iter()
            .find_map(|(tag, b)| obj.element_opt(tag).ok().flatten().map(|e| (e, b)));
        let (element, float) = match float_data {
            Some((e, b)) if b == bits => (e, true),
            Some(_) => return Err(dicom_err(path, format!("float pixel data with BitsAllocated {bits}"))),
            None => (obj.element(tags::PIXEL_DATA).map_err(|_| dicom_err(path, "no PixelData"))?, false),
        };
        if samples != 1 || !(float || bits == 8 || bits == 16) {
            return Err(Error::unsupported(format!(
                "{samples} samples of {bits} bits per pixel (need 1 sample of 8 or 16 bits, or float pixel data)"
            ))
            .in_file(path));
        }
        let bytes = element.to_bytes().map_err(|_| dicom_err(path, "PixelData is not native"))?;
        let width = bits as usize / 8;
        Ok(Pixels {
            bytes,
            width,
            signed,
            float,
            frame_bytes: rows * columns * width,
            slope: number(tags::RESCALE_SLOPE, 1.0),
            intercept: number(tags::RESCALE_INTERCEPT, 0.0),
        })
    }

    /// Decode an encapsulated (compressed) instance: JPEG (baseline, extended, lossless), RLE,
    /// JPEG-LS and JPEG 2000 where dicom-rs decodes them; any other syntax is refused naming it.
    /// Before anything is decoded: the instance may not claim more frames than the series uses,
    /// and each compressed frame must be the size the header says (a codestream that claims a
    /// larger image would make the decoder allocate for it).
    fn decoded(
        obj: &'a dicom_object::DefaultDicomObject,
        path: &Path,
        ts: &str,
        rows: usize,
        columns: usize,
        frames_used: usize,
    ) -> Result<Pixels<'a>> {
        use dicom_encoding::Codec;
        use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
        use dicom_pixeldata::PixelDecoder;
        let entry = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(ts);
        let name = entry.map_or_else(|| "an unknown transfer syntax".to_string(), |t| t.name().to_string());
        let decodable =
            entry.is_some_and(|t| t.can_decode_all() && matches!(t.codec(), Codec::EncapsulatedPixelData(Some(_), _)));
        if !decodable {
            return Err(Error::unsupported(format!(
                "DICOM transfer syntax {ts} ({name}) is not decoded by imhost; decompress the series first (e.g. `gdcmconv --raw`, `dcmdjpeg`)"
            ))
            .in_file(path));
        }
        let claimed =
            obj.element_opt(tags::NUMBER_OF_FRAMES).ok().flatten().and_then(|e| e.to_int::<i64>().ok()).unwrap_or(1);
        if claimed < 1 || claimed as usize > frames_used.max(1) {
            return Err(dicom_err(path, format!("NumberOfFrames is {claimed} where the series places {frames_used}")));
        }
        let bad =
            |e: &dyn std::fmt::Display| dicom_err(path, format!("{name} ({ts}) pixel data cannot be decoded: {e}"));
        let fragments = obj
            .element(tags::PIXEL_DATA)
            .map_err(|_| dicom_err(path, "no PixelData"))?
            .value()
            .fragments()
            .ok_or_else(|| bad(&"the pixel data is not encapsulated"))?;
        for fragment in fragments {
            if let Some((w, h)) = codestream_size(fragment)
                && (w, h) != (columns, rows)
            {
                return Err(bad(&format!(
                    "a compressed frame is {w}×{h} pixels where the header says {columns}×{rows}"
                )));
            }
        }
        let int = |tag, default: i64| {
            obj.element_opt(tag).ok().flatten().and_then(|e| e.to_int::<i64>().ok()).unwrap_or(default)
        };
        let bits = int(tags::BITS_ALLOCATED, 16);
        if int(tags::SAMPLES_PER_PIXEL, 1) != 1 || !(bits == 8 || bits == 16) {
            return Err(Error::unsupported(format!(
                "compressed pixels of {bits} bits (need 1 sample of 8 or 16 bits)"
            ))
            .in_file(path));
        }
        let width = bits as usize / 8;
        crate::memory::check(
            (rows as u64).checked_mul(columns as u64).and_then(|n| n.checked_mul(claimed as u64 * width as u64)),
            "decoding compressed DICOM pixels",
        )?;
        let decoded = obj.decode_pixel_data().map_err(|e| bad(&e))?;
        let number = |tag, default: f64| {
            obj.element_opt(tag).ok().flatten().and_then(|e| e.to_float64().ok()).unwrap_or(default)
        };
        Ok(Pixels {
            bytes: std::borrow::Cow::Owned(decoded.into_data()),
            width,
            signed: int(tags::PIXEL_REPRESENTATION, 0) == 1,
            float: false,
            frame_bytes: rows * columns * width,
            slope: number(tags::RESCALE_SLOPE, 1.0),
            intercept: number(tags::RESCALE_INTERCEPT, 0.0),
        })
    }

    /// The bytes of frame `f` (0-based), if the data holds it whole.
    fn frame(&self, f: usize) -> Option<&[u8]> {
        let start = f.checked_mul(self.frame_bytes)?;
        self.bytes.get(start..start.checked_add(self.frame_bytes)?)
    }

    /// Fill `out` with a frame's samples plus `intercept` as int16; false (and `out` partly
    /// written) when a value does not fit.
    fn fill_i16(&self, frame: &[u8], intercept: i64, out: &mut [i16]) -> bool {
        match (self.width, self.signed, intercept) {
            (2, true, 0) => {
                for (o, b) in out.iter_mut().zip(frame.chunks_exact(2)) {
                    *o = i16::from_le_bytes([b[0], b[1]]);
                }
                true
            }
            (2, signed, _) => {
                let mut ok = true;
                for (o, b) in out.iter_mut().zip(frame.chunks_exact(2)) {
                    let raw = if signed {
                        i64::from(i16::from_le_bytes([b[0], b[1]]))
                    } else {
                        i64::from(u16::from_le_bytes([b[0], b[1]]))
                    };
                    let v = raw + intercept;
                    ok &= (-32768..=32767).contains(&v);
                    *o = v as i16;
                }
                ok
            }
            (1, signed, _) => {
                let mut ok = true;
                for (o, &b) in out.iter_mut().zip(frame) {
                    let v = if signed { i64::from(b as i8) } else { i64::from(b) } + intercept;
                    ok &= (-32768..=32767).contains(&v);
                    *o = v as i16;
                }
                ok
            }
            _ => false,
        }
    }

    /// Sample `n` of a frame.
    fn value(&self, frame: &[u8], n: usize) -> f64 {
        let at = n * self.width;
        let b = &frame[at..at + self.width];
        match (self.width, self.float, self.signed) {
            (4, true, _) => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            (8, true, _) => f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            (1, _, false) => f64::from(b[0]),
            (1, _, true) => f64::from(b[0] as i8),
            (_, _, false) => f64::from(u16::from_le_bytes([b[0], b[1]])),
            (_, _, true) => f64::from(i16::from_le_bytes([b[0], b[1]])),
        }
    }
}

/// A sample type the reader fills.
trait Sample: Copy + Send + Sync {
    /// Fill `out` with a frame's values; false when one does not fit this type.
    fn fill(pixels: &Pixels<'_>, frame: &[u8], slope: f64, intercept: f64, out: &mut [Self]) -> bool;
}

impl Sample for i16 {
    fn fill(pixels: &Pixels<'_>, frame: &[u8], slope: f64, intercept: f64, out: &mut [i16]) -> bool {
        !pixels.float && slope == 1.0 && intercept.fract() == 0.0 && pixels.fill_i16(frame, intercept as i64, out)
    }
}

impl Sample for f32 {
    fn fill(pixels: &Pixels<'_>, frame: &[u8], slope: f64, intercept: f64, out: &mut [f32]) -> bool {
        for (n, o) in out.iter_mut().enumerate() {
            *o = (pixels.value(frame, n) * slope + intercept) as f32;
        }
        true
    }
}

/// A source and the images (instance index, frame) it holds.
type WorkItem<'a> = (&'a usize, &'a Vec<(usize, usize)>);

/// What filling a series' pixels needs: the images, their sources and slots, and which images
/// (with their frame) each source holds.
struct Fill<'a> {
    instances: &'a [Instance],
    sources: &'a [Source<'a>],
    slots: &'a [usize],
    work: &'a BTreeMap<usize, Vec<(usize, usize)>>,
    rows: usize,
    columns: usize,
}

impl Fill<'_> {
    /// Fill `target` (columns × rows × slices × frames); false when a value does not fit `T`.
    /// Frames are filled in parallel when every source holds images of one frame only (single-
    /// frame instances): each thread then parses its own sources and writes its own frames.
    fn fill_into<T: Sample>(&self, target: &mut Array4<T>) -> Result<bool> {
        use rayon::prelude::*;
        let one_frame_each = self.work.values().all(|l| l.iter().all(|&(_, f)| f == l[0].1));
        if !one_frame_each {
            let mut frames: Vec<_> = target.axis_iter_mut(ndarray::Axis(3)).collect();
            return self.sources_into(self.work.iter(), &mut frames, 0);
        }
        let nt = target.shape()[3];
        let mut by_frame: Vec<Vec<WorkItem<'_>>> = vec![vec![]; nt];
        for entry in self.work.iter() {
            by_frame[entry.1[0].1].push(entry);
        }
        let frames: Vec<_> = target.axis_iter_mut(ndarray::Axis(3)).collect();
        // The caller's memory limit holds on the worker threads too.
        let limit = crate::memory::caller_limit();
        let fits: Vec<bool> = frames
            .into_par_iter()
            .zip(by_frame)
            .enumerate()
            .map(|(f, (frame, work))| {
                let mut one = [frame];
                crate::memory::with_limit(limit, || self.sources_into(work.into_iter(), &mut one, f))
            })
            .collect::<Result<_>>()?;
        Ok(fits.into_iter().all(|x| x))
    }

    /// Fill the frames (`frames[f - first]`) of the images the given sources hold.
    fn sources_into<'w, T: Sample>(
        &self,
        work: impl Iterator<Item = (&'w usize, &'w Vec<(usize, usize)>)>,
        frames: &mut [ndarray::ArrayViewMut3<'_, T>],
        first: usize,
    ) -> Result<bool> {
        for (&source, list) in work {
            let path = &self.instances[list[0].0].path;
            let bytes = self.sources[source].bytes().map_err(|e| dicom_err(path, e))?;
            let obj = parse_checked(&bytes, false).map_err(|e| dicom_err(path, e))?;
            let frames_used = list.iter().map(|&(n, _)| self.instances[n].frame.unwrap_or(0) + 1).max().unwrap_or(1);
            let pixels = Pixels::of(&obj, path, self.rows, self.columns, frames_used)?;
            for &(n, f) in list {
                let i = &self.instances[n];
                let (slope, intercept) = i.rescale.unwrap_or((pixels.slope, pixels.intercept));
                if !(slope.is_finite() && intercept.is_finite()) || slope == 0.0 {
                    return Err(dicom_err(path, "bad RescaleSlope/RescaleIntercept"));
                }
                let which = i.frame.unwrap_or(0);
                let frame = pixels.frame(which).ok_or_else(|| {
                    dicom_err(
                        path,
                        format!(
                            "PixelData holds {} bytes, {} needed for frame {}",
                            pixels.bytes.len(),
                            pixels.frame_bytes * (which + 1),
                            which + 1
                        ),
                    )
                })?;
                let mut plane = frames[f - first].index_axis_mut(ndarray::Axis(2), self.slots[n]);
                let out = plane.as_slice_memory_order_mut().expect("a frame of a column-major array is contiguous");
                if !T::fill(&pixels, frame, slope, intercept, out) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

/// Read the series the sources hold: with `strict` (instances the caller chose) they must all
/// belong to one series; otherwise (a folder) the largest series is taken.
fn read_sources(sources: &[Source<'_>], dir: &Path, options: &DicomReadOptions, strict: bool) -> Result<DicomSeries> {
    let mut instances = Vec::new();
    let mut skipped = 0;
    for (n, source) in sources.iter().enumerate() {
        tracing::trace!("reading the DICOM header of {}", source.label().display());
        let images = read_header(source, n)?;
        skipped += usize::from(images.is_empty());
        instances.extend(images);
    }
    tracing::debug!(inputs = sources.len(), images = instances.len(), "DICOM series from {}", dir.display());
    if skipped > 0 && !instances.is_empty() {
        tracing::info!(
            "{} of {} inputs in {} are not DICOM images and were skipped",
            skipped,
            sources.len(),
            dir.display()
        );
    }
    if instances.is_empty() {
        return Err(Error::format("no DICOM image with ImagePositionPatient").in_file(dir));
    }
    // The largest series.
    let mut by_series: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
    for i in instances {
        by_series.entry(i.series.clone()).or_default().push(i);
    }
    let series_count = by_series.len();
    if series_count > 1 && strict {
        let counts: Vec<String> = by_series.iter().map(|(uid, v)| format!("{uid} ({} images)", v.len())).collect();
        return Err(Error::invalid_argument(format!(
            "the DICOM instances given belong to {series_count} series: {}; pass the instances of one series",
            counts.join(", ")
        ))
        .in_file(dir));
    }
    let instances = by_series.into_values().max_by_key(|v| v.len()).unwrap_or_default();
    if series_count > 1 {
        tracing::warn!(
            series = series_count,
            taken = instances.len(),
            "the folder holds several series; the largest is read"
        );
    }
    let first = &instances[0];
    let (rows, columns, orientation, spacing) = (first.rows, first.columns, first.orientation, first.spacing);
    for i in &instances {
        if i.rows != rows || i.columns != columns {
            return Err(dicom_err(
                &i.path,
                format!("{}×{} pixels where the series has {rows}×{columns}", i.columns, i.rows),
            ));
        }
        if i.orientation.iter().zip(&orientation).any(|(a, b)| (a - b).abs() > 1e-4)
            || i.spacing.iter().zip(&spacing).any(|(a, b)| (a - b).abs() > 1e-4)
        {
            return Err(dicom_err(&i.path, "orientation or pixel spacing differs within the series"));
        }
    }
    let o = orientation;
    let normal = [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]];
    let along = |p: &[f64; 3]| p[0] * normal[0] + p[1] * normal[1] + p[2] * normal[2];
    // Distinct slice positions.
    let mut positions: Vec<f64> = instances.iter().map(|i| along(&i.position)).collect();
    positions.sort_by(f64::total_cmp);
    positions.dedup_by(|a, b| (*a - *b).abs() < 0.01);
    let nk = positions.len();
    let slot = |i: &Instance| positions.iter().position(|&p| (p - along(&i.position)).abs() < 0.01).unwrap_or(0);
    if nk > 1 {
        let step = positions[1] - positions[0];
        if let Some(w) = positions.windows(2).find(|w| ((w[1] - w[0]) - step).abs() > 0.01 * step.abs().max(1e-3)) {
            return Err(Error::geometry(format!(
                "slice positions are not evenly spaced: a step of {:.3} mm where the series steps {step:.3} mm (missing slices?)",
                w[1] - w[0]
            ))
            .in_file(dir));
        }
    }
    // Frames.
    let key = |i: &Instance| -> (i64, i64) {
        match (i.temporal, i.time) {
            (Some(t), _) => (t, 0),
            (None, Some(s)) => ((s * 1000.0).round() as i64, 0),
            (None, None) => (0, i.instance_number),
        }
    };
    let mut frames: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    let have_keys = instances.iter().all(|i| i.temporal.is_some() || i.time.is_some());
    if have_keys {
        for (n, i) in instances.iter().enumerate() {
            frames.entry(key(i).0).or_default().push(n);
        }
        // Acquisition times may differ slightly across the slices of one rotation: merge keys
        // closer than half the smallest gap only when each key would otherwise miss slices.
        if instances.iter().all(|i| i.temporal.is_none()) && frames.values().any(|v| v.len() < nk) {
            let mut merged: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
            let mut current: Option<i64> = None;
            for (k, v) in frames {
                match current {
                    Some(c) if merged[&c].len() < nk => merged.get_mut(&c).expect("present").extend(v),
                    _ => {
                        current = Some(k);
                        merged.insert(k, v);
                    }
                }
            }
            frames = merged;
        }
    } else {
        // No time keys: the n-th instance (by InstanceNumber) at each position is frame n.
        let mut per_slot: Vec<Vec<usize>> = vec![vec![]; nk];
        for (n, i) in instances.iter().enumerate() {
            per_slot[slot(i)].push(n);
        }
        for s in &mut per_slot {
            s.sort_by_key(|&n| instances[n].instance_number);
            for (f, &n) in s.iter().enumerate() {
                frames.entry(f as i64).or_default().push(n);
            }
        }
    }
    let nt = frames.len();
    let frame_lists: Vec<Vec<usize>> = frames.into_values().collect();
    for (f, list) in frame_lists.iter().enumerate() {
        let mut seen = vec![false; nk];
        for &n in list {
            let s = slot(&instances[n]);
            if seen[s] {
                return Err(dicom_err(
                    &instances[n].path,
                    format!("frame {f} holds two slices at position {:.2} mm", positions[s]),
                ));
            }
            seen[s] = true;
        }
        if let Some(missing) = seen.iter().position(|s| !s) {
            return Err(Error::format(format!(
                "frame {f} has no slice at position {:.2} mm (incomplete series)",
                positions[missing]
            ))
            .in_file(dir));
        }
    }
    let bytes = (rows as u64)
        .saturating_mul(columns as u64)
        .saturating_mul(nk as u64)
        .saturating_mul(nt as u64)
        .saturating_mul(4);
    if bytes > options.max_bytes {
        return Err(Error::too_large(format!(
            "the series needs {bytes} bytes, more than the limit of {}",
            options.max_bytes
        ))
        .in_file(dir));
    }
    // Geometry from the first slice of the first frame.
    let first_slice = frame_lists[0].iter().copied().find(|&n| slot(&instances[n]) == 0).expect("complete frame");
    let step = if nk > 1 {
        let second = frame_lists[0].iter().copied().find(|&n| slot(&instances[n]) == 1).expect("complete frame");
        std::array::from_fn(|a| instances[second].position[a] - instances[first_slice].position[a])
    } else {
        normal
    };
    let plane = DicomPlane {
        image_orientation: orientation,
        image_position: instances[first_slice].position,
        pixel_spacing: spacing,
    };
    let geometry = Geometry::from_dicom_plane(&plane, step)?;
    tracing::info!(columns, rows, slices = nk, frames = nt, "reading a DICOM series of {} images", instances.len());
    // Pixels: each file or buffer parsed once, all the frames it holds filled from it, straight
    // into int16 HU when every instance is integral with slope 1 (the usual CT), else float32
    // (also when a value turns out not to fit int16).
    let integral = instances.iter().all(|i| {
        let (slope, intercept) = i.rescale.unwrap_or((1.0, 0.0));
        (i.bits == 8 || i.bits == 16) && slope == 1.0 && intercept.fract() == 0.0
    });
    let mut work: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
    for (f, list) in frame_lists.iter().enumerate() {
        for &n in list {
            work.entry(instances[n].source).or_default().push((n, f));
        }
    }
    let slots: Vec<usize> = instances.iter().map(slot).collect();
    let fill = Fill { instances: &instances, sources, slots: &slots, work: &work, rows, columns };
    let shape = (columns, rows, nk, nt).f();
    let mut as_i16 = None;
    if integral {
        let mut a = Array4::<i16>::zeros(shape);
        if fill.fill_into(&mut a)? {
            as_i16 = Some(a);
        } else {
            tracing::debug!("values outside int16: the series is read as float32");
        }
    }
    let target = match as_i16 {
        Some(a) => Target::I16(a),
        None => {
            let mut a = Array4::<f32>::zeros(shape);
            fill.fill_into(&mut a)?;
            Target::F32(a)
        }
    };
    let times: Option<Vec<f64>> = (nt > 1).then(|| {
        frame_lists.iter().map(|l| l.iter().filter_map(|&n| instances[n].time).fold(f64::INFINITY, f64::min)).collect()
    });
    let frame_times = match times {
        None => None,
        Some(t) if t.iter().all(|x| x.is_finite()) => {
            let t0 = t[0];
            // Past midnight: add a day.
            Some(FrameTimes::new(
                t.iter().map(|x| if x < &t0 { x + 86400.0 - t0 } else { x - t0 }).collect(),
                TimeSource::Header,
            )?)
        }
        Some(_) => {
            return Err(Error::format("the series has several frames but no AcquisitionTime/ContentTime to time them")
                .in_file(dir));
        }
    };
    let volume = match target {
        Target::I16(data) => AnyVolume::from(Volume::from_parts(data, geometry, frame_times)?),
        Target::F32(data) => AnyVolume::from(Volume::from_parts(data, geometry, frame_times)?),
    };
    let series_instance_uid = instances[0].series.clone();
    let mut placed = Vec::with_capacity(instances.len());
    for (frame, list) in frame_lists.iter().enumerate() {
        let mut list = list.clone();
        list.sort_by_key(|&n| slot(&instances[n]));
        for n in list {
            let i = &instances[n];
            placed.push(SourceInstance {
                ids: i.ids.clone(),
                slice: slot(i),
                frame,
                source: i.source,
                instance_frame: i.frame,
            });
        }
    }
    Ok(DicomSeries { volume, series_instance_uid, instances: placed })
}

/// Write a 3-D or 4-D `i16` HU volume as a CT series into `dir` (one file per slice and frame,
/// explicit VR little endian), with acquisition times from the frame times. For tests and
/// phantom export; the UIDs are derived from `uid_root` and are not globally registered.
pub fn write_dicom_series(volume: &Volume<i16>, dir: &Path, uid_root: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::from(e).in_file(dir))?;
    let [ni, nj, nk, nt] = volume.shape();
    let g = volume.geometry();
    let times: Vec<f64> = volume.frame_times().map(|f| f.as_slice().to_vec()).unwrap_or_else(|| vec![0.0]);
    let series_uid = format!("{uid_root}.1");
    let study_uid = format!("{uid_root}.2");
    let frame_uid = format!("{uid_root}.4");
    let data = volume.data();
    for t in 0..nt {
        for k in 0..nk {
            let plane = g.dicom_plane(k);
            let time = 36000.0 + times[t];
            let tm = format!("{:02}{:02}{:09.6}", (time / 3600.0) as u32, ((time % 3600.0) / 60.0) as u32, time % 60.0);
            let ds = |v: &[f64]| v.iter().map(|x| format!("{x:.6}")).collect::<Vec<_>>().join("\\");
            let sop_uid = format!("{uid_root}.3.{}", t * nk + k + 1);
            let pixels: Vec<u16> =
                (0..nj).flat_map(|j| (0..ni).map(move |i| (i, j))).map(|(i, j)| data[[i, j, k, t]] as u16).collect();
            let obj = InMemDicomObject::from_element_iter([
                DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from(uids::CT_IMAGE_STORAGE)),
                DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from(sop_uid.as_str())),
                DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("CT")),
                DataElement::new(
                    tags::SERIES_DESCRIPTION,
                    VR::LO,
                    PrimitiveValue::from("imhost CTP phantom - RESEARCH USE ONLY"),
                ),
                DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("Phantom^imhost")),
                DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from("IMHOST-PHANTOM")),
                DataElement::new(tags::PATIENT_BIRTH_DATE, VR::DA, PrimitiveValue::Empty),
                DataElement::new(tags::PATIENT_SEX, VR::CS, PrimitiveValue::Empty),
                DataElement::new(tags::REFERRING_PHYSICIAN_NAME, VR::PN, PrimitiveValue::Empty),
                DataElement::new(tags::STUDY_ID, VR::SH, PrimitiveValue::from("1")),
                DataElement::new(tags::STUDY_DATE, VR::DA, PrimitiveValue::from("20260101")),
                DataElement::new(tags::STUDY_TIME, VR::TM, PrimitiveValue::from("100000")),
                DataElement::new(tags::ACCESSION_NUMBER, VR::SH, PrimitiveValue::from("IMH0001")),
                DataElement::new(tags::BODY_PART_EXAMINED, VR::CS, PrimitiveValue::from("HEAD")),
                DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from(study_uid.as_str())),
                DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, PrimitiveValue::from(series_uid.as_str())),
                DataElement::new(tags::FRAME_OF_REFERENCE_UID, VR::UI, PrimitiveValue::from(frame_uid.as_str())),
                DataElement::new(tags::INSTANCE_NUMBER, VR::IS, PrimitiveValue::from(format!("{}", t * nk + k + 1))),
                DataElement::new(
                    tags::TEMPORAL_POSITION_IDENTIFIER,
                    VR::IS,
                    PrimitiveValue::from(format!("{}", t + 1)),
                ),
                DataElement::new(tags::ACQUISITION_TIME, VR::TM, PrimitiveValue::from(tm.as_str())),
                DataElement::new(tags::IMAGE_POSITION_PATIENT, VR::DS, PrimitiveValue::from(ds(&plane.image_position))),
                DataElement::new(
                    tags::IMAGE_ORIENTATION_PATIENT,
                    VR::DS,
                    PrimitiveValue::from(ds(&plane.image_orientation)),
                ),
                DataElement::new(tags::PIXEL_SPACING, VR::DS, PrimitiveValue::from(ds(&plane.pixel_spacing))),
                DataElement::new(tags::SLICE_THICKNESS, VR::DS, PrimitiveValue::from(format!("{:.6}", g.spacing[2]))),
                DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
                DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from("MONOCHROME2")),
                DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(nj as u16)),
                DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(ni as u16)),
                DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16)),
                DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(16u16)),
                DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(15u16)),
                DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(1u16)),
                DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, PrimitiveValue::from("0")),
                DataElement::new(tags::RESCALE_SLOPE, VR::DS, PrimitiveValue::from("1")),
                DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(pixels.into())),
            ]);
            let file = obj
                .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
                .map_err(|e| Error::internal(format!("DICOM meta: {e}")))?;
            let path = dir.join(format!("f{t:03}_s{k:03}.dcm"));
            file.write_to_file(&path).map_err(|e| Error::internal(format!("DICOM write: {e}")).in_file(&path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dicom_times() {
        assert_eq!(parse_tm("101530.5"), Some(36930.5));
        assert_eq!(parse_tm("10:15:30"), Some(36930.0));
        assert_eq!(parse_tm("1015"), Some(36900.0));
        assert_eq!(parse_tm(""), None);
    }

    /// A CT series of 2×2 slices written by us (explicit VR little endian), one file.
    fn one_file() -> Vec<u8> {
        use ndarray::ShapeBuilder;
        let dir = std::env::temp_dir().join(format!("imhost-dicom-lengths-{}", std::process::id()));
        let data = ndarray::Array4::from_shape_fn((2, 2, 2, 1).f(), |(i, j, k, _)| (i + j + k) as i16);
        let volume = Volume::from_parts(data, Geometry::identity(), None).unwrap();
        write_dicom_series(&volume, &dir, "1.2.826.0.1.3680043.10.1").unwrap();
        let first = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
        let bytes = std::fs::read(first).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        bytes
    }

    #[test]
    fn declared_lengths_past_the_end_are_refused_before_parsing() {
        let bytes = one_file();
        assert_eq!(check_declared_lengths(&bytes), Ok(()));
        // Pixel data (7FE0,0010) OW: its 32-bit length follows the tag, the VR and 2 reserved bytes.
        let at = bytes.windows(6).rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00, b'O', b'W']).unwrap();
        let mut forged = bytes.clone();
        forged[at + 8..at + 12].copy_from_slice(&0x7000_0000u32.to_le_bytes());
        let e = check_declared_lengths(&forged).unwrap_err();
        assert!(e.contains("(7FE0,0010) claims 1879048192 bytes"), "{e}");
        // An unknown VR code is read as UN (32-bit length), as dicom-rs does: a forged one too.
        let uid = bytes.windows(4).position(|w| w == [0x08, 0x00, 0x16, 0x00]).unwrap();
        let mut unknown = bytes.clone();
        unknown[uid + 4..uid + 6].copy_from_slice(b"ZZ");
        unknown[uid + 8..uid + 12].copy_from_slice(&u32::MAX.wrapping_sub(5).to_le_bytes());
        assert!(check_declared_lengths(&unknown).unwrap_err().contains("(0008,0016)"));
        // A truncated file: the last element's value runs past the end.
        assert!(check_declared_lengths(&bytes[..bytes.len() - 3]).is_err());
    }
}
