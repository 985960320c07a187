//! `imh_perfusion_*`: the CT-perfusion pipeline in one call — a convenience over the registry's
//! `perfusion-*` models (the same model, options mapping and checks as `imh_registry_run`).

use std::ffi::{CString, c_char};
use std::sync::Arc;

use imhost_core::perfusion::Method;
use imhost_core::registry::builtin::{LABEL_CORE, Perfusion};
use imhost_core::registry::{Model, run_checked};
use imhost_core::{AnyVolume, Volume};
use serde_json::{Map, Value, json};

use crate::context::{context_arg, imh_context};
use crate::model::imh_model;
use crate::ops::{imh_run_options, read_run_options, read_size_prefixed, with_control_relayed};
use crate::status::{FfiError, FfiResult, arg_out, arg_ref, ffi_boundary, imh_status};
use crate::view::{imh_view, view_from_c};
use crate::volume::imh_volume;

/// Deconvolution method (`imh_perfusion_options.method`).
#[allow(non_camel_case_types)]
pub type imh_perfusion_method = u32;
/// The default method (oscillation-index SVD).
pub const IMH_PERFUSION_METHOD_DEFAULT: imh_perfusion_method = 0;
/// Truncated SVD of the Toeplitz matrix.
pub const IMH_PERFUSION_METHOD_SSVD: imh_perfusion_method = 1;
/// Block-circulant truncated SVD.
pub const IMH_PERFUSION_METHOD_BSVD: imh_perfusion_method = 2;
/// Oscillation-index block-circulant SVD.
pub const IMH_PERFUSION_METHOD_OSVD: imh_perfusion_method = 3;
/// Tikhonov-regularised block-circulant deconvolution.
pub const IMH_PERFUSION_METHOD_TIKHONOV: imh_perfusion_method = 4;
/// Bennink's box-shaped non-linear regression.
pub const IMH_PERFUSION_METHOD_NLR: imh_perfusion_method = 5;
/// The perfusion CNN (perfusion-cnn-gava2023): CBV, CBF, TTP without an AIF; needs
/// `imh_perfusion_options.model`. No Tmax or delay; hypoperfusion by relative TTP > 4.5 s.
pub const IMH_PERFUSION_METHOD_CNN: imh_perfusion_method = 6;

/// `imh_perfusion_options.flags`: `age` holds the patient's age in years.
pub const IMH_PERFUSION_HAS_AGE: u32 = 1;
/// `imh_perfusion_options.flags`: `nihss` holds the NIH stroke scale.
pub const IMH_PERFUSION_HAS_NIHSS: u32 = 2;
/// `imh_perfusion_options.flags`: use `aif_voxel` instead of the automatic AIF.
pub const IMH_PERFUSION_MANUAL_AIF: u32 = 4;
/// `imh_perfusion_options.flags`: skip the bilateral filter.
pub const IMH_PERFUSION_NO_FILTER: u32 = 8;
/// `imh_perfusion_options.flags`: estimate motion (and flag it) but do not correct it, even
/// when `registration` is set. Added in 0.2.
pub const IMH_PERFUSION_NO_MOTION_CORRECTION: u32 = 16;

