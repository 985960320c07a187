//! `imh_dicom_results`: the outputs of a model or perfusion run as DICOM instances (Parametric
//! Maps, Segmentations, a TID 1500 measurement report, optionally the caller's preview as a
//! Secondary Capture), linked to the DICOM series the input was read from, handed out as owned
//! byte buffers (what an Orthanc plugin stores) or written to a folder.

use std::ffi::{CString, c_char};

use imhost_core::AnyVolume;
use imhost_core::io::dicom::results::{DicomResults, ResultOptions, ResultParts, ResultSource, write_results};
use imhost_core::registry::Manifest;
use serde_json::Value;

use crate::context::{context_arg, imh_context};
use crate::perfusion::imh_perfusion_result;
use crate::registry::imh_model_result;
use crate::status::{FfiError, FfiResult, arg_out, arg_ref, ffi_boundary, imh_status, path_arg};
use crate::volume::{imh_buffer, imh_volume};

/// DICOM instances made from one run's results.
///
/// Thread safety: immutable; any number of threads may read it.
#[allow(non_camel_case_types)]
pub struct imh_dicom_results {
    results: DicomResults,
    names: Vec<CString>,
    json: CString,
}

/// What a run result keeps so that it can be written as DICOM later.
#[derive(Debug)]
pub(crate) struct DicomParts {
    /// The manifest of the model that ran.
    pub manifest: Manifest,
    /// Scores by output name.
    pub scores: Vec<(String, f64)>,
    /// The report.
    pub report: Value,
    /// Label maps the result does not hand out as such (the perfusion `lesions` map).
    pub extra_volumes: Vec<(String, AnyVolume)>,
    /// The run's own preview (PNG), stored when the caller passes none.
    pub preview_png: Option<Vec<u8>>,
}

/// # Safety
/// `p` is NULL or NUL-terminated.
unsafe fn options_arg(p: *const c_char) -> FfiResult<ResultOptions> {
    if p.is_null() {
        return Ok(ResultOptions::default());
    }
    // SAFETY: NUL-terminated (header contract).
    let text = unsafe { std::ffi::CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| FfiError::new(imh_status::InvalidArgument, "options_json is not UTF-8"))?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| FfiError::new(imh_status::InvalidArgument, format!("options_json is not JSON: {e}")))?;
    Ok(ResultOptions::from_json(&value)?)
}

/// # Safety
/// `p` is NULL or points to a valid `imh_buffer` whose bytes live for the call.
unsafe fn preview_arg<'a>(p: *const imh_buffer) -> FfiResult<Option<&'a [u8]>> {
    // SAFETY: NULL or a valid struct (header contract).
    let Some(b) = (unsafe { p.as_ref() }) else { return Ok(None) };
    if b.data.is_null() || b.size == 0 || b.size > isize::MAX as usize {
        return Err(FfiError::new(imh_status::InvalidArgument, "preview_png is empty or NULL"));
    }
    // SAFETY: `size` bytes at `data`, live for the call (header contract).
    Ok(Some(unsafe { std::slice::from_raw_parts(b.data.cast::<u8>(), b.size) }))
}

/// The source of the results: the DICOM series `source` was read from, else a new study on the
/// grid of `source` (or of the first output volume when `source` is NULL).
fn source_of(
    source: Option<&imh_volume>,
    first: Option<&AnyVolume>,
    options: &ResultOptions,
) -> FfiResult<ResultSource> {
    if let Some(v) = source
        && let Some(s) = v.dicom.as_deref()
    {
        // A 4-D series (CTP) also gets its temporal average as a derived CT series, the 3-D
        // image viewers draw the maps on.
        return Ok(s.clone().with_temporal_average(&v.volume)?);
    }
    let grid = source.map(|v| &v.volume).or(first).ok_or_else(|| {
        FfiError::new(imh_status::InvalidArgument, "no source volume and no output volume to take the grid from")
    })?;
    let [ni, nj, nk, _] = grid.shape();
    tracing::warn!(
        "the source was not read from DICOM: the DICOM results start a new study with no patient identifiers"
    );
    Ok(ResultSource::new_study(*grid.geometry(), [ni, nj, nk], options))
}

