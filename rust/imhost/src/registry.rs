//! `imh_registry`: every model — built in (MIP, perfusion methods), the perfusion CNN and
//! TorchScript package folders, native plugins — listed, described and run through the same
//! calls. `imh_model_result`: what one run produced.

use std::ffi::{CStr, CString, c_char};

use imhost_core::AnyVolumeView;
use imhost_core::registry::Registry;
use imhost_registry::{RegistryOptions, open};

use crate::context::{context_arg, imh_context};
use crate::ops::{imh_run_options, read_run_options, read_size_prefixed, with_control_relayed};
use crate::status::{FfiError, FfiResult, arg_out, arg_ref, ffi_boundary, imh_status};
use crate::view::{imh_view, view_from_c};
use crate::volume::imh_volume;

/// Options of `imh_registry_open`. Size-prefixed, zero/NULL meaning default:
/// `imh_registry_options o = {sizeof o};`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct imh_registry_options {
    /// `sizeof(imh_registry_options)` as the caller compiled it.
    pub struct_size: u32,
    /// Also search `IMHOST_PLUGIN_PATH` and the per-user folder
    /// (`~/.local/share/imhost/plugins`).
    pub standard_locations: bool,
    /// Run every native plugin in a child worker process (else only those the user's
    /// `~/.config/imhost/plugins.json` marks `"isolate": true`).
    pub isolate_all: bool,
    /// Plugin libraries, model package folders or folders of them (`n_paths` strings), or NULL.
    pub paths: *const *const c_char,
    /// Number of `paths`.
    pub n_paths: usize,
    /// Device of learned models (`"cpu"`, `"cuda"`, …) or NULL (`IMHOST_DEVICE`, then auto).
    pub device: *const c_char,
    /// Host-supplied rigid registration for the perfusion models' motion correction (see
    /// `imh_rigid_registration_fn`; the same contract as `imh_perfusion_options.registration`);
    /// NULL: they estimate and flag motion. Added in 0.2.
    pub registration: crate::perfusion::imh_rigid_registration_fn,
    /// Passed back to `registration` unchanged.
    pub registration_user_data: *mut std::ffi::c_void,
    /// What `registration` is, for reports; NULL: "host registration". Added in 0.2.
    pub registration_name: *const c_char,
}

/// The models a host can run. Free with `imh_registry_free`.
///
/// Thread safety: may be shared by threads; runs of one model are serialised.
#[allow(non_camel_case_types)]
pub struct imh_registry {
    registry: Registry,
    list: CString,
    manifests: Vec<(String, CString)>,
}

/// What a model run produced: volumes (maps, label maps), scores and a JSON summary.
#[allow(non_camel_case_types)]
pub struct imh_model_result {
    names: Vec<CString>,
    volumes: Vec<imh_volume>,
    scores: Vec<(String, f64)>,
    json: CString,
    dicom: crate::dicom::DicomParts,
}

impl imh_model_result {
    /// What writing it as DICOM needs besides its volumes.
    pub(crate) fn dicom_parts(&self) -> &crate::dicom::DicomParts {
        &self.dicom
    }

    /// Its volumes by output name.
    pub(crate) fn named_volumes(&self) -> impl Iterator<Item = (&str, &imhost_core::AnyVolume)> {
        self.names.iter().zip(&self.volumes).map(|(n, v)| (n.to_str().unwrap_or_default(), &v.volume))
    }
}

fn c_string(s: String) -> FfiResult<CString> {
    CString::new(s).map_err(|e| FfiError::new(imh_status::Internal, e.to_string()))
}

/// # Safety
/// `p` is NULL or NUL-terminated.
unsafe fn str_arg<'a>(p: *const c_char, name: &str) -> FfiResult<&'a str> {
    if p.is_null() {
        return Err(FfiError::new(imh_status::NullArgument, format!("{name} is NULL")));
    }
    // SAFETY: caller contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| FfiError::new(imh_status::InvalidArgument, format!("{name} is not UTF-8")))
}