/// Rigid registration supplied by the host for motion correction (e.g. 3D Slicer's own ITK, so
/// that no second ITK enters its process). Register `moving` onto `fixed` — two 3-D frames of
/// `shape[0] × shape[1] × shape[2]` float32 HU voxels, i fastest, on the grid `geometry` (LPS) —
/// and fill:
/// - `motion[6]`: the transform found, fixed → moving points `p' = R·(p − c) + c + t`: Euler
///   angles about x, y, z in radians (ITK's `Euler3DTransform` in its default order,
///   R = Rz·Rx·Ry), then the translation `t` in mm (LPS), about the centre `c` of the grid
///   (ITK's geometric initialiser puts it there);
/// - `resampled`: `moving` resampled through that transform onto `fixed`'s grid (same size;
///   −1024 HU where it has no data).
///
/// Since 0.3 the library calls it with frames shrunk to about 2 mm pixels (0.45 mm pixels: 4×
/// in-plane; `geometry` describes the shrunk grid) and only for the frames whose motion
/// estimate reaches 0.1 mm, then applies the transform to the full-size frame itself. It checks
/// the transform against `resampled` first: where the two disagree (another centre or angle
/// order), that frame is registered again at full size, `resampled` is used as it is, and the
/// report warns.
///
/// Return 0 (`IMH_STATUS_OK`) on success; any other value stops the run with
/// `IMH_STATUS_INTERNAL` naming the registration and that value (log the reason yourself).
/// **Called from the library's worker threads, several frames at once** (up to the context's
/// thread count): it must be thread-safe and must return normally (no exception, no longjmp).
/// The buffers are valid only during the call.
#[allow(non_camel_case_types)]
pub type imh_rigid_registration_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut std::ffi::c_void,
        fixed: *const f32,
        moving: *const f32,
        shape: *const i64,
        geometry: *const crate::view::imh_geometry,
        motion: *mut f64,
        resampled: *mut f32,
    ) -> u32,
>;

/// Options of `imh_perfusion_run`. Size-prefixed and zero meaning default for every field:
/// `imh_perfusion_options o = {sizeof o};` runs the default pipeline. Fields beyond the caller's
/// `struct_size` take their defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct imh_perfusion_options {
    /// `sizeof(imh_perfusion_options)` as the caller compiled it.
    pub struct_size: u32,
    /// One of `IMH_PERFUSION_METHOD_*`.
    pub method: imh_perfusion_method,
    /// `IMH_PERFUSION_*` flags.
    pub flags: u32,
    /// AIF voxel `[i, j, k]` (with `IMH_PERFUSION_MANUAL_AIF`).
    pub aif_voxel: [u32; 3],
    /// Age in years (with `IMH_PERFUSION_HAS_AGE`).
    pub age: f64,
    /// NIHSS (with `IMH_PERFUSION_HAS_NIHSS`).
    pub nihss: f64,
    /// Bilateral filter spatial σ in mm (0: default 2.5).
    pub filter_sigma_mm: f64,
    /// Bilateral filter range σ in HU (0: default 10).
    pub filter_range_hu: f64,
    /// The model of `IMH_PERFUSION_METHOD_CNN` (from `imh_model_load`; borrowed for the call,
    /// NULL otherwise). Added in 0.2.
    pub model: *const imh_model,
    /// Host-supplied rigid registration: frames are registered to the first where the motion
    /// estimate finds motion (≥ 0.5 mm); NULL: motion is estimated and flagged, not corrected.
    /// Used by the classical methods. Added in 0.2.
    pub registration: imh_rigid_registration_fn,
    /// Passed back to `registration` unchanged.
    pub registration_user_data: *mut std::ffi::c_void,
    /// What `registration` is, for the report (e.g. "ITK 5.4 rigid (Euler3D, mean squares)");
    /// NULL: "host registration". Borrowed for the call. Added in 0.2.
    pub registration_name: *const c_char,
}

/// The host's registration (`callback`, its user data and name, from an options struct) as the
/// pipeline's back end; `None` without a callback.
///
/// # Safety
/// `name` is NULL or NUL-terminated and live for the call; the callback honours the header's
/// contract (thread-safe for `user_data`, returns normally).
pub(crate) unsafe fn host_registration(
    callback: imh_rigid_registration_fn,
    user_data: *mut std::ffi::c_void,
    name: *const c_char,
) -> FfiResult<Option<Arc<dyn imhost_core::perfusion::motion::RigidRegistration + Send>>> {
    let Some(callback) = callback else { return Ok(None) };
    let name = if name.is_null() {
        "host registration".to_owned()
    } else {
        // SAFETY: caller contract.
        unsafe { std::ffi::CStr::from_ptr(name) }
            .to_str()
            .map_err(|_| FfiError::new(imh_status::InvalidArgument, "registration_name is not valid UTF-8"))?
            .to_owned()
    };
    Ok(Some(Arc::new(HostRegistration { callback, user_data, name })))
}