fn hand_out_results(
    results: DicomResults,
    manifest: &Manifest,
    source: &ResultSource,
    out: *mut *mut imh_dicom_results,
) -> FfiResult<()> {
    let names = results
        .instances
        .iter()
        .map(|r| CString::new(r.file_name.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| FfiError::new(imh_status::Internal, e.to_string()))?;
    let json = CString::new(results.index_json(manifest, source).to_string())
        .map_err(|e| FfiError::new(imh_status::Internal, e.to_string()))?;
    // SAFETY: checked by arg_out! in the caller.
    unsafe { out.write(Box::into_raw(Box::new(imh_dicom_results { results, names, json }))) };
    Ok(())
}

/// Write the results of a model run (`imh_registry_run`) as DICOM: one Parametric Map per map,
/// one Segmentation per label map, a TID 1500 measurement report of the scores (each volume
/// referencing the segment it was measured on), QC flags and the research-use statement, and
/// `preview_png` (NULL: none) as a Secondary Capture, and for a 4-D DICOM source (CTP) the
/// temporal average of its frames as a derived CT series (one instance per slice, file names
/// `ct_average_NNN.dcm`), which the maps and segmentations reference first so that viewers have
/// a 3-D image to overlay them on. `source` is the volume the model ran on:
/// read with `imh_volume_read_dicom` or `imh_volume_read_dicom_folder`, the results copy its
/// patient and study, share its Frame of Reference and reference its instances; any other
/// volume (or NULL) starts a new study. `options_json` (NULL: defaults) is a JSON object:
/// `uid_root` (default UUID-derived `2.25`), `uid_seed` (reproducible UIDs, for tests),
/// `content_date` + `content_time`, `first_series_number` (default 900). Outputs that cannot be
/// DICOM (a 4-D map, a volume off the source grid) are listed under `"skipped"` in
/// `imh_dicom_results_json`. On success `*out` receives the results
/// (`imh_dicom_results_free`).
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_model_result_to_dicom(
    context: *const imh_context,
    result: *const imh_model_result,
    source: *const imh_volume,
    options_json: *const c_char,
    preview_png: *const imh_buffer,
    out: *mut *mut imh_dicom_results,
) -> imh_status {
    ffi_boundary!("imh_model_result_to_dicom", {
        let result = arg_ref!(result, "result");
        let volumes = result.named_volumes().collect();
        // SAFETY: the header's contract for every argument.
        unsafe { to_dicom(context, volumes, result.dicom_parts(), source, options_json, preview_png, out) }
    })
}

/// `imh_model_result_to_dicom` for a perfusion result (`imh_perfusion_run`): the maps, the
/// lesion segmentation (core, penumbra), hypoperfusion and brain masks, and a report with the
/// volumes, mismatch, DEFUSE-3/DAWN and QC flags (volumes withheld under a flag are left out and
/// the reason stated).
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_perfusion_result_to_dicom(
    context: *const imh_context,
    result: *const imh_perfusion_result,
    source: *const imh_volume,
    options_json: *const c_char,
    preview_png: *const imh_buffer,
    out: *mut *mut imh_dicom_results,
) -> imh_status {
    ffi_boundary!("imh_perfusion_result_to_dicom", {
        let result = arg_ref!(result, "result");
        let volumes = result.named_volumes().collect();
        // SAFETY: the header's contract for every argument.
        unsafe { to_dicom(context, volumes, result.dicom_parts(), source, options_json, preview_png, out) }
    })
}

/// What both `*_to_dicom` calls do once they have the result's volumes.
///
/// # Safety
/// The arguments as the header documents them for `imh_model_result_to_dicom`.
unsafe fn to_dicom<'a>(
    context: *const imh_context,
    mut volumes: Vec<(&'a str, &'a AnyVolume)>,
    parts: &'a DicomParts,
    source: *const imh_volume,
    options_json: *const c_char,
    preview_png: *const imh_buffer,
    out: *mut *mut imh_dicom_results,
) -> FfiResult<()> {
    let context = context_arg(context)?;
    let out = arg_out!(out, "out");
    // SAFETY: header contract for the three optional arguments.
    let (options, preview, source) =
        unsafe { (options_arg(options_json)?, preview_arg(preview_png)?, source.as_ref()) };
    let preview = preview.or(parts.preview_png.as_deref());
    volumes.extend(parts.extra());
    context.scope(|| {
        let source = source_of(source, volumes.first().map(|v| v.1), &options)?;
        let borrowed = ResultParts { volumes, scores: &parts.scores, report: &parts.report };
        let results = imhost_core::memory::with_limit(context.memory_limit(), || {
            write_results(&borrowed, &parts.manifest, &source, preview, &options)
        })?;
        hand_out_results(results, &parts.manifest, &source, out)
    })
}