/// Build the registry: built-in models, then `options->paths`, then (with
/// `standard_locations`) `IMHOST_PLUGIN_PATH` and the per-user folder. A plugin or package that
/// fails to load (wrong ABI major, missing entry symbol, invalid manifest, duplicate id,
/// writable by others) does not fail the call: it is listed under `"problems"` in
/// `imh_registry_list_json` and the others load. `options` may be NULL.
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_registry_open(
    context: *const imh_context,
    options: *const imh_registry_options,
    out: *mut *mut imh_registry,
) -> imh_status {
    ffi_boundary!("imh_registry_open", {
        let context = context_arg(context)?;
        let out = arg_out!(out, "out");
        let defaults = imh_registry_options {
            struct_size: size_of::<imh_registry_options>() as u32,
            standard_locations: false,
            isolate_all: false,
            paths: std::ptr::null(),
            n_paths: 0,
            device: std::ptr::null(),
            registration: None,
            registration_user_data: std::ptr::null_mut(),
            registration_name: std::ptr::null(),
        };
        let minimum = std::mem::offset_of!(imh_registry_options, paths);
        // SAFETY: header contract; integers, bools and borrowed pointers.
        let o = unsafe { read_size_prefixed(options, defaults, minimum, "imh_registry_options") }?;
        let mut paths = Vec::new();
        if o.n_paths > 0 && o.paths.is_null() {
            return Err(FfiError::new(imh_status::NullArgument, "paths is NULL but n_paths > 0"));
        }
        for i in 0..o.n_paths {
            // SAFETY: `paths` holds n_paths string pointers (header contract).
            let p = unsafe { *o.paths.add(i) };
            // SAFETY: each is NUL-terminated.
            paths.push(std::path::PathBuf::from(unsafe { str_arg(p, "paths[i]") }?));
        }
        let device = if o.device.is_null() {
            None
        } else {
            // SAFETY: NUL-terminated (header contract).
            Some(unsafe { str_arg(o.device, "device") }?.to_string())
        };
        // SAFETY: header contract (a NUL-terminated name, a thread-safe callback).
        let registration = unsafe {
            crate::perfusion::host_registration(o.registration, o.registration_user_data, o.registration_name)
        }?;
        let registry = context.scope(|| {
            open(&RegistryOptions {
                paths,
                standard_locations: o.standard_locations,
                isolate_all: o.isolate_all,
                device,
                registration,
                // libimhost.so does not link LibTorch: learned models run in imhost-model-worker.
                in_process: None,
            })
        });
        let list = c_string(serde_json::to_string_pretty(&registry.list_json()).expect("JSON"))?;
        let manifests = registry
            .models()
            .map(|m| Ok((m.manifest().id.clone(), c_string(m.manifest().to_json())?)))
            .collect::<FfiResult<_>>()?;
        // SAFETY: checked by arg_out!.
        unsafe { out.write(Box::into_raw(Box::new(imh_registry { registry, list, manifests }))) };
        Ok(())
    })
}

/// `{"models": [manifest, …], "problems": [{"path", "message"}, …]}` as a NUL-terminated UTF-8
/// string owned by `registry` (valid until it is freed). NULL when `registry` is NULL.
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_registry_list_json(registry: *const imh_registry) -> *const c_char {
    ffi_boundary!("imh_registry_list_json", default = std::ptr::null(), {
        // SAFETY: NULL or a live registry (header contract).
        unsafe { registry.as_ref() }.map_or(std::ptr::null(), |r| r.list.as_ptr())
    })
}

/// The manifest of model `id` (JSON, owned by `registry`) into `*out`. `IMH_STATUS_INVALID_ARGUMENT`
/// for an unknown id (the message lists the known ones).
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_registry_manifest_json(
    registry: *const imh_registry,
    id: *const c_char,
    out: *mut *const c_char,
) -> imh_status {
    ffi_boundary!("imh_registry_manifest_json", {
        let registry = arg_ref!(registry, "registry");
        let out = arg_out!(out, "out");
        // SAFETY: NUL-terminated (header contract).
        let id = unsafe { str_arg(id, "id") }?;
        let (_, json) = registry.manifests.iter().find(|(m, _)| m == id).ok_or_else(|| {
            FfiError::new(
                imh_status::InvalidArgument,
                format!("no model '{id}' (known: {})", registry.registry.ids().join(", ")),
            )
        })?;
        // SAFETY: checked by arg_out!.
        unsafe { out.write(json.as_ptr()) };
        Ok(())
    })
}

/// Run model `id` on `n_inputs` borrowed views (in the manifest's order; read in place, not
/// copied, when the pixel type is one the model declares) with `options_json` (a JSON object
/// or NULL: defaults; checked against the manifest's schema). Progress and cancellation through
/// `run_options` (NULL: none). On success `*out` receives the result. A plugin that fails,
/// panics or returns outputs its manifest does not declare gives an error status and message;
/// an isolated plugin that crashes gives `IMH_STATUS_MODEL`.
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_registry_run(
    context: *const imh_context,
    registry: *const imh_registry,
    id: *const c_char,
    inputs: *const imh_view,
    n_inputs: usize,
    options_json: *const c_char,
    run_options: *const imh_run_options,
    out: *mut *mut imh_model_result,
) -> imh_status {
    ffi_boundary!("imh_registry_run", {
        let context = context_arg(context)?;
        let registry = arg_ref!(registry, "registry");
        let out = arg_out!(out, "out");
        // SAFETY: NUL-terminated (header contract).
        let id = unsafe { str_arg(id, "id") }?.to_string();
        if n_inputs > 0 && inputs.is_null() {
            return Err(FfiError::new(imh_status::NullArgument, "inputs is NULL but n_inputs > 0"));
        }
        let options = if options_json.is_null() {
            serde_json::Map::new()
        } else {
            // SAFETY: NUL-terminated (header contract).
            let text = unsafe { str_arg(options_json, "options_json") }?;
            match serde_json::from_str::<serde_json::Value>(text) {
                Ok(serde_json::Value::Object(m)) => m,
                _ => return Err(FfiError::new(imh_status::InvalidArgument, "options_json is not a JSON object")),
            }
        };
        // SAFETY: header contract.
        let run_options = unsafe { read_run_options(run_options) }?;
        let result = context.scope(|| -> FfiResult<imh_model_result> {
            let views: Vec<AnyVolumeView<'_>> = (0..n_inputs)
                // SAFETY: `inputs` holds n_inputs views valid for the call (header contract).
                .map(|i| unsafe { view_from_c(&*inputs.add(i)) })
                .collect::<FfiResult<_>>()?;
            let output = with_control_relayed(context, &run_options, |control| {
                registry.registry.run(&id, &views, &options, control)
            })??;
            let manifest = registry.registry.get(&id).map(|m| m.manifest()).expect("it just ran");
            let json = c_string(output.summary_json(manifest).to_string())?;
            let names = output.volumes.iter().map(|(n, _)| c_string(n.clone())).collect::<FfiResult<_>>()?;
            let scores = output.scores.clone();
            let dicom = crate::dicom::DicomParts {
                manifest: manifest.clone(),
                scores: output.scores.clone(),
                report: output.report.clone(),
                extra_volumes: vec![],
                preview_png: output.preview_png.clone(),
            };
            let volumes = output.volumes.into_iter().map(|(_, volume)| imh_volume::new(volume)).collect();
            Ok(imh_model_result { names, volumes, scores, json, dicom })
        })?;
        // SAFETY: checked by arg_out!.
        unsafe { out.write(Box::into_raw(Box::new(result))) };
        Ok(())
    })
}