/// The host's registration callback as the pipeline's back end.
struct HostRegistration {
    callback: unsafe extern "C" fn(
        *mut std::ffi::c_void,
        *const f32,
        *const f32,
        *const i64,
        *const crate::view::imh_geometry,
        *mut f64,
        *mut f32,
    ) -> u32,
    user_data: *mut std::ffi::c_void,
    name: String,
}

// SAFETY: the header requires the callback to be thread-safe for its user data; the pointers
// are only passed back to it.
unsafe impl Send for HostRegistration {}
// SAFETY: as above.
unsafe impl Sync for HostRegistration {}

impl imhost_core::perfusion::motion::RigidRegistration for HostRegistration {
    fn register(
        &self,
        fixed: &[f32],
        moving: &[f32],
        shape: [usize; 3],
        geometry: &imhost_core::Geometry,
    ) -> imhost_core::Result<(imhost_core::phantom::ctp::RigidMotion, Vec<f32>)> {
        let n = shape.iter().product::<usize>();
        if fixed.len() != n || moving.len() != n {
            return Err(imhost_core::Error::internal("registration frames do not match their shape"));
        }
        let dims = shape.map(|d| d as i64);
        let grid = crate::view::imh_geometry::from(geometry);
        let mut motion = [f64::NAN; 6];
        let mut resampled = vec![f32::NAN; n];
        // SAFETY: every pointer is valid for the call and sized as the header says; the
        // callback's contract (thread-safe, returns normally) is the host's.
        let status = unsafe {
            (self.callback)(
                self.user_data,
                fixed.as_ptr(),
                moving.as_ptr(),
                dims.as_ptr(),
                &grid,
                motion.as_mut_ptr(),
                resampled.as_mut_ptr(),
            )
        };
        if status != 0 {
            return Err(imhost_core::Error::internal(format!(
                "the host's registration ({}) failed with {}",
                self.name,
                imh_status::name(status).to_string_lossy()
            )));
        }
        if motion.iter().any(|x| !x.is_finite()) {
            return Err(imhost_core::Error::internal(format!(
                "the host's registration ({}) returned a non-finite transform",
                self.name
            )));
        }
        let motion = imhost_core::phantom::ctp::RigidMotion {
            angles: [motion[0], motion[1], motion[2]],
            translation: [motion[3], motion[4], motion[5]],
        };
        Ok((motion, resampled))
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// Which output of a perfusion result (`imh_perfusion_result_volume`).
#[allow(non_camel_case_types)]
pub type imh_perfusion_output = u32;
/// CBF, float32, ml/100 g/min.
pub const IMH_PERFUSION_CBF: imh_perfusion_output = 1;
/// CBV, float32, ml/100 g.
pub const IMH_PERFUSION_CBV: imh_perfusion_output = 2;
/// MTT, float32, s.
pub const IMH_PERFUSION_MTT: imh_perfusion_output = 3;
/// Time to peak, float32, s from the first frame.
pub const IMH_PERFUSION_TTP: imh_perfusion_output = 4;
/// Tmax, float32, s.
pub const IMH_PERFUSION_TMAX: imh_perfusion_output = 5;
/// Arrival delay relative to the AIF, float32, s.
pub const IMH_PERFUSION_DELAY: imh_perfusion_output = 6;
/// Core mask, uint8 0/1.
pub const IMH_PERFUSION_CORE: imh_perfusion_output = 7;
/// Hypoperfusion (Tmax > 6 s) mask, uint8 0/1.
pub const IMH_PERFUSION_HYPOPERFUSION: imh_perfusion_output = 8;
/// Brain mask used, uint8 0/1.
pub const IMH_PERFUSION_BRAIN_MASK: imh_perfusion_output = 9;

/// The result of `imh_perfusion_run`: nine volumes and a JSON report. Free with
/// `imh_perfusion_result_free`.
///
/// Thread safety: immutable; any number of threads may read it.
#[allow(non_camel_case_types)]
pub struct imh_perfusion_result {
    method: Method,
    /// By `IMH_PERFUSION_*` − 1; `None` where the method makes no such map.
    volumes: Vec<Option<imh_volume>>,
    report: CString,
    dicom: crate::dicom::DicomParts,
}

/// The perfusion model's output name of each `IMH_PERFUSION_*` volume (− 1); the core mask is
/// written as the `lesions` label map's first segment instead.
const OUTPUT_NAMES: [Option<&str>; 9] = [
    Some("cbf"),
    Some("cbv"),
    Some("mtt"),
    Some("ttp"),
    Some("tmax"),
    Some("delay"),
    None,
    Some("hypoperfusion"),
    Some("brain"),
];

impl imh_perfusion_result {
    /// What writing it as DICOM needs besides its volumes.
    pub(crate) fn dicom_parts(&self) -> &crate::dicom::DicomParts {
        &self.dicom
    }

    /// Its volumes by the perfusion model's output names.
    pub(crate) fn named_volumes(&self) -> impl Iterator<Item = (&str, &AnyVolume)> {
        OUTPUT_NAMES.iter().zip(&self.volumes).filter_map(|(name, v)| Some((*name.as_ref()?, &v.as_ref()?.volume)))
    }
}

unsafe fn read_options(ptr: *const imh_perfusion_options) -> FfiResult<imh_perfusion_options> {
    let defaults = imh_perfusion_options {
        struct_size: size_of::<imh_perfusion_options>() as u32,
        method: 0,
        flags: 0,
        aif_voxel: [0; 3],
        age: 0.0,
        nihss: 0.0,
        filter_sigma_mm: 0.0,
        filter_range_hu: 0.0,
        model: std::ptr::null(),
        registration: None,
        registration_user_data: std::ptr::null_mut(),
        registration_name: std::ptr::null(),
    };
    let minimum = std::mem::offset_of!(imh_perfusion_options, flags);
    // SAFETY: forwarded header contract; the struct holds integers, floats and one borrowed
    // pointer (plain data: copying it copies the address).
    unsafe { read_size_prefixed(ptr, defaults, minimum, "imh_perfusion_options") }
}

/// The model and its options (the registry's names) for `o`.
fn model_and_options(o: &imh_perfusion_options) -> FfiResult<(Arc<dyn Model>, Map<String, Value>)> {
    let invalid = |m: String| FfiError::new(imh_status::InvalidArgument, m);
    let method = match o.method {
        IMH_PERFUSION_METHOD_DEFAULT => imhost_core::perfusion::PerfusionOptions::default().method,
        IMH_PERFUSION_METHOD_SSVD => Method::Ssvd,
        IMH_PERFUSION_METHOD_BSVD => Method::Bsvd,
        IMH_PERFUSION_METHOD_OSVD => Method::Osvd,
        IMH_PERFUSION_METHOD_TIKHONOV => Method::Tikhonov,
        IMH_PERFUSION_METHOD_NLR => Method::Nlr,
        IMH_PERFUSION_METHOD_CNN => Method::Cnn,
        m => return Err(invalid(format!("unknown perfusion method {m}"))),
    };
    let known = IMH_PERFUSION_HAS_AGE
        | IMH_PERFUSION_HAS_NIHSS
        | IMH_PERFUSION_MANUAL_AIF
        | IMH_PERFUSION_NO_FILTER
        | IMH_PERFUSION_NO_MOTION_CORRECTION;
    if o.flags & !known != 0 {
        return Err(invalid(format!("unknown perfusion flags {:#x}", o.flags & !known)));
    }
    let mut options = Map::new();
    if o.flags & IMH_PERFUSION_HAS_AGE != 0 {
        options.insert("age_years".into(), json!(o.age));
    }
    if o.flags & IMH_PERFUSION_HAS_NIHSS != 0 {
        options.insert("nihss".into(), json!(o.nihss));
    }
    if o.flags & IMH_PERFUSION_MANUAL_AIF != 0 {
        for (name, x) in ["aif_i", "aif_j", "aif_k"].into_iter().zip(o.aif_voxel) {
            options.insert(name.into(), json!(x));
        }
    }
    for (name, v) in [("filter_sigma_mm", o.filter_sigma_mm), ("filter_range_hu", o.filter_range_hu)] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(invalid(format!("{name} must be ≥ 0 (0 = default)")));
        }
        if v > 0.0 {
            options.insert(name.into(), json!(v));
        }
    }
    options.insert("bilateral_filter".into(), json!(o.flags & IMH_PERFUSION_NO_FILTER == 0));
    options.insert("motion_correction".into(), json!(o.flags & IMH_PERFUSION_NO_MOTION_CORRECTION == 0));
    // SAFETY: NULL or a live imh_model for the duration of the call (header contract).
    let model = unsafe { o.model.as_ref() };
    let model: Arc<dyn Model> = match (method, model) {
        (Method::Cnn, None) => {
            return Err(invalid("IMH_PERFUSION_METHOD_CNN needs options.model (load one with imh_model_load)".into()));
        }
        (Method::Cnn, Some(m)) => m.model.clone(),
        (_, Some(_)) => return Err(invalid("options.model is only for IMH_PERFUSION_METHOD_CNN".into())),
        (m, None) => {
            let model = Perfusion::classical(m);
            // SAFETY: header contract for the three registration fields.
            Arc::new(
                match unsafe { host_registration(o.registration, o.registration_user_data, o.registration_name) }? {
                    Some(r) => model.with_registration(r),
                    None => model,
                },
            )
        }
    };
    // The registry's checks, now: a wrong option fails before any work.
    model.manifest().resolve_options(&options)?;
    Ok((model, options))
}