impl DicomParts {
    fn extra(&self) -> impl Iterator<Item = (&str, &AnyVolume)> + '_ {
        self.extra_volumes.iter().map(|(n, v)| (n.as_str(), v))
    }
}

/// Number of instances in `results` (0 for NULL).
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_dicom_results_count(results: *const imh_dicom_results) -> usize {
    ffi_boundary!("imh_dicom_results_count", default = 0, {
        // SAFETY: NULL or a live results object.
        unsafe { results.as_ref() }.map_or(0, |r| r.results.instances.len())
    })
}

/// Borrow instance `index` of `results`: `*data`/`*size` receive its DICOM Part 10 bytes (with
/// the preamble), `*file_name` (may be NULL) a file name for it (`pm_cbf.dcm`, `seg_lesions.dcm`,
/// `sr_report.dcm`, `sc_preview.dcm`). All stay owned by `results` and valid until it is freed.
/// Its SOP Class, SOP Instance and Series UIDs are in `imh_dicom_results_json`.
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_dicom_results_instance(
    results: *const imh_dicom_results,
    index: usize,
    data: *mut *const u8,
    size: *mut usize,
    file_name: *mut *const c_char,
) -> imh_status {
    ffi_boundary!("imh_dicom_results_instance", {
        let results = arg_ref!(results, "results");
        let data = arg_out!(data, "data");
        let size = arg_out!(size, "size");
        let Some(instance) = results.results.instances.get(index) else {
            return Err(FfiError::new(
                imh_status::InvalidArgument,
                format!("index {index}: the results hold {} instances", results.results.instances.len()),
            ));
        };
        // SAFETY: out-pointers checked non-NULL; `file_name` may be NULL (header contract).
        unsafe {
            data.write(instance.bytes.as_ptr());
            size.write(instance.bytes.len());
            if !file_name.is_null() {
                file_name.write(results.names[index].as_ptr());
            }
        }
        Ok(())
    })
}

/// What `results` holds, as JSON (owned by `results`): `{"schema": "imhost-dicom-results/1",
/// "research_use_only", "model": {id, version}, "source_series_instance_uid",
/// "study_instance_uid", "instances": [{output, kind, file_name,
/// sop_class_uid, sop_instance_uid, series_instance_uid}], "skipped": [{output, reason}]}`, the
/// instances in the order of `imh_dicom_results_instance`. NULL for NULL.
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_dicom_results_json(results: *const imh_dicom_results) -> *const c_char {
    ffi_boundary!("imh_dicom_results_json", default = std::ptr::null(), {
        // SAFETY: NULL or a live results object.
        unsafe { results.as_ref() }.map_or(std::ptr::null(), |r| r.json.as_ptr())
    })
}

/// Write every instance of `results` into the folder `dir` (created if missing), each file
/// under its file name, written to a temporary file first and renamed (never through a link
/// planted at the name).
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_dicom_results_write(
    context: *const imh_context,
    results: *const imh_dicom_results,
    dir: *const c_char,
) -> imh_status {
    ffi_boundary!("imh_dicom_results_write", {
        let context = context_arg(context)?;
        let results = arg_ref!(results, "results");
        let dir = path_arg(dir, "dir")?;
        context.scope(|| results.results.write_to(dir))?;
        Ok(())
    })
}

/// Free `results` (NULL is ignored). Buffers borrowed from it become invalid.
///
/// Thread safety: not concurrently with other uses of the same results.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_dicom_results_free(results: *mut imh_dicom_results) {
    ffi_boundary!("imh_dicom_results_free", default = (), {
        if !results.is_null() {
            // SAFETY: allocated by a *_to_dicom call and not freed before (header contract).
            drop(unsafe { Box::from_raw(results) });
        }
    })
}