/// Number of volumes in `result` (0 for NULL).
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_model_result_volume_count(result: *const imh_model_result) -> usize {
    ffi_boundary!("imh_model_result_volume_count", default = 0, {
        // SAFETY: NULL or a live result.
        unsafe { result.as_ref() }.map_or(0, |r| r.volumes.len())
    })
}

/// Borrow volume `index` of `result` and its output name (both owned by `result`, valid until
/// it is freed). `name` may be NULL.
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_model_result_volume(
    result: *const imh_model_result,
    index: usize,
    name: *mut *const c_char,
    out: *mut *const imh_volume,
) -> imh_status {
    ffi_boundary!("imh_model_result_volume", {
        let result = arg_ref!(result, "result");
        let out = arg_out!(out, "out");
        let volume = result.volumes.get(index).ok_or_else(|| {
            FfiError::new(imh_status::InvalidArgument, format!("index {index} >= {} volumes", result.volumes.len()))
        })?;
        if !name.is_null() {
            // SAFETY: a non-NULL out-pointer (header contract).
            unsafe { name.write(result.names[index].as_ptr()) };
        }
        // SAFETY: checked by arg_out!.
        unsafe { out.write(volume) };
        Ok(())
    })
}

/// The score output `name` of `result` into `*out`. `IMH_STATUS_INVALID_ARGUMENT` when the
/// model did not produce it (e.g. withheld under a QC flag).
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_model_result_score(
    result: *const imh_model_result,
    name: *const c_char,
    out: *mut f64,
) -> imh_status {
    ffi_boundary!("imh_model_result_score", {
        let result = arg_ref!(result, "result");
        let out = arg_out!(out, "out");
        // SAFETY: NUL-terminated (header contract).
        let name = unsafe { str_arg(name, "name") }?;
        let value =
            result.scores.iter().find(|(n, _)| n == name).map(|(_, v)| *v).ok_or_else(|| {
                FfiError::new(imh_status::InvalidArgument, format!("the result has no score '{name}'"))
            })?;
        // SAFETY: checked by arg_out!.
        unsafe { out.write(value) };
        Ok(())
    })
}

/// `{"schema": "imhost-model-result/1", "research_use_only", "model": {id, version},
/// "scores": {...}, "volumes": [{name, dtype, shape}], "outputs": [{name, kind, unit, unit_ucum,
/// quantity, labels: [{value, name, color, category, property}], description}], "report": ...}`
/// owned by `result` (`outputs`: what the model's manifest declares of each output present;
/// codes as `{scheme, value, meaning}`, SNOMED CT as scheme `SCT`). NULL when `result` is NULL.
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_model_result_json(result: *const imh_model_result) -> *const c_char {
    ffi_boundary!("imh_model_result_json", default = std::ptr::null(), {
        // SAFETY: NULL or a live result.
        unsafe { result.as_ref() }.map_or(std::ptr::null(), |r| r.json.as_ptr())
    })
}

/// Free a result and its volumes. NULL is ignored.
///
/// Thread safety: not while another thread uses the same result.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_model_result_free(result: *mut imh_model_result) {
    ffi_boundary!("imh_model_result_free", default = (), {
        if !result.is_null() {
            // SAFETY: from imh_registry_run, freed once (header).
            drop(unsafe { Box::from_raw(result) });
        }
    })
}

/// Free a registry (plugins are unloaded when no result or run needs them). NULL is ignored.
///
/// Thread safety: not while another thread uses the same registry.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_registry_free(registry: *mut imh_registry) {
    ffi_boundary!("imh_registry_free", default = (), {
        if !registry.is_null() {
            // SAFETY: from imh_registry_open, freed once (header).
            drop(unsafe { Box::from_raw(registry) });
        }
    })
}