/// Label `value` of a label map as a 0/1 mask (`value` 0: every non-zero voxel).
fn mask_of(labels: &Volume<u8>, value: u8) -> Volume<u8> {
    let mut out = labels.clone();
    out.data_mut().mapv_inplace(|x| u8::from(if value == 0 { x != 0 } else { x == value }));
    out
}

/// Run the classical perfusion pipeline (motion estimate, brain mask, bilateral filter, AIF/VOF,
/// deconvolution, read-out) on a borrowed 4-D view in HU with frame times. `options` and
/// `run_options` may be NULL (defaults). On success `*out` receives a result holding the maps,
/// masks and `report.json`; QC problems (no plausible AIF, truncated bolus, motion, too few
/// frames) are flags in the report, not errors. Motion is estimated and flagged; it is
/// corrected where the host supplies `options->registration` (the library links no ITK). The
/// library works on several threads; progress is still only reported on the calling thread.
/// Research use only.
///
/// Thread safety: may be called from any thread, concurrently with other calls.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_perfusion_run(
    context: *const imh_context,
    input: *const imh_view,
    options: *const imh_perfusion_options,
    run_options: *const imh_run_options,
    out: *mut *mut imh_perfusion_result,
) -> imh_status {
    ffi_boundary!("imh_perfusion_run", {
        let context = context_arg(context)?;
        let input = arg_ref!(input, "input");
        let out = arg_out!(out, "out");
        // SAFETY: header contract for both options structs.
        let run_options = unsafe { read_run_options(run_options) }?;
        // SAFETY: as above.
        let (model, options) = model_and_options(&unsafe { read_options(options) }?)?;
        let result = context.scope(|| -> FfiResult<imh_perfusion_result> {
            // SAFETY: the header's imh_view contract holds for the duration of this call.
            let view = unsafe { view_from_c(input) }?;
            let mut r = with_control_relayed(context, &run_options, |control| {
                run_checked(model.as_ref(), &[view.reborrow()], &options, control)
            })??;
            let flags = r.report["qc_flags"].as_array().map_or(0, Vec::len);
            tracing::info!(flags, "perfusion done");
            let method = r.report["method"].as_str().and_then(|m| Method::from_name(m).ok()).unwrap_or(Method::Osvd);
            let manifest = imhost_core::registry::Model::manifest(model.as_ref()).clone();
            let (scores, report_value) = (r.scores.clone(), r.report.clone());
            let report = serde_json::to_string_pretty(&r.report)
                .map_err(|e| FfiError::new(imh_status::Internal, e.to_string()))?;
            let mut take =
                |name: &str| r.volumes.iter().position(|(n, _)| n == name).map(|i| r.volumes.swap_remove(i).1);
            let lesions = match take("lesions") {
                Some(AnyVolume::U8(l)) => l,
                _ => return Err(FfiError::new(imh_status::Internal, "the perfusion model gave no lesion map")),
            };
            let volumes = vec![
                take("cbf"),
                take("cbv"),
                take("mtt"),
                take("ttp"),
                take("tmax"),
                take("delay"),
                Some(AnyVolume::U8(mask_of(&lesions, LABEL_CORE))),
                take("hypoperfusion"),
                take("brain"),
            ];
            let dicom = crate::dicom::DicomParts {
                manifest,
                scores,
                report: report_value,
                extra_volumes: vec![("lesions".into(), AnyVolume::U8(lesions))],
                preview_png: r.preview_png.take(),
            };
            if volumes.iter().enumerate().any(|(n, v)| v.is_none() && !matches!(n, 4 | 5)) {
                return Err(FfiError::new(imh_status::Internal, "the perfusion model left out a map it declares"));
            }
            let volumes = volumes.into_iter().map(|v| v.map(imh_volume::new)).collect();
            let report = CString::new(report).map_err(|e| FfiError::new(imh_status::Internal, e.to_string()))?;
            Ok(imh_perfusion_result { method, volumes, report, dicom })
        })?;
        // SAFETY: `out` was checked by arg_out! and points to storage for one pointer.
        unsafe { out.write(Box::into_raw(Box::new(result))) };
        Ok(())
    })
}

/// Borrow one output volume (`IMH_PERFUSION_*`) of `result` into `*out`. The volume belongs to
/// the result: do not free it; it stays valid until `imh_perfusion_result_free`. Maps keep the
/// input's geometry and are 0 outside the brain mask.
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_perfusion_result_volume(
    result: *const imh_perfusion_result,
    which: imh_perfusion_output,
    out: *mut *const imh_volume,
) -> imh_status {
    ffi_boundary!("imh_perfusion_result_volume", {
        let result = arg_ref!(result, "result");
        let out = arg_out!(out, "out");
        let index = (which as usize).checked_sub(1).filter(|&i| i < result.volumes.len()).ok_or_else(|| {
            FfiError::new(imh_status::InvalidArgument, format!("unknown perfusion output {which} (1 to 9)"))
        })?;
        let Some(volume) = result.volumes[index].as_ref() else {
            return Err(FfiError::new(
                imh_status::Unsupported,
                format!(
                    "the {} method estimates no Tmax or delay (its hypoperfusion mask uses relative TTP)",
                    result.method.name()
                ),
            ));
        };
        // SAFETY: checked by arg_out!; points to storage for one pointer.
        unsafe { out.write(volume as *const imh_volume) };
        Ok(())
    })
}

/// The report (`report.json`: volumes, criteria, AIF/VOF, QC flags, units, constants, timings)
/// as a NUL-terminated UTF-8 string owned by `result` (valid until it is freed). NULL when
/// `result` is NULL.
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_perfusion_result_report_json(result: *const imh_perfusion_result) -> *const c_char {
    ffi_boundary!("imh_perfusion_result_report_json", default = std::ptr::null(), {
        // SAFETY: NULL or a live result (header contract).
        unsafe { result.as_ref() }.map_or(std::ptr::null(), |r| r.report.as_ptr())
    })
}

/// Free a result and every volume it holds. NULL is ignored.
///
/// Thread safety: not while another thread uses the same result.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_perfusion_result_free(result: *mut imh_perfusion_result) {
    ffi_boundary!("imh_perfusion_result_free", default = (), {
        if !result.is_null() {
            // SAFETY: a non-NULL result came from imh_perfusion_run and is freed once (header).
            drop(unsafe { Box::from_raw(result) });
        }
    })
}
